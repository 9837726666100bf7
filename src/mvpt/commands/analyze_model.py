"""`mvpt analyze manipulate|attributes|tsne|conditioning|qualitative`: the analyses of appendix C
that embed media or a store split with a trained run.

Registered by :mod:`mvpt.commands.analyze`; each ``add_*_parser(actions, common)`` adds one
subcommand, where ``common(parser, default_out=...)`` adds --split, --seed, --out and --json.
The handlers call the library functions of :mod:`mvpt.analysis` and print their markdown.
"""

from __future__ import annotations

from mvpt.analysis.attributes import DEFAULT_MIN_SCORE, DEFAULT_TOP
from mvpt.analysis.conditioning import DEFAULT_STRENGTHS
from mvpt.analysis.manipulate import ATTRIBUTES, DEFAULT_RATES
from mvpt.analysis.qualitative import DIRECTIONS
from mvpt.analysis.tsne import DEFAULT_KNN, DEFAULT_PERPLEXITY
from mvpt.commands.common import emit_json, positive_float, positive_int
from mvpt.errors import UsageError


def add_parsers(actions, common) -> None:
    """Every subcommand of this module, in --help order."""
    for add in (add_manipulate_parser, add_attributes_parser, add_tsne_parser,
                add_conditioning_parser, add_qualitative_parser):
        add(actions, common)


def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} must be comma-separated numbers, got {text!r}") from None


def _print_result(args, result: dict, markdown) -> int:
    if not emit_json(args, result):
        print(markdown(result))
    return 0


# ------------------------------------------------------------------------ manipulate
def add_manipulate_parser(actions, common) -> None:
    """`mvpt analyze manipulate RUN STORE --attribute NAME`."""
    p = actions.add_parser(
        "manipulate", help="retrieval accuracy against a media change rate r",
        description="RUN STORE: re-extract each item's query modality from its media with an "
        "attribute changed by r and plot track-level recall against r.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--attribute", choices=ATTRIBUTES, required=True)
    p.add_argument("--rates", default=",".join(f"{r:g}" for r in DEFAULT_RATES),
                   help="comma-separated change rates (default 0.5 to 1.5 by 0.125)")
    p.add_argument("--media-root", default=None,
                   help="folder holding the media (default: the paths the store recorded)")
    p.add_argument("--max-items", type=int, default=None,
                   help="use only the first N items of the split")
    p.add_argument("--which", choices=("best", "last"), default="best")
    p.set_defaults(func=run_manipulate)
    common(p, default_out="analysis")


def run_manipulate(args) -> int:
    from mvpt.analysis.manipulate import curve_markdown, manipulation_curve, write_curve_report

    rates = _numbers(args.rates, "--rates")
    result = manipulation_curve(args.run, args.store, attribute=args.attribute, rates=rates,
                                split=args.split, which=args.which, media_root=args.media_root,
                                max_items=args.max_items)
    write_curve_report(result, args.out)
    return _print_result(args, result, curve_markdown)


# ------------------------------------------------------------------------ attributes
def add_attributes_parser(actions, common) -> None:
    """`mvpt analyze attributes RUN STORE IMAGES_DIR`."""
    p = actions.add_parser(
        "attributes", help="attribute-versus-genre matrix from pictures grouped by class",
        description="RUN STORE IMAGES_DIR: every picture of IMAGES_DIR/CLASS/ (or every box of "
        "--boxes) is a still-video query; the genres of its top-K music tracks of the store "
        "split are counted per class (figure 4, appendix C.3, figures 13-15). Rows sum to 1. "
        "--split all reads every split.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("store", metavar="STORE")
    p.add_argument("images", metavar="IMAGES_DIR")
    p.add_argument("--genres", default=None, help="CSV/parquet id,genre, or a synthetic data "
                   "folder (factors.json) (default: the store's genre annotation)")
    p.add_argument("--top", type=positive_int, default=DEFAULT_TOP, metavar="K",
                   help=f"tracks retrieved per picture (default {DEFAULT_TOP})")
    p.add_argument("--boxes", default=None, metavar="CSV", help="Open Images box annotations: "
                   "crop every box of a picture in IMAGES_DIR (<ImageID>.jpg) as a query")
    p.add_argument("--class-names", default=None, metavar="CSV",
                   help="LabelName,DisplayName (Open Images class descriptions) for --boxes")
    p.add_argument("--classes", default=None,
                   help="comma-separated classes to keep (default all)")
    p.add_argument("--balance", type=positive_int, default=None, metavar="N",
                   help="draw N pictures per class (seeded); classes with fewer are left out")
    p.add_argument("--scores", default=None, metavar="CSV", help="classifier scores "
                   "path,class,score: keep a picture only when its class scores >= --min-score")
    p.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                   help=f"with --scores (default {DEFAULT_MIN_SCORE})")
    p.add_argument("--min-share", type=float, default=None, metavar="S",
                   help="show only classes whose per-genre shares sum to >= S (the appendix's "
                   "20%% rule for scenes: 0.2; default: show all)")
    p.add_argument("--clips", type=positive_int, default=None,
                   help="clips of a still query (default: median track window of the split)")
    p.add_argument("--name", default="attributes",
                   help="output file stem (default attributes)")
    p.add_argument("--which", choices=("best", "last"), default="best")
    common(p, default_out="analysis")
    p.set_defaults(func=run_attributes)


def run_attributes(args) -> int:
    from mvpt.analysis.attributes import (
        attribute_genre_matrix,
        summary_markdown,
        write_attributes_report,
    )

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    result = attribute_genre_matrix(
        args.run, args.store, args.images, genres=args.genres, split=args.split, top=args.top,
        boxes=args.boxes, class_names=args.class_names, classes=classes, scores=args.scores,
        min_score=args.min_score, min_share=args.min_share, balance=args.balance,
        seed=args.seed, which=args.which, clips=args.clips)
    write_attributes_report(result, args.out, name=args.name)
    return _print_result(args, result, lambda r: summary_markdown(r, name=args.name))


# ------------------------------------------------------------------------------ tsne
def add_tsne_parser(actions, common) -> None:
    """`mvpt analyze tsne RUN STORE`."""
    p = actions.add_parser(
        "tsne", help="t-SNE of track-level music and video embeddings coloured by genre",
        description="RUN STORE: 2-D t-SNE of the track-level embeddings of a store split, one "
        "panel per modality, coloured by genre (appendix C.5, figure 16), with a k-NN genre "
        "agreement computed on the embeddings beside its chance rate. --split all reads every "
        "split.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--genres", default=None, help="CSV/parquet id,genre, or a synthetic data "
                   "folder (factors.json) (default: the store's genre annotation)")
    p.add_argument("--modality", choices=("music", "video", "both"), default="both")
    p.add_argument("--perplexity", type=positive_float, default=DEFAULT_PERPLEXITY,
                   help=f"t-SNE perplexity (default {DEFAULT_PERPLEXITY:g}; clamped to "
                   "(points - 1) / 3)")
    p.add_argument("--max-points", type=positive_int, default=None, metavar="N",
                   help="a random sample (--seed) of N tracks (default all)")
    p.add_argument("--knn", type=positive_int, default=DEFAULT_KNN, metavar="K",
                   help=f"neighbours of the genre agreement (default {DEFAULT_KNN})")
    p.add_argument("--which", choices=("best", "last"), default="best")
    common(p, default_out="analysis")
    p.set_defaults(func=run_tsne)


def run_tsne(args) -> int:
    from mvpt.analysis.tsne import summary_markdown, tsne_analysis, write_tsne_report

    result = tsne_analysis(args.run, args.store, genres=args.genres, split=args.split,
                           modality=args.modality, perplexity=args.perplexity,
                           max_points=args.max_points, knn=args.knn, seed=args.seed,
                           which=args.which)
    write_tsne_report(result, args.out)
    return _print_result(args, result, summary_markdown)


# ---------------------------------------------------------------------- conditioning
def add_conditioning_parser(actions, common) -> None:
    """`mvpt analyze conditioning RUN SONGS_DIR VIDEOS... --images DIR --instrument NAME`."""
    p = actions.add_parser(
        "conditioning", help="instrument conditioning: songs with and without an instrument",
        description="RUN SONGS_DIR VIDEOS...: for every MedleyDB-layout song with stems of the "
        "instrument, score each video against the song with all stems and without the "
        "instrument's, the video conditioned on pictures of the instrument at each strength "
        "(appendix C.1).")
    p.add_argument("run", metavar="RUN")
    p.add_argument("songs_dir", metavar="SONGS_DIR")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--images", required=True, action="append", metavar="DIR",
                   help="pictures of the instrument (folders or files; repeatable)")
    p.add_argument("--instrument", required=True, metavar="NAME",
                   help="MedleyDB instrument label(s), comma-separated (e.g. guitar)")
    p.add_argument("--strengths", default=",".join(f"{a:g}" for a in DEFAULT_STRENGTHS),
                   help="comma-separated conditioning strengths (default 0,0.25,0.5,1,2)")
    p.add_argument("--which", choices=("best", "last"), default="best")
    common(p, default_out="analysis")
    p.set_defaults(func=run_conditioning)


def run_conditioning(args) -> int:
    from mvpt.analysis.conditioning import (
        conditioning_analysis,
        summary_markdown,
        write_conditioning_report,
    )

    strengths = _numbers(args.strengths, "--strengths")
    result = conditioning_analysis(args.run, args.songs_dir, args.videos, images=args.images,
                                   instrument=args.instrument, strengths=strengths,
                                   out_dir=args.out, which=args.which)
    write_conditioning_report(result, args.out)
    return _print_result(args, result, summary_markdown)


# ----------------------------------------------------------------------- qualitative
def add_qualitative_parser(actions, common) -> None:
    """`mvpt analyze qualitative RUN STORE [--queries ID,... | --random N] [--direction ...]`."""
    p = actions.add_parser(
        "qualitative", help="previews of ground truth, same-genre pick and model pick",
        description="RUN STORE: for each query, previews of the ground truth, the same-genre "
        "baseline's pick and the model's top pick, with tempo, genre, loudness and YAMNet "
        "instrument and vocal tags beside each (appendix C.4).")
    p.add_argument("run", metavar="RUN")
    p.add_argument("store", metavar="STORE")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--queries", default=None, metavar="ID,...",
                       help="comma-separated track ids of the split")
    which.add_argument("--random", type=int, default=None, metavar="N",
                       help="N random queries of the split (default 3, seeded by --seed)")
    p.add_argument("--direction", choices=(*DIRECTIONS, "both"), default="both")
    p.add_argument("--genres", default=None, help="CSV/parquet with columns id,genre (default: "
                   "the store's genre annotation)")
    p.add_argument("--no-previews", dest="previews", action="store_false",
                   help="skip writing the preview videos")
    p.add_argument("--which", choices=("best", "last"), default="best")
    common(p, default_out="analysis")
    p.set_defaults(func=run_qualitative)


def run_qualitative(args) -> int:
    from mvpt.analysis.qualitative import (
        qualitative_analysis,
        summary_markdown,
        write_qualitative_report,
    )

    if args.random is not None and args.random < 1:
        raise UsageError(f"--random must be >= 1, got {args.random}")
    queries = [q.strip() for q in args.queries.split(",") if q.strip()] if args.queries else None
    result = qualitative_analysis(args.run, args.store, queries=queries, random_n=args.random,
                                  direction=args.direction, split=args.split, seed=args.seed,
                                  which=args.which, genres=args.genres, out_dir=args.out,
                                  previews=args.previews)
    write_qualitative_report(result, args.out)
    return _print_result(args, result, summary_markdown)

"""`mvpt analyze ANALYSIS`: the analyses of appendix C, every one registered here (shortcut,
same-genre and all in this module; those that embed media with a run in
:mod:`mvpt.commands.analyze_model`). The analyses themselves live in :mod:`mvpt.analysis`.

Each writes ``NAME.json``, ``NAME.md`` and ``NAME.png`` into ``--out`` and prints the markdown.
"""

from __future__ import annotations

from mvpt.commands import analyze_model
from mvpt.commands.common import add_json_option, emit_json, positive_float, positive_int
from mvpt.settings import SEGMENT_S


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="appendix-C analyses (length shortcut, same-genre baseline, manipulations)",
                       description="Analyses of appendix C; each writes JSON, markdown and PNG.")
    actions = p.add_subparsers(dest="action", metavar="ANALYSIS", required=True)
    _shortcut_parser(actions)
    _same_genre_parser(actions)
    analyze_model.add_parsers(actions, _common)
    _all_parser(actions)


def _common(p, *, default_out: str) -> None:
    p.add_argument("--split", default="test", help="store split (default test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    add_json_option(p)


def _shortcut_parser(actions) -> None:
    p = actions.add_parser(
        "shortcut", help="track-level metrics with and without the same-length restriction",
        description="RUN... STORE: every run evaluated at track level over all candidates and "
        "over same-length candidates only (appendix C.6, table 4), beside chance.")
    p.add_argument("paths", nargs="+", metavar="RUN... STORE")
    p.add_argument("--names", default=None, help="comma-separated row names (default folder names)")
    p.add_argument("--pool", type=positive_int, default=None, metavar="N")
    p.add_argument("--which", choices=("best", "last"), default="best")
    _common(p, default_out="analysis")
    p.set_defaults(func=run_shortcut)


def _same_genre_parser(actions) -> None:
    p = actions.add_parser(
        "same-genre", help="expected metrics of the same-genre baseline (closed form + simulation)",
        description="STORE: rank same-genre candidates first in random order (appendix C.3).")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--genres", default=None, help="CSV/parquet with columns id,genre (default: "
                   "the store's genre annotations)")
    p.add_argument("--segment-seconds", type=positive_float, default=SEGMENT_S,
                   help="segment length in seconds (default %(default)g)")
    p.add_argument("--trials", type=positive_int, default=100, help="simulation draws (default 100)")
    _common(p, default_out="analysis")
    p.set_defaults(func=run_same_genre)


def run_shortcut(args) -> int:
    from mvpt.analysis.shortcut import (
        shortcut_control,
        summary_markdown,
        write_shortcut_report,
    )
    from mvpt.errors import UsageError

    if len(args.paths) < 2:
        raise UsageError("give at least one RUN and then the STORE")
    *runs, store = args.paths
    names = args.names.split(",") if args.names else None
    result = shortcut_control(runs, store, names=names, split=args.split, pool=args.pool,
                              seed=args.seed, which=args.which)
    write_shortcut_report(result, args.out)
    if not emit_json(args, result):
        print(summary_markdown(result))
    return 0


def run_same_genre(args) -> int:
    from mvpt.analysis.same_genre import (
        evaluate_same_genre,
        summary_markdown,
        write_same_genre_report,
    )

    results = evaluate_same_genre(args.store, genres=args.genres or args.store, split=args.split,
                                  segment_s=args.segment_seconds, n_trials=args.trials,
                                  seed=args.seed)
    write_same_genre_report(results, args.out)
    if not emit_json(args, {"results": results}):
        print(summary_markdown(results))
    return 0


def _all_parser(actions) -> None:
    p = actions.add_parser(
        "all", help="every analysis the inputs allow, and one HTML report page",
        description="RUN STORE: run every analysis of appendix C that the inputs allow into "
        "--out (each writes JSON, markdown and PNG) and write report.html with every figure and "
        "table; analyses whose inputs are missing are listed as skipped, with the reason.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--baseline", action="append", default=None, metavar="RUN",
                   help="a baseline run for the length-shortcut table (repeatable; default: the "
                   "runs in folders beside RUN)")
    p.add_argument("--genres", default=None, help="CSV/parquet id,genre, or a synthetic data "
                   "folder (default: the store's genre annotation)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="pictures in one folder per attribute class (attribute matrix)")
    p.add_argument("--songs", default=None, metavar="DIR",
                   help="multitrack songs in MedleyDB's layout (conditioning study)")
    p.add_argument("--instrument", default=None, help="the conditioning study's instrument")
    p.add_argument("--instrument-images", default=None, metavar="DIR",
                   help="pictures of the instrument (conditioning study)")
    p.add_argument("--videos", nargs="+", default=[], metavar="VIDEO",
                   help="query videos of the conditioning study")
    p.add_argument("--study-key", default=None, metavar="KEY.json")
    p.add_argument("--study-responses", nargs="+", default=[], metavar="FILE")
    p.add_argument("--quick", action="store_true",
                   help="small settings: fewer rates, fewer simulation draws, fewer points")
    p.add_argument("--max-items", type=positive_int, default=None, metavar="N",
                   help="manipulation curves: only the first N items of the split")
    p.add_argument("--only", default=None, help="comma-separated analyses to run (default all)")
    _common(p, default_out="analysis")
    p.set_defaults(func=run_all_command)


def run_all_command(args) -> int:
    import sys
    from pathlib import Path

    from mvpt.analysis.report import Inputs, find_baselines, run_all

    def path(value):
        return None if value is None else Path(value)

    run = Path(args.run)
    baselines = ([Path(b) for b in args.baseline] if args.baseline is not None
                 else find_baselines(run))
    inputs = Inputs(run=run, store=Path(args.store), out=Path(args.out), baselines=baselines,
                    genres=args.genres, images=path(args.images), songs=path(args.songs),
                    instrument=args.instrument, instrument_images=path(args.instrument_images),
                    videos=[Path(v) for v in args.videos], study_key=path(args.study_key),
                    study_responses=[Path(r) for r in args.study_responses], split=args.split,
                    seed=args.seed, quick=args.quick, max_items=args.max_items)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    def say(name):
        print(f"analyze all: {name} ...", file=sys.stderr, flush=True)

    report = run_all(inputs, only=only, progress=say)
    if not emit_json(args, report):
        for entry in report["analyses"]:
            reason = f" ({entry['reason']})" if entry.get("reason") else ""
            print(f"  {entry['name']:<22} {entry['status']}{reason}")
        print(f"report: {Path(args.out) / 'report.html'}")
    failed = [e["name"] for e in report["analyses"] if e["status"] == "failed"]
    return 1 if failed else 0

"""`mvpt index RUN MEDIA... --out INDEX`: a music (or video) library -> a searchable index."""

from __future__ import annotations

import sys

from mvpt.commands.common import add_json_option, emit_json, positive_float
from mvpt.commands.extract import add_engine_options, engine_from_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "index",
        help="index a music (or video) library with a trained run",
        description="Extract, window and encode media with a trained run and add them to a FAISS "
        "index. Re-running with more media adds only the new files; a killed run resumes. "
        "Music (default): the audio of audio files and videos alike, searched by video queries; "
        "--modality video: videos, searched by music queries. Also: --remove ID... and --rebuild.",
    )
    p.add_argument("run", nargs="?", metavar="RUN", help="run folder (from `mvpt train`)")
    p.add_argument("media", nargs="*", metavar="MEDIA",
                   help="media files, folders, or manifest CSVs (id,path[,split][,start_s,end_s])")
    p.add_argument("--out", required=True, metavar="INDEX", help="index folder")
    p.add_argument("--modality", choices=("music", "video"), default="music",
                   help="what the library holds (default music)")
    p.add_argument("--window-seconds", type=positive_float, default=None,
                   help="window length in seconds (default: the run's longest input, K x t "
                   "= 30 s by default; at most K clips)")
    p.add_argument("--stride-seconds", type=positive_float, default=None,
                   help="seconds between window starts (default a third of the window)")
    p.add_argument("--kind", choices=("exact", "hnsw", "ivf"), default=None,
                   help="search structure: exact (default), or approximate hnsw / ivf for "
                   "large libraries")
    p.add_argument("--which", choices=("best", "last"), default="best",
                   help="which checkpoint of the run (default best)")
    p.add_argument("--remove", nargs="+", metavar="ID", default=None,
                   help="remove these item ids from the index (no RUN or MEDIA needed)")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild the FAISS index from its own vectors as --kind (no RUN or MEDIA)")
    p.add_argument("--decode-workers", type=int, default=None,
                   help="processes decoding ahead of the encoders (default 2; 0: decode "
                   "in-process; with 2 or more each decodes on one thread)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where the run's model and the encoders run (default auto: a GPU when "
                   "there is one)")
    add_engine_options(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mvpt.index import build_index, rebuild_index, remove_items
    from mvpt.errors import UsageError

    if args.remove:
        removed = remove_items(args.out, args.remove)
        return _report(args, {"index": args.out, "removed_items": args.remove,
                              "removed_windows": removed},
                       f"index: removed {len(args.remove)} item(s), {removed} windows")
    if args.rebuild:
        manifest = rebuild_index(args.out, kind=args.kind)
        return _report(args, manifest, f"index: rebuilt {args.out} as {manifest['search']['kind']} "
                                       f"({manifest['vectors']} windows)")
    if not args.run or not args.media:
        raise UsageError("give a RUN and at least one MEDIA file or folder to index "
                         "(or --remove ID... / --rebuild)")
    from mvpt.encoders.base import torch_device

    torch_device(args.device, encoder="mvpt index")  # a missing GPU: refused before --out is made
    summary = build_index(
        args.run, args.media, args.out, modality=args.modality, window_s=args.window_seconds,
        stride_s=args.stride_seconds, kind=args.kind, which=args.which,
        progress=not args.no_progress, decode_workers=args.decode_workers,
        engine=engine_from_args(args), device=args.device)
    for failure in summary.extract.get("failures", []):
        print(f"failed: {failure['error']}", file=sys.stderr)
    return _report(args, summary.to_dict(),
                   f"index: added {len(summary.added_items)} item(s) ({summary.added_windows} "
                   f"windows), {summary.already_indexed} already indexed; {args.out} holds "
                   f"{summary.items} items, {summary.windows} windows ({summary.kind})")


def _report(args, obj: dict, line: str) -> int:
    to_stdout = emit_json(args, obj)
    print(line, file=sys.stderr if to_stdout else sys.stdout)
    return 0

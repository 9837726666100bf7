"""`mvpt recommend INDEX QUERY`: the best tracks (and where in them) for a video, or videos for
a piece of music."""

from __future__ import annotations

import sys

from mvpt.commands.common import add_json_option, emit_json, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "recommend",
        help="recommend music for a video (or videos for music) from an index",
        description="Rank the items of an index for a query file: a video for a music index, "
        "a piece of music for a video index. Prints rank, score, the offset (mm:ss) to start "
        "each item at so that its best window lines up with the query's, and the title.",
    )
    p.add_argument("index", metavar="INDEX", help="index folder (from `mvpt index`)")
    p.add_argument("query", metavar="QUERY", help="query media file")
    p.add_argument("--top", type=positive_int, default=10, help="how many items (default 10)")
    p.add_argument("--preview", metavar="OUT", default=None,
                   help="write the best match laid with the query to OUT (.mp4 or .webm)")
    p.add_argument("--condition", nargs="+", metavar="IMAGE", default=None,
                   help="example pictures (files or folders) of a visual attribute to steer "
                   "the results towards")
    p.add_argument("--strength", type=float, default=0.5,
                   help="how far --condition steers the query (0 = not at all; default 0.5)")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mvpt.recommend import recommend

    result = recommend(args.index, args.query, top=args.top, condition_images=args.condition,
                       strength=args.strength if args.condition else 0.0, preview=args.preview)
    to_stdout = emit_json(args, result.to_dict())
    if not to_stdout:
        print(result.format_table())
    if result.preview_path:
        print(f"preview: {result.preview_path}", file=sys.stderr if to_stdout else sys.stdout)
    return 0

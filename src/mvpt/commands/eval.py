"""`mvpt eval RUN STORE`: retrieval metrics of a trained run on a store split, with chance."""

from __future__ import annotations

import sys
from pathlib import Path

from mvpt.commands.common import add_json_option, emit_json, positive_float, positive_int
from mvpt.settings import SEGMENT_S

# the choices of mvpt.eval, kept here so that `mvpt --help` does not import numpy
SEGMENT_NEGATIVES = ("all", "other-tracks")
CANDIDATES = ("split", "all")
SCORINGS = ("max", "mean")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="retrieval metrics (Recall@k, median rank) of a trained run, with chance",
        description="Embed a split of a feature store with a trained run and rank every video "
        "against every music item and the reverse. Prints a markdown table (recalls in percent; "
        "the pool size in the last column) with a chance row computed from the same pools.",
    )
    p.add_argument("run", metavar="RUN", help="run folder written by `mvpt train`")
    p.add_argument("store", metavar="STORE", help="feature store folder written by `mvpt extract`")
    p.add_argument("--split", default="test", help="store split to evaluate (default test)")
    p.add_argument("--level", choices=("segment", "track", "both", "track-windows"),
                   default="both",
                   help="track: one centred window per track; segment: consecutive segments, "
                   "each matched only to its own time-aligned segment; both: those two (the "
                   "paper's tables, default); track-windows: whole tracks ranked as `mvpt "
                   "recommend` ranks them (sliding windows, a track's best pair)")
    p.add_argument("--window-seconds", type=positive_float, default=None,
                   help="track-windows: window length in seconds (default: K x t, as `mvpt "
                   "index`)")
    p.add_argument("--stride-seconds", type=positive_float, default=None,
                   help="track-windows: seconds between windows (default a third of a window)")
    p.add_argument("--scoring", choices=SCORINGS, default="max",
                   help="track-windows: a track's score is its best window pair (max, as the "
                   "index) or the mean over its pairs (default max)")
    p.add_argument("--segment-seconds", type=positive_float, default=SEGMENT_S,
                   help="segment length in seconds for the segment level (default %(default)g)")
    p.add_argument("--pool", type=positive_int, default=None, metavar="N",
                   help="average over disjoint random pools of N items (default: one pool of all)")
    p.add_argument("--same-length", action="store_true",
                   help="rank only candidates with as many clips as the query (length-shortcut "
                   "control, appendix C.6)")
    p.add_argument("--segment-negatives", choices=SEGMENT_NEGATIVES, default="all",
                   help="segment level: 'all' ranks a segment among every other segment, those "
                   "of its own track included (the setting comparable with the paper's segment "
                   "row); 'other-tracks' leaves out the other segments of the query's own track "
                   "(default all)")
    p.add_argument("--candidates", choices=CANDIDATES, default="split",
                   help="'split': the split's items are the candidates (the paper's tables); "
                   "'all': the split's queries compete against every extracted track of the "
                   "store, as in a real library (no --pool) (default split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random pools (default 0)")
    p.add_argument("--which", choices=("best", "last"), default="best",
                   help="checkpoint of the run (default best)")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mvpt.eval import LEVELS, evaluate_levels, format_table

    levels = LEVELS if args.level == "both" else (args.level,)
    results = evaluate_levels(args.run, args.store, levels=levels, split=args.split,
                              segment_s=args.segment_seconds, pool=args.pool,
                              same_length=args.same_length, seed=args.seed, which=args.which,
                              segment_negatives=args.segment_negatives,
                              candidates=args.candidates, window_s=args.window_seconds,
                              stride_s=args.stride_seconds, scoring=args.scoring)
    to_stdout = emit_json(args, {"results": results})
    out = sys.stderr if to_stdout else sys.stdout
    for result in results:
        print(f"\n{_caption(result)}\n", file=out)
        name = f"{Path(args.run).name} ({args.which})"
        print(format_table([(name, result["metrics"])], result["chance"]),
              file=out)
    return 0


def _caption(result: dict) -> str:
    level = result["level"]
    if level == "segment":
        level += f" level ({result['segment_s']:g} s segments, {result['n_tracks_dropped']} " \
                 "tracks shorter than one segment dropped)"
    elif level == "track-windows":
        w = result["windows"]
        level += (f" ({w['window_s']:g} s windows every {w['stride_s']:g} s, a track's "
                  f"{result['scoring']} over window pairs)")
    else:
        level += f" level (centred window of at most {result['max_clips']} clips)"
    metrics = result["metrics"]
    pools = (f"{metrics['n_pools']} random pools of {metrics['pool_size']} "
             f"({metrics['n_queries']} of {result['n_items']} items)"
             if metrics["n_pools"] > 1 else f"one pool of {metrics['pool_size']}")
    control = ", same-length candidates only" if result["same_length"] else ""
    if result.get("segment_negatives") == "other-tracks":
        control += ", other segments of the query's own track left out"
    if result.get("candidates") == "all":
        control += (f", candidates: every track of the store ({result['n_extra_items']} items "
                    f"of {result['n_extra_tracks']} tracks outside the split as well)")
    items = f"{result['n_items']} segments from " if result["level"] == "segment" else ""
    return (f"**{level}**, split {result['split']}: {items}{result['n_tracks_used']} tracks, "
            f"{pools}{control}")

"""`mvpt analyze shortcut|same-genre|manipulate`: the analyses of appendix C.

Each writes ``NAME.json``, ``NAME.md`` and ``NAME.png`` into ``--out`` and prints the markdown.
"""

from __future__ import annotations

import importlib

from mvpt.commands.common import add_json_option, emit_json, positive_int

# Analyses that register their own subcommand: each module has ``add_parser(actions, common)``,
# where ``common(parser, default_out=...)`` adds --split, --seed, --out and --json.
ANALYSIS_MODULES = (
    "mvpt.analysis.attributes",
    "mvpt.analysis.tsne",
    "mvpt.analysis.conditioning",
    "mvpt.analysis.qualitative",
)


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="appendix-C analyses (length shortcut, same-genre baseline, manipulations)",
                       description="Analyses of appendix C; each writes JSON, markdown and PNG.")
    actions = p.add_subparsers(dest="action", metavar="ANALYSIS", required=True)
    _shortcut_parser(actions)
    _same_genre_parser(actions)
    _manipulate_parser(actions)
    for name in ANALYSIS_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # UNFINISHED while the module is being written
            if exc.name != name:
                raise
            continue
        module.add_parser(actions, _common)


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
    p.add_argument("--segment-seconds", type=float, default=10.0)
    p.add_argument("--trials", type=positive_int, default=100, help="simulation draws (default 100)")
    _common(p, default_out="analysis")
    p.set_defaults(func=run_same_genre)


def _manipulate_parser(actions) -> None:
    try:
        from mvpt.analysis.manipulate import add_curve_arguments
    except ImportError:  # curve runner not built
        return
    p = actions.add_parser("manipulate", help="retrieval accuracy against a media change rate r")
    add_curve_arguments(p)
    _common(p, default_out="analysis")


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

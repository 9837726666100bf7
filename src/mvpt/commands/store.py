"""`mvpt store check STORE`: is every finished shard of a feature store whole?"""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser(
        "store",
        help="inspect a feature store",
        description="Feature store maintenance.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="check that every finished shard has all its files with the right shapes",
        description="Check every finished (DONE) shard of a feature store: its rows, offsets "
        "and arrays must be readable and agree in rows, clips, shapes and dtypes. Exit 0 when "
        "the store is sound, 1 with one line per broken shard.",
    )
    check.add_argument("store", metavar="STORE", help="feature store folder")
    check.add_argument("--remove-broken", action="store_true",
                       help="delete the broken shards (under the store's lock), so that the "
                       "next `mvpt extract` extracts their items again")
    check.set_defaults(func=run_check)


def run_check(args) -> int:
    from mvpt.store import FeatureStore

    store = FeatureStore.open(args.store)
    if args.remove_broken:
        with FeatureStore.writing(args.store, store.manifest) as locked:
            problems = locked.check()
            locked.remove_broken()
        for shard, problem in problems:
            print(f"removed broken shard {shard}: {problem}", file=sys.stderr)
        print(f"store: {len(problems)} broken shard(s) removed from {args.store}")
        return 0
    problems = store.check()
    for shard, problem in problems:
        print(f"{shard}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"store: {args.store} is sound ({len(store.shard_dirs())} finished shards)")
    return 0

"""Where a run's segment-level mistakes go on a store of the recipe suite.

For each 10 s test segment (the segment level of ``mvpt eval``: every segment of the split a
candidate, its own track's included) the candidate scored highest is counted as: the right one,
another segment of the same track, a segment of an order-only sibling (same sections in another
order), of another track of the same genre, or of any other track. The suite's hidden factors
(track -> genre, group) are rebuilt from the configuration, so this reads suite stores only.

    python benchmarks/segment_errors.py RUN --config mix-heavy [--stores /tmp/mvpt-recipe-stores]

A tie for the top place goes to the candidate listed first (the eval counts ties fairly, so
"right" here can differ from its R@1 by a tie or two).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feature_suite import SUITE, SuiteConfig, _world, ensure_store  # noqa: E402

KINDS = ("right", "same track", "order sibling", "same genre", "other")


def segment_errors(run_dir, config: SuiteConfig, *, stores, segment_clips: int = 10,
                   embed_fn=None) -> dict:
    """{direction: {kind: count}} over the test split's segments (see the module docstring);
    ``embed_fn`` (as in ``mvpt.eval.evaluate_levels``) replaces the run's model."""
    from mvpt.eval import gather_windows, segment_windows
    from mvpt.run import embedder_for
    from mvpt.store import FeatureStore

    tracks = [track for track, _split in _world(config)[3]]
    store = FeatureStore.open(ensure_store(config, stores))
    embed, _k = embedder_for(run_dir, store, embed_fn=embed_fn)
    features = store.load(split="test", arrays=("video", "audio"))
    hidden = [tracks[int(i.rsplit("-", 1)[1])] for i in features.ids]  # ids end in the index
    windows = segment_windows(features.n_clips, segment_clips=segment_clips)
    items = windows[0]
    video, music = (embed(m, gather_windows(features, m, windows)) for m in ("video", "audio"))
    scores = video @ music.T
    out = {}
    for direction, table in (("video_to_music", scores), ("music_to_video", scores.T)):
        counts = dict.fromkeys(KINDS, 0)
        for query, top in enumerate(table.argmax(1)):
            a, b = hidden[items[query]], hidden[items[top]]
            kind = ("right" if top == query else "same track" if items[top] == items[query]
                    else "order sibling" if a["group"] >= 0 and a["group"] == b["group"]
                    else "same genre" if a["genre"] == b["genre"] else "other")
            counts[kind] += 1
        out[direction] = counts
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder trained on the configuration's store")
    parser.add_argument("--config", required=True, choices=list(SUITE))
    parser.add_argument("--stores", type=Path, default=Path("/tmp/mvpt-recipe-stores"))
    args = parser.parse_args(argv)
    print(json.dumps({"run": args.run, "config": args.config,
                      **segment_errors(args.run, SUITE[args.config], stores=args.stores)}))


if __name__ == "__main__":
    main()

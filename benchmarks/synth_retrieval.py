"""MVPt against its baselines on synthetic music videos, over several seeds.

    mvpt synth --out synth600 --n 600 --seed 0 --equal-length
    mvpt extract synth600/manifest.csv --out synth600-store
    python benchmarks/synth_retrieval.py synth600-store --out synth600-runs --seeds 0 1 2

Trains MVPt and the MLP baseline and fits the linear baseline for every seed (default training
settings unless flags say otherwise), evaluates each on the test split at track and segment
level and at level track-windows (what `mvpt recommend` ranks: the test queries against every
track of the store, through the index's windows), and prints one markdown table per level with
the mean (and spread) over seeds, plus chance. Runs that already finished are reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from mvpt.eval import evaluate_levels, format_table
from mvpt.train import train

MODELS = ("mvpt", "mlp", "linear")
LEVELS = ("track", "segment", "track-windows")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder for the runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: train's)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: train's)")
    ap.add_argument("--json", type=Path, default=None, help="write every result here")
    args = ap.parse_args()
    settings = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                  ("lr", args.lr)) if v is not None}
    results: dict[str, dict[str, list[dict]]] = {m: {lv: [] for lv in LEVELS} for m in MODELS}
    for seed in args.seeds:
        for model in MODELS:
            run = args.out / f"{model}-seed{seed}"
            t0 = time.perf_counter()
            if not (run / "best.pt").exists():
                train(args.store, run, model=model, seed=seed, progress=False, **settings)
            for res in (evaluate_levels(run, args.store, levels=LEVELS[:2], split="test")
                        + evaluate_levels(run, args.store, levels=LEVELS[2:], split="test",
                                          candidates="all")):
                results[model][res["level"]].append(res)
            print(f"seed {seed} {model}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    for level in LEVELS:
        rows = []
        for model in MODELS:
            runs = results[model][level]
            keys = runs[0]["metrics"].keys()
            mean = {k: statistics.fmean(r["metrics"][k] for r in runs) for k in keys}
            rows.append((f"{model} (mean of {len(runs)})", mean))
        first = results["mvpt"][level][0]
        print(f"\n{level} level, test split, pool {first['metrics']['pool_size']}:")
        print(format_table(rows, first["chance"]))
        for model in MODELS:
            r1 = [100 * r["metrics"]["video_to_music_R@1"] for r in results[model][level]]
            r1m = [100 * r["metrics"]["music_to_video_R@1"] for r in results[model][level]]
            print(f"  {model}: V->M R@1 per seed {', '.join(f'{x:.1f}' for x in r1)}; "
                  f"M->V R@1 per seed {', '.join(f'{x:.1f}' for x in r1m)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

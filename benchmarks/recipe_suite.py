"""Choose training defaults on a suite of synthetic feature stores, never on one set.

For each configuration of :mod:`feature_suite` x seed x ablation row x model (MVPt, MLP), trains
with :func:`mvpt.train.train` (the row's settings over the defaults of ``mvpt train``) and
evaluates the test split with :func:`mvpt.eval.evaluate_levels` at track level (one centred window
per track) and segment level (10 s), both directions. Every finished run is kept as a small JSON
(``OUT/runs/``; checkpoints are deleted), so an interrupted benchmark continues where it stopped.
Writes ``OUT/ablation.{json,md}`` (one row per change, means over the suite) and, with
``--final``, ``OUT/final.{json,md}`` (MVPt against the MLP per configuration and direction).

    # the ablation, 1 seed, every configuration
    python benchmarks/recipe_suite.py --out benchmarks/results/recipe --seeds 0
    # the defaults against the MLP, 3 seeds
    python benchmarks/recipe_suite.py --out benchmarks/results/recipe --seeds 0 1 2 \\
        --rows defaults --final

The MLP is trained with the row's run settings (epochs, batch, lr, ...) and its own model config,
so a row that changes only the MVPt architecture reuses the MLP runs of the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feature_suite import SUITE, ensure_store  # noqa: E402

LEVELS = ("track", "segment")
DIRECTIONS = ("video_to_music", "music_to_video")
# name -> (what changes, run settings, MVPt model overrides). Each row changes one thing from the
# "defaults" row (the current defaults of mvpt train), except rows whose name says "+".
ROWS: dict[str, tuple[str, dict, dict]] = {
    "defaults": ("defaults of `mvpt train`", {}, {}),
    "one-window": ("one window per track (no twins)", {"windows_per_track": 1}, {}),
    "per-track": ("a window length per track (the length cue of mvpt 0.1)",
                  {"window_policy": "per-track", "windows_per_track": 1}, {}),
    "fixed": ("always K clips (no crops)", {"window_policy": "fixed"}, {}),
    "mean-pooling": ("mean pooling (the default before pyramid pooling)", {}, {"pooling": "mean"}),
    "pyramid-1-2": ("pyramid levels 1, 2 (the default since defaults-v4)", {},
                    {"pyramid_levels": [1, 2]}),
    "pyramid-1-2-4": ("pyramid levels 1, 2, 4 (adds the quarters; the default of defaults-v3)", {},
                      {"pyramid_levels": [1, 2, 4]}),
    "mean-skip": ("MLP of the mean input added to the output", {}, {"mean_skip": True}),
    "epochs-30": ("30 epochs", {"epochs": 30}, {}),
    "epochs-90": ("90 epochs", {"epochs": 90}, {}),
    "batch-16": ("batch 16 (more steps, fewer negatives)", {"batch_size": 16}, {}),
    "batch-64": ("batch 64 (fewer steps, more negatives)", {"batch_size": 64}, {}),
    "warmup-50": ("50 warm-up steps", {"warmup_steps": 50}, {}),
    "warmup-0.3": ("warm-up over 3/10 of the steps", {"warmup_share": 0.3}, {}),
    "lr-1e-3+warmup-0.3": ("lr 1e-3 and a warm-up over 3/10 of the steps (every seed took off "
                           "on the demo's store at lr 1e-3)", {"lr": 1e-3, "warmup_share": 0.3}, {}),
    "no-warmup": ("no warm-up (the default before defaults-v5)", {"warmup_steps": 0}, {}),
    "best-by-track-r10": ("best.pt by track-level val R@10, ties to the earlier epoch (the "
                          "rule before defaults-v6)", {"best_by": "track-r10"}, {}),
    "best-by-last": ("best.pt is the last epoch", {"best_by": "last"}, {}),
    "lr-3e-4": ("lr 3e-4", {"lr": 3e-4}, {}),
    "lr-1e-3": ("lr 1e-3 (the paper's, at batch 2048; the default before defaults-v7)",
                {"lr": 1e-3}, {}),
    "lr-3e-3": ("lr 3e-3", {"lr": 3e-3}, {}),
    "wd-0.1": ("weight decay 0.1", {"weight_decay": 0.1}, {}),
    "no-input-norm": ("no input LayerNorm", {}, {"input_norm": False}),
    "dropout-0": ("dropout 0", {}, {"dropout": 0.0}),
    "dropout-0.3": ("dropout 0.3", {}, {"dropout": 0.3}),
    "input-dropout-0.2": ("dropout 0.2 on the input clip features", {}, {"input_dropout": 0.2}),
    "cls": ("CLS pooling", {}, {"pooling": "cls"}),
    "min-clips-5": ("windows of 5 to 30 clips", {"min_clips": 5}, {}),
    "temperature-0.03": ("learnable temperature starting at 0.03 (0.07)", {},
                         {"temperature_init": 0.03}),
    "temperature-min-0.05": ("temperature kept >= 0.05 (0.01: logit scale at most 20, not 100)",
                             {}, {"temperature_min": 0.05}),
    "separate-encoders": ("one Transformer per modality (the paper's; the default before "
                          "defaults-v8)", {}, {"shared_encoder": False}),
    "positional-scale-2": ("a learnable scale on the positional encodings, started at 2", {},
                           {"positional_scale": 2.0}),
    "reverse-0.5": ("half the training windows played backwards (video and music alike)",
                    {"reverse_share": 0.5}, {}),
    "grad-clip-1": ("gradients clipped to an L2 norm of 1 (all parameters together)",
                    {"grad_clip": 1.0}, {}),
}


def run_key(config: str, row: str, model: str, seed: int) -> str:
    if model == "mlp" and not ROWS[row][1]:
        row = "defaults"  # the MLP does not see MVPt's architecture changes
    return f"{config}/{row}/{model}-s{seed}"


def _summarise(results: list[dict]) -> dict:
    out = {}
    for result in results:
        m = result["metrics"]
        for d in DIRECTIONS:
            for k in (1, 10):
                out[f"{result['level']}_{d}_R@{k}"] = float(m[f"{d}_R@{k}"])
        out[f"{result['level']}_pool"] = int(m["pool_size"])
    return out


def run_one(job: dict) -> dict:
    """Train and evaluate one (config, row, model, seed); returns the run's summary dict."""
    os.environ.setdefault("MVPT_THREADS", "1")
    from mvpt.eval import evaluate_levels
    from mvpt.train import train

    return _train_and_evaluate(job, dict(ROWS[job["row"]][1]), train, evaluate_levels)


def _train_and_evaluate(job: dict, settings: dict, train, evaluate_levels) -> dict:
    overrides = dict(job.get("mvpt_size", {}), **ROWS[job["row"]][2]) if job["model"] == "mvpt" else {}
    run_dir = Path(job["work"]) / job["key"].replace("/", "_")
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    summary = train(job["store"], run_dir, model=job["model"], progress=False,
                    model_overrides=overrides, seed=job["seed"], **settings)
    results = evaluate_levels(run_dir, job["store"], levels=LEVELS, split="test")
    # what `mvpt recommend` ranks, the test queries against every track of the store
    results += evaluate_levels(run_dir, job["store"], levels=("track-windows",), split="test",
                               candidates="all")
    history = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    shutil.rmtree(run_dir, ignore_errors=True)
    return {**job, "seconds": time.perf_counter() - started, "steps": summary["steps"],
            "batch": summary["global_batch_size"], "best_epoch": summary["best"].get("epoch"),
            "val_r1_by_epoch": [round(h.get("val_r1", float("nan")), 3) for h in history],
            "val_segment_r1_by_epoch": [round(h.get("val_segment_r1", float("nan")), 3)
                                        for h in history],
            **_summarise(results)}


def run_all(jobs: list[dict], *, out: Path, workers: int) -> dict[str, dict]:
    """Run the jobs not yet recorded under ``out/runs``; returns every job's record by key."""
    done, todo = {}, []
    for job in jobs:
        path = out / "runs" / f"{job['key']}.json"
        if path.is_file():
            done[job["key"]] = json.loads(path.read_text())
        elif job["key"] not in {j["key"] for j in todo}:
            todo.append(job)
    print(f"{len(done)} runs recorded, {len(todo)} to do", flush=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for record in pool.map(run_one, todo):
            path = out / "runs" / f"{record['key']}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1) + "\n")
            done[record["key"]] = record
            print(f"{record['key']}: track R@1 {_mean_r1(record, 'track'):.3f} segment R@1 "
                  f"{_mean_r1(record, 'segment'):.3f} ({record['seconds']:.0f} s)", flush=True)
    return done


def recorded(out: Path) -> dict[str, dict]:
    """Every run recorded under ``out/runs``, by key."""
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/*/*.json"))]
    return {r["key"]: r for r in runs}


def _mean_r1(record: dict, level: str, k: int = 1) -> float:
    return float(np.mean([record[f"{level}_{d}_R@{k}"] for d in DIRECTIONS]))


def _cell(records: list[dict], level: str, k: int = 1) -> float:
    return float(np.mean([_mean_r1(r, level, k) for r in records]))


def ablation_table(done: dict, *, rows, configs, seeds) -> tuple[list[dict], str]:
    """One line per row: means over configurations, seeds and directions, and the worst
    configuration's margin of MVPt over the MLP."""
    lines, table = [], []
    for row in rows:
        missing = [run_key(c, row, m, s) for c in configs for s in seeds for m in ("mvpt", "mlp")
                   if run_key(c, row, m, s) not in done]
        if missing:
            print(f"row {row}: left out, {len(missing)} runs missing ({missing[0]}, ...)")
            continue
        entry = {"row": row, "change": ROWS[row][0]}
        for level in LEVELS:
            margins = []
            for config in configs:
                mv = [done[run_key(config, row, "mvpt", s)] for s in seeds]
                ml = [done[run_key(config, row, "mlp", s)] for s in seeds]
                margins.append(_cell(mv, level) - _cell(ml, level))
                entry.setdefault(f"{level}_mvpt", []).append(_cell(mv, level))
                entry.setdefault(f"{level}_mlp", []).append(_cell(ml, level))
            entry[f"{level}_min_margin"] = float(min(margins))
            entry[f"{level}_worst"] = configs[int(np.argmin(margins))]
        table.append(entry)
    head = ("| row | change | track R@1 MVPt | track R@1 MLP | worst track margin | "
            "segment R@1 MVPt | segment R@1 MLP | worst segment margin |")
    lines += [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for e in table:
        lines.append(
            f"| {e['row']} | {e['change']} | {np.mean(e['track_mvpt']):.3f} | "
            f"{np.mean(e['track_mlp']):.3f} | {e['track_min_margin']:+.3f} ({e['track_worst']}) | "
            f"{np.mean(e['segment_mvpt']):.3f} | {np.mean(e['segment_mlp']):.3f} | "
            f"{e['segment_min_margin']:+.3f} ({e['segment_worst']}) |")
    per_config = ["", "Per configuration (track R@1 MVPt/MLP, segment R@1 MVPt/MLP):", "",
                  "| row | " + " | ".join(configs) + " |",
                  "|---|" + "---|" * len(configs)]
    for e in table:
        cells = [f"{e['track_mvpt'][i]:.2f}/{e['track_mlp'][i]:.2f}, "
                 f"{e['segment_mvpt'][i]:.2f}/{e['segment_mlp'][i]:.2f}"
                 for i in range(len(configs))]
        per_config.append(f"| {e['row']} | " + " | ".join(cells) + " |")
    return table, "\n".join(lines + per_config) + "\n"


def final_table(done: dict, *, row: str, configs, seeds) -> tuple[list[dict], str]:
    """MVPt against the MLP per configuration and direction, mean (min..max) over seeds."""
    table = []
    lines = ["| config | direction | track R@1 MVPt | track R@1 MLP | segment R@1 MVPt | "
             "segment R@1 MLP | track-windows R@10 MVPt | track-windows R@10 MLP | target met |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for config in configs:
        for d in DIRECTIONS:
            cell = {"config": config, "direction": d}
            for model in ("mvpt", "mlp"):
                records = [done[run_key(config, row, model, s)] for s in seeds]
                for level in (*LEVELS, "track-windows"):
                    for k in (1, 10):
                        values = [r[f"{level}_{d}_R@{k}"] for r in records]
                        cell[f"{model}_{level}_R@{k}"] = values
            ok = _target(cell, order_signal=SUITE[config].order_share >= 0.5)
            cell["target_met"] = ok
            table.append(cell)
            lines.append(
                f"| {config} | {d.replace('_to_', '->')} | {_spread(cell['mvpt_track_R@1'])} | "
                f"{_spread(cell['mlp_track_R@1'])} | {_spread(cell['mvpt_segment_R@1'])} | "
                f"{_spread(cell['mlp_segment_R@1'])} | "
                f"{_spread(cell['mvpt_track-windows_R@10'])} | "
                f"{_spread(cell['mlp_track-windows_R@10'])} | {'yes' if ok else 'NO'} |")
    return table, "\n".join(lines) + "\n"


def _target(cell: dict, *, order_signal: bool) -> bool:
    """MVPt >= MLP + 0.10 R@1 at both levels (seed means), MVPt >= MLP at track-windows R@10
    (against every track of the store), and MVPt R@1 >= 0.8 where order carries the signal."""
    mean = {k: float(np.mean(v)) for k, v in cell.items() if isinstance(v, list)}
    ok = all(mean[f"mvpt_{lv}_R@1"] >= mean[f"mlp_{lv}_R@1"] + 0.10 for lv in LEVELS)
    ok = ok and mean["mvpt_track-windows_R@10"] >= mean["mlp_track-windows_R@10"]
    return ok and (not order_signal or mean["mvpt_track_R@1"] >= 0.8)


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ({min(values):.2f}..{max(values):.2f})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recipe"))
    parser.add_argument("--stores", type=Path, default=Path("/tmp/mvpt-recipe-stores"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/mvpt-recipe-runs"))
    parser.add_argument("--configs", nargs="*", default=list(SUITE), choices=list(SUITE))
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--width", type=int, default=None,
                        help="MVPt d_hidden (feed-forward 4x) for a cheaper suite; default: the "
                             "shipped config's (the MLP always keeps its shipped size)")
    parser.add_argument("--no-train", action="store_true",
                        help="only tabulate the runs already recorded under --out")
    parser.add_argument("--final", action="store_true",
                        help="write the per-configuration table of the first row")
    args = parser.parse_args(argv)
    stores = {c: str(ensure_store(SUITE[c], args.stores)) for c in args.configs}
    size = {} if args.width is None else {"d_hidden": args.width,
                                          "d_feedforward": 4 * args.width}
    jobs = [{"config": c, "row": r, "model": m, "seed": s, "store": stores[c],
             "work": str(args.work), "key": run_key(c, r, m, s), "mvpt_size": size}
            for r in args.rows for c in args.configs for s in args.seeds for m in ("mvpt", "mlp")]
    done = (recorded(args.out) if args.no_train
            else run_all(jobs, out=args.out, workers=args.workers))
    name = "final" if args.final else "ablation"
    if args.final:
        table, text = final_table(done, row=args.rows[0], configs=args.configs, seeds=args.seeds)
    else:
        table, text = ablation_table(done, rows=args.rows, configs=args.configs, seeds=args.seeds)
    command = "python benchmarks/recipe_suite.py " + " ".join(argv or sys.argv[1:])
    (args.out / f"{name}.json").write_text(json.dumps(
        {"command": command, "seeds": args.seeds, "configs": args.configs, "table": table,
         "suite": {c: SUITE[c].__dict__ for c in args.configs}}, indent=1, default=str) + "\n")
    (args.out / f"{name}.md").write_text(f"`{command}`\n\n{text}")
    print(text)


if __name__ == "__main__":
    main()

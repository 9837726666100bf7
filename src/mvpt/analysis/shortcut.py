"""Length-shortcut control (appendix C.6, table 4).

A sequence model can see how many clips a sequence has, and a video's soundtrack has as many clips
as the video. :func:`shortcut_control` evaluates several runs at track level twice, over all
candidates and over only the candidates of the query's length (``same_length=True`` of
:func:`mvpt.eval.evaluate_levels`, which is what perfect use of the shortcut would give), with the
chance of each setting from the same candidate pools. A model that mostly uses the shortcut gains
little from the restriction relative to chance; one that does not still beats the others under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mvpt.errors import UsageError
from mvpt.eval import format_table

SETTINGS = (("all candidates", False), ("same-length candidates", True))


def shortcut_control(runs: Sequence, store_path, *, names: Sequence[str] | None = None,
                     split: str = "test", pool: int | None = None, seed: int = 0,
                     which: str = "best", embed_fns: Sequence | None = None,
                     max_clips: int | None = None) -> dict:
    """``{"settings": [{"setting", "same_length", "chance", "runs": [{"name", "run",
    "metrics"}]}]}`` for every run in ``runs`` (folders; ``embed_fns[i]`` replaces run i's model
    when given, as ``embed_fn`` of :func:`mvpt.eval.evaluate_levels`)."""
    from mvpt.eval import evaluate_levels

    runs = list(runs)
    if not runs:
        raise UsageError("the shortcut control needs at least one run")
    folders = [getattr(r, "folder", r) for r in runs]  # a Run, or a run folder
    names = list(names) if names else [Path(str(f)).name for f in folders]
    embed_fns = list(embed_fns) if embed_fns else [None] * len(runs)
    if len(names) != len(runs) or len(embed_fns) != len(runs):
        raise UsageError(f"got {len(runs)} runs, {len(names)} names, {len(embed_fns)} embed_fns")
    settings = []
    for setting, same_length in SETTINGS:
        rows, chance = [], None
        for run, folder, name, embed_fn in zip(runs, folders, names, embed_fns):
            result = evaluate_levels(run, store_path, levels=("track",), split=split, pool=pool,
                                     same_length=same_length, seed=seed, which=which,
                                     embed_fn=embed_fn, max_clips=max_clips)[0]
            rows.append({"name": name, "run": None if run is None else str(folder),
                         "metrics": result["metrics"]})
            chance = result["chance"]
        settings.append({"setting": setting, "same_length": same_length, "chance": chance,
                         "runs": rows})
    return {"store": str(store_path), "split": split, "level": "track", "pool": pool,
            "settings": settings}


def summary_markdown(result: dict) -> str:
    """One markdown table: every run under both settings, each setting followed by its chance."""
    rows = []
    for s in result["settings"]:
        rows += [(f"{r['name']} ({s['setting']})", r["metrics"]) for r in s["runs"]]
        rows.append((f"chance ({s['setting']})", s["chance"]))
    return (f"Track-level retrieval, split {result['split']}, with and without the "
            f"same-length restriction (appendix C.6)\n\n{format_table(rows)}")


def write_shortcut_report(result: dict, out_dir) -> dict:
    """``shortcut.json``, ``shortcut.md`` and ``shortcut.png`` (mean R@10 per run and setting)."""
    import numpy as np

    from mvpt.analysis import new_figure, write_report

    fig, ax = new_figure(width=6)
    names = [r["name"] for r in result["settings"][0]["runs"]] + ["chance"]
    for j, s in enumerate(result["settings"]):
        values = [r["metrics"]["mean_R@10"] for r in s["runs"]] + [s["chance"]["mean_R@10"]]
        ax.bar(np.arange(len(names)) + 0.4 * j, [100 * v for v in values], 0.4,
               label=s["setting"])
    ax.set_xticks(np.arange(len(names)) + 0.2, names)
    ax.set_ylabel("mean R@10 (%)")
    ax.legend()
    return write_report(out_dir, name="shortcut", data=result, markdown=summary_markdown(result),
                        figure=fig)

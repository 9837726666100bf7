"""`mvpt demo`: the whole pipeline on embedded default data, on a fresh machine, in minutes.

1. generate synthetic music videos (equal lengths, so length cannot pair video and music);
2. extract per-clip features with the offline encoders (EfficientNet-Lite0, YAMNet);
3. train MVPt and the MLP baseline, fit the linear baseline;
4. print their retrieval table on the held-out test split (track and segment level, with chance);
5. index every demo soundtrack as a music library and recommend music for each held-out video,
   reporting how often its own soundtrack is in the top 10 (beside chance);
6. write a preview (the first held-out video with its top recommendation laid under it);
7. print what it made and how to open the web page (`mvpt serve ...`).

Every stage resumes: a second run reuses what the first one finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mvpt.errors import UsageError

MODELS = ("mvpt", "mlp", "linear")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo. The defaults finish in a few minutes on 2 CPU cores; the tests use a
    smaller one (:meth:`tiny`)."""

    n_videos: int = 160
    seconds: float = 30.0
    seed: int = 0
    # Training: None takes `mvpt train`'s defaults (mvpt.settings.RunConfig), measured on a
    # suite of synthetic feature sets (benchmarks/recipe_suite.py); the demo overrides none.
    epochs: int | None = None
    batch_size: int | None = None
    # The music index's windows: None takes `mvpt index`'s defaults (the run's longest input,
    # K x t = 30 s, every third of that), as a creator's own library would get.
    window_s: float | None = None
    stride_s: float | None = None
    top: int = 10

    @classmethod
    def tiny(cls) -> "DemoSettings":
        # 12 epochs: with pyramid pooling 6 left MVPt short of relying on hue (the manipulation
        # curve of tests/test_analysis_manipulate.py peaked at r = 0.75, by 0.003).
        return cls(n_videos=40, seconds=20.0, epochs=12, batch_size=None)

    def validate(self) -> None:
        if self.n_videos < 20:
            raise UsageError(f"the demo needs at least 20 videos (got {self.n_videos}) so that "
                             "every split has some")
        if self.seconds < 10:
            raise UsageError(f"demo videos must last at least 10 s (one segment), got "
                             f"{self.seconds}")


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def run_demo(out: str | Path = "mvpt-demo", settings: DemoSettings = DemoSettings(), *,
             progress: bool = True, quiet: bool = False) -> dict:
    """Run every stage into ``out``; returns a summary (paths, tables, rates, timings)."""
    from mvpt.data.synth import generate
    from mvpt.eval import evaluate_levels, format_table
    from mvpt.extract import extract
    from mvpt.store import FeatureStore
    from mvpt.train import train

    settings.validate()
    out = Path(out)
    timings: dict[str, float] = {}
    t = time.perf_counter()

    _say(f"[1/6] synthetic music videos -> {out / 'data'}", quiet)
    manifest = out / "data" / "manifest.csv"
    if _manifest_rows(manifest) != settings.n_videos:
        manifest = generate(out / "data", n=settings.n_videos, seed=settings.seed,
                            duration_s=settings.seconds, equal_length=True,
                            progress=progress).manifest_path
    timings["synth_s"], t = time.perf_counter() - t, time.perf_counter()

    _say(f"[2/6] extracting features (efficientnet-lite0, yamnet) -> {out / 'store'}", quiet)
    ext = extract([manifest], out / "store", progress=progress)
    if ext.done + ext.skipped - ext.failed <= 0:
        raise UsageError(f"{out / 'store'}: no item was extracted")
    timings["extract_s"], t = time.perf_counter() - t, time.perf_counter()

    _say("[3/6] training MVPt and the MLP baseline, fitting the linear baseline", quiet)
    runs = {}
    for name in MODELS:
        run_dir = out / "runs" / name
        runs[name] = run_dir
        if (run_dir / "best.pt").exists():
            continue
        given = {k: v for k, v in (("epochs", settings.epochs),
                                   ("batch_size", settings.batch_size)) if v is not None}
        train(out / "store", run_dir, model=name, seed=settings.seed, progress=progress, **given)
    timings["train_s"], t = time.perf_counter() - t, time.perf_counter()

    _say("[4/6] evaluating on the held-out test split", quiet)
    tables, results = {}, {}
    for name, run_dir in runs.items():
        results[name] = evaluate_levels(run_dir, out / "store", levels=("track", "segment"),
                                        split="test")
    for k, level in enumerate(("track", "segment")):
        rows = [(name, results[name][k]["metrics"]) for name in MODELS]
        tables[level] = format_table(rows, results["mvpt"][k]["chance"])
        _say(f"\n{level}-level retrieval, test split "
             f"(pool {results['mvpt'][k]['metrics']['pool_size']}):\n{tables[level]}\n", quiet)
    timings["eval_s"], t = time.perf_counter() - t, time.perf_counter()

    rows = FeatureStore.open(out / "store").rows()
    held_out = rows[rows["split"] == "test"].reset_index(drop=True)
    library = rows["source_path"].tolist()  # every demo soundtrack; queries are held-out videos
    rate = _recommend_stage(out, runs["mvpt"], library, held_out, settings, progress, quiet)
    timings["index_recommend_s"] = time.perf_counter() - t

    summary = {
        "out": str(out), "settings": asdict(settings), "data": str(manifest),
        "store": str(out / "store"), "runs": {k: str(v) for k, v in runs.items()},
        "tables": tables, "results": results, "own_soundtrack_top10": rate,
        "index": str(out / "index"), "preview": str(out / "preview.mp4"), "timings_s": timings,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _say(_closing_text(summary), quiet)
    return summary


def _manifest_rows(path: Path) -> int:
    """Rows of a finished synth manifest (0 when absent): a re-run reuses the videos."""
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8") as fh:
        return max(0, sum(1 for _ in fh) - 1)


def _recommend_stage(out: Path, run_dir: Path, library: list[str], held_out, settings,
                     progress: bool, quiet: bool) -> dict:
    from mvpt.index import build_index, open_index
    from mvpt.recommend import recommend
    from mvpt.run import Run

    _say(f"[5/6] indexing the {len(library)} demo soundtracks -> {out / 'index'}; recommending "
         "music for each held-out video", quiet)
    build_index(Run.load(run_dir), library, out / "index", modality="music",
                window_s=settings.window_s, stride_s=settings.stride_s, progress=progress)
    windows = open_index(out / "index").windows
    _say(f"      {windows.window_s:g} s windows every {windows.stride_s:g} s", quiet)
    hits_in_top = 0
    ranks = {}
    for item_id, path in zip(held_out["id"], held_out["source_path"]):
        rec = recommend(out / "index", path, top=settings.top)
        found = [h.rank for h in rec.hits if Path(h.source_path) == Path(path)]
        ranks[item_id] = found[0] if found else None
        hits_in_top += bool(found)
    n = len(held_out)
    chance = min(1.0, settings.top / max(len(library), 1))
    _say(f"      own soundtrack in the top {settings.top}: {hits_in_top} of {n} held-out videos "
         f"(library of {len(library)} tracks; chance {chance:.0%})", quiet)
    _say(f"[6/6] preview -> {out / 'preview.mp4'}", quiet)
    first = held_out["source_path"].iloc[0]
    recommend(out / "index", first, top=settings.top, preview=out / "preview.mp4")
    return {"in_top": hits_in_top, "queries": n, "top": settings.top, "library": len(library),
            "chance": chance, "ranks": ranks}


def _closing_text(summary: dict) -> str:
    rate = summary["own_soundtrack_top10"]
    return "\n".join([
        "",
        f"Done in {sum(summary['timings_s'].values()):.0f} s. What the demo made:",
        f"  synthetic videos   {summary['data']}",
        f"  feature store      {summary['store']}",
        f"  trained runs       {', '.join(summary['runs'].values())}",
        f"  music index        {summary['index']}",
        f"  preview            {summary['preview']}",
        f"  summary            {Path(summary['out']) / 'summary.json'}",
        f"Own soundtrack in the top {rate['top']}: {rate['in_top']} of {rate['queries']} held-out "
        f"videos (library of {rate['library']} tracks, chance {rate['chance']:.0%}).",
        "",
        "Next:",
        f"  mvpt recommend {summary['index']} VIDEO.mp4 --preview out.mp4",
        f"  mvpt serve {summary['index']}     # then open http://127.0.0.1:8000",
    ])

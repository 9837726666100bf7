"""Every benchmark, one after the other, into one JSON file and one markdown table.

Runs each script of benchmarks/ as a subprocess (its own command line, so each keeps its own
figures and references), keeps its output, and picks the headline figures out of what it printed
(or out of its --json file where it writes one). The markdown table is the README's performance
table: one or more rows per benchmark, with the date, the machine and the command line.

    python benchmarks/run_all.py                 # full sizes (an hour or more on 2 cores)
    python benchmarks/run_all.py --quick         # small sizes, a few minutes (CI)
    python benchmarks/run_all.py --only extract eval --out bench-results

A benchmark that fails or times out gets a row saying so and the run goes on. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
NUMBER = r"([-+]?\d[\d,]*\.?\d*)"


def num(text: str) -> float:
    return float(text.replace(",", ""))


def find(pattern: str, text: str, group: int = 1) -> float | None:
    """The number of the last match of ``pattern`` in ``text`` (None without a match)."""
    matches = list(re.finditer(pattern, text, flags=re.MULTILINE))
    return num(matches[-1].group(group)) if matches else None


def markdown_rows(text: str) -> list[dict]:
    """The rows of every markdown table printed in ``text``, as header -> cell. A block of table
    lines whose second line is not a separator (|---|) continues the previous table: its lines
    are rows under that table's header."""
    rows, header, block = [], None, []

    def flush() -> None:
        nonlocal header
        if len(block) >= 2 and _is_separator(block[1]):
            header, body = block[0], block[2:]
        else:
            body = block
        rows.extend(dict(zip(header, cells)) for cells in body
                    if header is not None and not _is_separator(cells))

    for line in text.splitlines():
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            flush()
            block = []
    flush()
    return rows


def _is_separator(cells: list[str]) -> bool:
    return set("".join(cells)) <= set("-: ")


# ------------------------------------------------------------------------------ parsers
# Each takes (stdout, json figures or None) and returns rows (figure, value, reference).
def parse_extract(out: str, data: dict | None) -> list[tuple]:
    data = data or {}
    local = data.get("whole_extraction_x_local")
    rows = [("whole extraction, local engine (media s / wall s)", local,
             f"decode only {fmt(data.get('decode_only_x'))}")]
    if "whole_extraction_x_ray" in data:
        rows.append((f"whole extraction, Ray engine, {data.get('ray_workers')} workers "
                     "(media s / wall s)", data["whole_extraction_x_ray"],
                     f"{100 * data['ray_vs_local']:.0f} % of the local engine"))
    rows.append(("frame encoder (GFLOP/s)", data.get("frame_encoder_gflops"),
                 f"matmul {fmt(data.get('matmul_gflops'))}, ratio "
                 f"{fmt(data.get('frame_encoder_vs_matmul'))}"))
    return rows


def parse_train(out: str, data: dict | None) -> list[tuple]:
    achieved = find(rf"achieved: {NUMBER} GFLOP/s", out)
    matmul = find(rf"matmul[^\d]*{NUMBER} GFLOP/s", out)
    ratio = achieved / matmul if achieved and matmul else None
    return [("training step (tracks/s)", find(rf"{NUMBER} tracks/s", out), ""),
            ("training forward+backward (GFLOP/s)", achieved,
             f"matmul {fmt(matmul)}, ratio {fmt(ratio)}")]


def parse_train_memory(out: str, data: dict | None) -> list[tuple]:
    """Peak RSS growth from a store to one ``N``x larger, streamed (the headline) beside
    in-memory, and the streamed peaks from the script's table; then the streamed throughput over
    the in-memory one on the larger store (the median of paired rounds), beside the smaller's."""
    growth = {m.group(1): (m.group(2), num(m.group(3))) for m in re.finditer(
        rf"^(streamed|in-memory): peak RSS (\d+)x store / 1x store: {NUMBER} %", out,
        flags=re.MULTILINE)}
    if "streamed" not in growth:
        return [("training peak RSS vs store size", None, "")]
    scale, streamed = growth["streamed"]
    peaks = {r.get("store"): r.get("peak RSS MB") for r in markdown_rows(out)
             if r.get("mode") == "streamed"}
    beside = [f"peak {peaks.get('1x')} -> {peaks.get(f'{scale}x')} MB"]
    if "in-memory" in growth:
        beside.insert(0, f"in-memory {growth['in-memory'][1]:+.1f} %")
    rows = [(f"training peak RSS, streamed, {scale}x store vs 1x (%)", f"{streamed:+.1f}",
             "; ".join(beside))]
    speed = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(
        rf"^(\d+)x store: streamed / in-memory tracks/s = {NUMBER} \(median of \d+ paired "
        r"rounds: ([^)]*)\)", out, flags=re.MULTILINE)}
    if scale in speed:
        ratio, paired = speed[scale]
        small = f"; 1x store {speed['1'][0]}" if "1" in speed and scale != "1" else ""
        rows.append((f"training tracks/s, streamed / in-memory, {scale}x store", ratio,
                     f"paired rounds {paired}{small}"))
    return rows


def parse_eval(out: str, data: dict | None) -> list[tuple]:
    """Per pool size: wall / CPU seconds, beside the plain matmul's ratio and the peak."""
    rows, ratios = [], [r for r in markdown_rows(out)
                        if r.get("case") == "ratio to the plain matmul"]
    blocked = [r for r in markdown_rows(out) if r.get("case") == "blocked"]
    numpy_counting = {r.get("pool"): r for r in markdown_rows(out)
                      if r.get("case") == "blocked, numpy counting (before)"}
    for k, r in enumerate(blocked):
        ratio = ratios[k].get("GFLOP/s wall / CPU-s") if k < len(ratios) else None
        peak = r.get("peak MiB traced / resident", r.get("peak MiB"))
        before = numpy_counting.get(r.get("pool"))
        rows.append((f"eval, pool {r.get('pool')}: wall s / CPU s",
                     f"{r.get('wall s')} / {r.get('CPU s')}",
                     f"{ratio or 'n/a'} of a plain matmul's FLOP/s (wall / CPU); "
                     f"peak {peak} MiB traced / resident"
                     + (f"; numpy's counting {before.get('wall s')} / {before.get('CPU s')}"
                        if before else "")))
    return rows or [("eval", None, "")]


def parse_recommend(out: str, data: dict | None) -> list[tuple]:
    windows = find(r"## approximate vs exact, (\d+) structured windows", out)
    rows = []
    for kind in ("exact", "hnsw", "ivf"):
        lines = re.findall(rf"^\s*{kind}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}"
                           rf"\s+{NUMBER}", out, flags=re.MULTILINE)
        if lines:
            build, _, _, p50, p99, recall = map(num, lines[-1])
            rows.append((f"index {kind}, {fmt(windows)} windows: p50 / p99 ms", f"{p50:g} / {p99:g}",
                         f"build {build:g} s, recall@10 {recall:.3f}"))
    return rows or [("index", None, "")]


def parse_load_serve(out: str, data: dict | None) -> list[tuple]:
    rows = []
    for match in re.finditer(rf"^(\w+)\s+(\d+)\s+{NUMBER}\s+{NUMBER}  ", out, flags=re.MULTILINE):
        rows.append((f"server {match.group(1)}: p50 / p99 ms",
                     f"{num(match.group(3)):g} / {num(match.group(4)):g}",
                     f"{match.group(2)} requests"))
    rss = re.search(rf"server RSS MB: start {NUMBER}, middle {NUMBER}, end {NUMBER}", out)
    if rss:
        rows.append(("server RSS, start -> end (MB)", f"{rss.group(1)} -> {rss.group(3)}", ""))
    return rows or [("server load", None, "")]


def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


# ------------------------------------------------------------------------------ the suite
@dataclass
class Benchmark:
    name: str
    script: str
    full: list[str]
    quick: list[str]
    parse: object
    json_flag: bool = False  # the script writes its figures with --json FILE
    timeout_s: dict = field(default_factory=lambda: {"quick": 240, "full": 7200})


BENCHMARKS = [
    Benchmark("extract", "extract.py", ["--ray"], ["--minutes", "0.5", "--piece-seconds", "10"],
              parse_extract, json_flag=True),
    Benchmark("train", "train.py", [], ["--tracks", "64", "--batch-size", "32", "--steps", "1"],
              parse_train),
    Benchmark("train_memory", "train_memory.py", [],
              ["--tracks", "64", "--scale", "2", "--video-dim", "64", "--audio-dim", "64"],
              parse_train_memory),
    Benchmark("eval", "eval.py", [], ["--sizes", "2000", "--block-size", "512",
                                      "--reference-rows", "2000"], parse_eval),
    Benchmark("index", "recommend.py", ["--windows", "1000000"],
              ["--windows", "5000", "--tracks", "1000", "--queries", "20", "--kinds", "hnsw"],
              parse_recommend),
    Benchmark("serve", "load_serve.py", [], ["--clients", "2", "--duration", "5",
                                             "--max-requests", "20"], parse_load_serve),
]


def supported(script: Path, args: list[str]) -> list[str]:
    """``args`` less the options that ``script --help`` does not list (with their values), so a
    script whose options changed still runs with the rest."""
    try:
        usage = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                               text=True, timeout=120, env=_env(), cwd=HERE.parent).stdout
    except subprocess.TimeoutExpired:
        return args
    kept, keep = [], True
    for arg in args:
        if arg.startswith("--"):
            keep = re.search(rf"{re.escape(arg)}\b", usage) is not None
        if keep:
            kept.append(arg)
    return kept


def run_one(bench: Benchmark, *, quick: bool, work: Path) -> dict:
    script = HERE / bench.script
    args = supported(script, list(bench.quick if quick else bench.full)) if script.exists() else []
    json_path = work / f"{bench.name}.json"
    if bench.json_flag:
        args += ["--json", str(json_path)]
    command = [sys.executable, str(script), *args]
    record = {"name": bench.name, "command": " ".join(["python", f"benchmarks/{bench.script}",
                                                       *args]).replace(str(work), "OUT")}
    if not script.exists():
        return {**record, "status": "missing", "rows": [[bench.name, None, "script not found"]]}
    timeout = bench.timeout_s["quick" if quick else "full"]
    print(f"== {bench.name}: {record['command']}", flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=_env(), cwd=HERE.parent)
        out, status = done.stdout, "ok" if done.returncode == 0 else f"exit {done.returncode}"
        err = done.stderr
    except subprocess.TimeoutExpired as exc:
        out, err, status = _text(exc.stdout), _text(exc.stderr), f"timed out after {timeout} s"
    record.update(status=status, wall_s=round(time.perf_counter() - start, 1),
                  stdout=out[-6000:], stderr=err[-3000:])
    data = json.loads(json_path.read_text()) if json_path.is_file() else None
    try:
        rows = bench.parse(out, data)
    except Exception as exc:  # a changed output format must not lose the other benchmarks
        rows = [(bench.name, None, f"could not read its output: {type(exc).__name__}: {exc}")]
    record["rows"] = [[figure, value, ref] for figure, value, ref in rows]
    record["figures"] = data
    print(out[-3000:], flush=True)
    if status != "ok":
        print(f"{bench.name}: {status}\n{err[-2000:]}", flush=True)
    return record


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _env() -> dict:
    src = str(HERE.parent / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU cores ({model}), {memory_gb:.0f} GB RAM, {platform.system()}"


def load_average() -> str:
    """The 1-minute load average and the core count ("3.52 on 2 cores"): how busy the machine
    was, since wall-clock figures depend on it."""
    try:
        return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    except OSError:  # not available on this system
        return "unknown"


def markdown(report: dict) -> str:
    """The README's performance table: what was run (date, machine, load, the suite's command)
    and one row per figure with the command that reproduces it."""
    lines = [f"Benchmarks of {report['date']} on {report['machine']}, load average "
             f"{report['load_start']} at the start and {report['load_end']} at the end "
             f"(`{report['command']}`):", "",
             "| benchmark | figure | value | beside it (same run) | command | wall s | status |",
             "|---|---|---:|---|---|---:|---|"]
    for rec in report["benchmarks"]:
        for figure, value, ref in rec["rows"]:
            lines.append(f"| {rec['name']} | {figure} | {fmt(value)} | {ref} | "
                         f"`{rec['command']}` | {rec.get('wall_s', '')} | {rec['status']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes; for CI)")
    ap.add_argument("--out", type=Path, default=Path("bench-results"),
                    help="folder for results.json and results.md (default bench-results)")
    ap.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS],
                    help="run only these benchmarks")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = (args.out / "work").resolve()
    work.mkdir(exist_ok=True)
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    command = " ".join(["python benchmarks/run_all.py", *(argv if argv is not None
                                                          else sys.argv[1:])])
    report = {"date": datetime.date.today().isoformat(), "machine": machine(),
              "command": command, "quick": args.quick, "load_start": load_average(),
              "load_end": load_average(),
              "benchmarks": []}
    for bench in chosen:
        report["benchmarks"].append(run_one(bench, quick=args.quick, work=work))
        report["load_end"] = load_average()
        (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "results.md").write_text(table)
    print("\n" + table)


if __name__ == "__main__":
    main()

"""benchmarks/run_all.py: one JSON and one markdown table over every benchmark (figures are
printed, never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import run_all  # noqa: E402


def test_markdown_rows_reads_printed_tables():
    text = ("title\n| case | pool | wall s |\n|---|---:|---:|\n| blocked | 2,000 | 0.52 |\n"
            "| full | 2,000 | 0.61 |\nnot a table\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    rows = run_all.markdown_rows(text)
    assert rows == [{"case": "blocked", "pool": "2,000", "wall s": "0.52"},
                    {"case": "full", "pool": "2,000", "wall s": "0.61"}, {"a": "1", "b": "2"}]


def test_a_table_continued_after_a_line_of_text_keeps_its_header():
    """benchmarks/eval.py prints the rows of each further pool size under a line of its own,
    without repeating the header: they belong to the header above, and none is one."""
    text = ("| case | pool | wall s |\n|---|---:|---:|\n| blocked | 10,000 | 0.35 |\n\n"
            "at 10,000: same metrics\n\n| blocked | 100,000 | 34.04 |\n| ratio | | x0.84 |\n")
    assert run_all.markdown_rows(text) == [
        {"case": "blocked", "pool": "10,000", "wall s": "0.35"},
        {"case": "blocked", "pool": "100,000", "wall s": "34.04"},
        {"case": "ratio", "pool": "", "wall s": "x0.84"}]


def test_parsers_pick_the_headline_figures():
    train = ("step: 0.250 s, 128.0 tracks/s\nforward+backward: 1.00 GFLOP per step\n"
             "achieved: 4.00 GFLOP/s; plain float32 1024x1024 matmul: 80.00 GFLOP/s (ratio 0.05)")
    rows = run_all.parse_train(train, None)
    assert rows[0][1] == 128.0 and rows[1][1] == 4.0 and "ratio 0.05" in rows[1][2]
    serve = ("endpoint    count    p50 ms    p99 ms  status codes\n"
             "recommend      12     812.5    1500.2  200: 12\n"
             "server RSS MB: start 300, middle 420, end 410\n")
    rows = run_all.parse_load_serve(serve, None)
    assert rows[0] == ("server recommend: p50 / p99 ms", "812.5 / 1500.2", "12 requests")
    assert rows[1][1] == "300 -> 410"
    assert run_all.parse_eval("no table here", None) == [("eval", None, "")]


def test_eval_and_train_memory_rows_carry_their_same_run_references():
    """The rows read the scripts' current output (the eval's matmul ratio and both peaks, the
    streamed growth beside in-memory, the streamed throughput over in-memory, round by round)."""
    eval_out = ("| case | pool | wall s | CPU s | peak MiB traced / resident | "
                "GFLOP/s wall / CPU-s | V->M R@1 % | V->M MedR |\n"
                "|---|---:|---:|---:|---:|---:|---:|---:|\n"
                "| plain matmul (10,000 rows) | 100,000 | 14.99 | 9.13 | | 34.2 / 56.1 | | |\n"
                "| blocked | 100,000 | 178.10 | 140.33 | 84 / 88 | 28.7 / 36.5 | 33.06 | 5 |\n"
                "| ratio to the plain matmul | | | | | x0.84 / x0.65 | | |\n"
                "| blocked, numpy counting (before) | 100,000 | 250.00 | 190.50 | 84 / 88 | "
                "20.5 / 26.9 | 33.06 | 5 |\n")
    [(figure, value, beside)] = run_all.parse_eval(eval_out, None)
    assert (figure, value) == ("eval, pool 100,000: wall s / CPU s", "178.10 / 140.33")
    assert beside.startswith("x0.84 / x0.65 of a plain matmul") and "84 / 88 MiB" in beside
    assert beside.endswith("numpy's counting 250.00 / 190.50")
    memory_out = ("| store | mode | peak RSS MB | tracks/s |\n|---|---|---:|---:|\n"
                  "| 1x | streamed | 586 | 9.1 |\n| 8x | streamed | 660 | 8.8 |\n"
                  "| 1x | in-memory | 653 | 10.0 |\n"
                  "streamed: peak RSS 8x store / 1x store: +12.7 %\n"
                  "in-memory: peak RSS 8x store / 1x store: +94.0 %\n"
                  "1x store: streamed / in-memory tracks/s = 1.085 (median of 3 paired rounds: "
                  "1.085, 1.020, 1.100)\n"
                  "8x store: streamed / in-memory tracks/s = 0.950 (median of 3 paired rounds: "
                  "0.899, 0.950, 0.971)\n")
    assert run_all.parse_train_memory(memory_out, None) == [
        ("training peak RSS, streamed, 8x store vs 1x (%)", "+12.7",
         "in-memory +94.0 %; peak 586 -> 660 MB"),
        ("training tracks/s, streamed / in-memory, 8x store", "0.950",
         "paired rounds 0.899, 0.950, 0.971; 1x store 1.085")]


def test_options_a_script_does_not_list_are_dropped(tmp_path):
    script = tmp_path / "bench.py"
    script.write_text("import argparse\np = argparse.ArgumentParser()\n"
                      "p.add_argument('--sizes', nargs='+')\np.parse_args()\n")
    kept = run_all.supported(script, ["--sizes", "10", "20", "--block-size", "5"])
    assert kept == ["--sizes", "10", "20"]


@pytest.mark.slow
def test_quick_suite_writes_json_and_markdown_with_a_row_per_benchmark(tmp_path):
    out = tmp_path / "bench"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout[-6000:])  # the figures, for the CI log
    report = json.loads((out / "results.json").read_text())
    names = [b.name for b in run_all.BENCHMARKS]
    assert [rec["name"] for rec in report["benchmarks"]] == names
    table = (out / "results.md").read_text()
    assert report["machine"] in table and report["date"] in table
    for rec in report["benchmarks"]:
        assert rec["rows"], rec["name"]
        # every quick benchmark runs to the end (figures are never asserted; a crash is no figure)
        assert rec["status"] == "ok", (rec, done.stdout[-3000:])
        assert f"| {rec['name']} |" in table

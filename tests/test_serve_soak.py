"""A one-minute soak of `mvpt serve` (benchmarks/soak_serve.py): mixed uploads, range reads,
previews, aborted and slow uploads against a real tiny index. Checks the bounds, never a time:
no 5xx, memory, open files and temporary files bounded, nothing left after SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak_serve.py"


@pytest.mark.slow
def test_a_one_minute_soak_stays_bounded_and_leaves_nothing(tiny_index, tmp_path):
    out = tmp_path / "soak.json"
    subprocess.run([sys.executable, str(SOAK), "--index", str(tiny_index), "--duration", "60",
                    "--json", str(out)], check=True, timeout=600, capture_output=True)
    figures = json.loads(out.read_text())
    statuses = figures["statuses"]
    for name in ("health", "upload", "range", "preview", "slow_upload"):
        codes = statuses.get(name, {})
        assert all(code.isdigit() and int(code) < 500 for code in codes), (name, codes)
    assert set(statuses["health"]) == {"200"} and sum(statuses["health"].values()) > 20
    assert statuses["upload"].get("200", 0) >= 1 and statuses["aborted_upload"]["aborted"] >= 5
    assert figures["open_files"]["max"] <= figures["open_files"]["start"] + 48
    assert figures["temp_mb"]["max"] < 64  # 4 queries kept, each a 10 s upload and its previews
    assert figures["rss_mb"]["max"] < figures["rss_mb"]["start"] + 2 * 4096  # two bounded workers
    assert figures["left_after_sigterm"] == []

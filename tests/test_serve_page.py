"""The page's score display (serve/static/app.js), run in Node with a stand-in for the DOM: close
cosines (0.97-0.99, as the top 10 of a real index read) must still look different."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources

import pytest

NODE = shutil.which("node")


def function_source(js: str, name: str) -> str:
    start = js.index(f"function {name}(")
    end = re.compile(r"^}\n", re.M).search(js, start).end()
    return js[start:end]


@pytest.mark.skipif(NODE is None, reason="needs Node.js")
def test_close_scores_get_bars_spread_over_the_shown_range_with_the_cosine_in_the_tooltip():
    js = resources.files("mvpt.serve").joinpath("static", "app.js").read_text()
    script = "\n".join([function_source(js, "scoreScale"), function_source(js, "showScore"), """
    const rows = [0.991, 0.988, 0.979, 0.975].map((score) => ({ score }));
    const scale = scoreScale(rows);
    const out = rows.map((row) => {
      const fill = { style: {} }, value = {}, attrs = {};
      const meter = { title: "", setAttribute: (k, v) => { attrs[k] = v; },
                      querySelector: (sel) => (sel === ".score-fill" ? fill : value) };
      showScore(meter, row.score, scale);
      return { width: parseFloat(fill.style.width), text: value.textContent, title: meter.title };
    });
    console.log(JSON.stringify(out));
    """])
    shown = json.loads(subprocess.run([NODE, "-e", script], capture_output=True, text=True,
                                      check=True).stdout)
    widths = [row["width"] for row in shown]
    assert widths[0] == pytest.approx(100) and widths[-1] == pytest.approx(8)
    assert widths == sorted(widths, reverse=True) and widths[1] - widths[2] > 40
    assert [row["text"] for row in shown] == ["best", "−0.003", "−0.012", "−0.016"]
    assert "cosine similarity 0.9790" in shown[2]["title"]

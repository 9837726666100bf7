"""The public Python API: every name is what it says on every access, and the README's notebook
example runs as written."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import mvpt

README = Path(__file__).resolve().parents[1] / "README.md"
API = {"extract": "mvpt.extract", "train": "mvpt.train", "evaluate": "mvpt.eval",
       "index": "mvpt.index", "build_index": "mvpt.index", "open_index": "mvpt.index",
       "recommend": "mvpt.recommend", "load_run": "mvpt.run", "Run": "mvpt.run",
       "FeatureStore": "mvpt.store", "run_demo": "mvpt.demo"}


def test_every_api_name_is_exported_and_never_a_module():
    assert set(API) <= set(mvpt.__all__)
    first = {name: getattr(mvpt, name) for name in API}
    for name, module in API.items():
        importlib.import_module(module)  # as the CLI's code path does
        again = getattr(mvpt, name)
        assert not isinstance(again, types.ModuleType), name
        assert callable(again) and again is first[name], name
    assert mvpt.index is sys.modules["mvpt.index"].build_index


def test_api_after_the_cli_imported_its_modules_first():
    """A fresh interpreter in which the command modules (and through them the stage modules)
    are imported before the package attributes are first read."""
    probe = (
        "import importlib, types\n"
        "from mvpt.cli import build_parser\n"
        "build_parser()\n"
        "for m in ('mvpt.extract', 'mvpt.train', 'mvpt.index', 'mvpt.recommend', 'mvpt.eval'):\n"
        "    importlib.import_module(m)\n"
        "import mvpt\n"
        "names = ['extract', 'train', 'evaluate', 'index', 'recommend', 'load_run']\n"
        "bad = [n for n in names if isinstance(getattr(mvpt, n), types.ModuleType)]\n"
        "print('modules:', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "modules: []"


def notebook_code() -> str:
    text = README.read_text()
    found = re.search(r"<!-- notebook -->\s*```python\n(.*?)```", text, re.S)
    assert found, "README has no notebook example"
    return found.group(1)


@pytest.mark.slow
def test_readme_notebook_example_runs_and_each_call_works_twice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(notebook_code(), "README notebook", "exec"), namespace)  # noqa: S102
    hits, run, data = namespace["hits"], namespace["run"], namespace["data"]
    assert len(hits) == 3 and all(Path(h.source_path).is_absolute() for h in hits)
    # Each API function a second time, in the same process.
    again = mvpt.extract([data.manifest_path], "nb/store", progress=False)
    assert again.skipped == again.total and again.done == 0
    mvpt.train("nb/store", "nb/runs/mlp2", model="mlp", epochs=1, progress=False)
    assert mvpt.load_run("nb/runs/mlp2").max_clips == run.max_clips
    first = mvpt.evaluate(run, "nb/store", level="track")
    assert mvpt.evaluate("nb/runs/mlp", "nb/store", level="track")["metrics"] == first["metrics"]
    summary = mvpt.index(run, data.paths[:6], "nb/library", progress=False)
    assert summary.added_items == [] and summary.items == 6
    assert mvpt.open_index("nb/library").n_items == 6
    assert [h.item_id for h in mvpt.recommend("nb/library", data.paths[0], top=3).hits] == [
        h.item_id for h in hits]
    assert mvpt.FeatureStore.open("nb/store").rows()["source_path"].map(os.path.isabs).all()

"""Analysis tools of appendix C: the human study kit, the same-genre baseline, the length-shortcut
control and the media manipulations of figure 12.

Every analysis writes into one output folder: ``NAME.json`` (the numbers), ``NAME.md`` (a markdown
summary) and, where a curve or bars say something, ``NAME.png``. :func:`write_report` does that.
"""

from __future__ import annotations

from pathlib import Path

from mvpt.fileio import atomic_path, atomic_write_bytes, atomic_write_json


def write_report(out_dir, *, name: str, data: dict, markdown: str, figure=None) -> dict:
    """Write ``data`` as ``NAME.json``, ``markdown`` as ``NAME.md`` and the matplotlib ``figure``
    (when given) as ``NAME.png`` into ``out_dir``; returns {kind: path} of what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "markdown": out / f"{name}.md"}
    atomic_write_json(paths["json"], data)
    atomic_write_bytes(paths["markdown"], (markdown.rstrip() + "\n").encode())
    if figure is not None:
        paths["png"] = out / f"{name}.png"
        with atomic_path(paths["png"]) as tmp:
            figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(figure)
    return {kind: str(path) for kind, path in paths.items()}


def new_figure(*, width: float = 5.0, height: float = 3.5):
    """A headless matplotlib (figure, axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))

"""`mvpt analyze all RUN STORE`: every analysis of appendix C that the inputs allow, into one
folder, and one HTML page (``report.html``) with every figure and table.

Each analysis writes its own ``NAME.json``, ``NAME.md`` and ``NAME.png`` there, exactly as its
own subcommand would. An analysis whose inputs are missing (pictures of attribute classes,
multitrack songs, study answers, genre labels, baseline runs) is listed as skipped with the
reason; one that fails is listed as failed with its one-line error, and the others go on.
``report.json`` records the status of every analysis.

The page is self-contained: plain HTML and CSS, figures referenced by relative path, no
script and no external request, so the folder can be copied or zipped as it is.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mvpt.errors import MvptError, UsageError
from mvpt.fileio import atomic_write_bytes, atomic_write_json
from mvpt.run import Run

QUICK_RATES = (0.5, 0.75, 1.0, 1.25, 1.5)


class Skip(Exception):
    """An analysis the inputs do not allow; the message says what is missing."""


@dataclass
class Inputs:
    """What ``analyze all`` was given. Only ``run`` and ``store`` are required."""

    run: Path | Run  # loaded once by run_all
    store: Path
    out: Path
    baselines: list[Path] = field(default_factory=list)
    genres: str | None = None  # CSV / parquet / synthetic data folder; default the store's
    images: Path | None = None  # IMAGES_DIR/CLASS/*.png for the attribute matrix
    songs: Path | None = None  # MedleyDB-layout folder for the conditioning study
    instrument: str | None = None
    instrument_images: Path | None = None
    videos: list[Path] = field(default_factory=list)  # query videos of the conditioning study
    study_key: Path | None = None
    study_responses: list[Path] = field(default_factory=list)
    split: str = "test"
    seed: int = 0
    quick: bool = False  # small settings (CI, a first look)
    max_items: int | None = None  # manipulation curves: first N items of the split
    tagged_genres: dict | None = None  # YAMNet's relative tags when the store had none


# ------------------------------------------------------------------------------ the analyses
def _genre_source(inputs: Inputs):
    """The genre labels: ``--genres``, else the store's annotation, else tags made here from the
    store's YAMNet scores (relative tagging, once per report); Skip when none can be had."""
    from mvpt.analysis.attributes import load_genres

    if inputs.genres:
        try:
            labels = load_genres(inputs.genres)
        except MvptError as exc:
            raise Skip(f"no genre labels ({exc})")
        if not labels:
            raise Skip(f"no genre labels in {inputs.genres}")
        return labels
    try:
        labels = load_genres(inputs.store)
    except MvptError:
        labels = None
    return labels or _tag_genres(inputs)


def _tag_genres(inputs: Inputs) -> dict:
    from mvpt.data.genres import yamnet_genres

    if inputs.tagged_genres is None:
        try:
            inputs.tagged_genres = yamnet_genres(inputs.store, relative=True)
        except MvptError as exc:
            raise Skip(f"no genre labels in the store and none could be tagged ({exc}); run "
                       "`mvpt data genres STORE` or pass --genres")
    return inputs.tagged_genres


def _shortcut(inputs: Inputs) -> list[str]:
    from mvpt.analysis.shortcut import shortcut_control, write_shortcut_report

    runs = [inputs.run, *inputs.baselines]  # the main run loaded, baselines as folders
    result = shortcut_control(runs, inputs.store, split=inputs.split, seed=inputs.seed)
    return list(write_shortcut_report(result, inputs.out).values())


def _same_genre(inputs: Inputs) -> list[str]:
    from mvpt.analysis.same_genre import evaluate_same_genre, write_same_genre_report

    labels = _genre_source(inputs)
    results = evaluate_same_genre(inputs.store, genres=labels, split=inputs.split,
                                  n_trials=20 if inputs.quick else 100, seed=inputs.seed)
    return list(write_same_genre_report(results, inputs.out).values())


def _manipulation(attribute: str) -> Callable[[Inputs], list[str]]:
    def run(inputs: Inputs) -> list[str]:
        from mvpt.analysis.manipulate import (
            DEFAULT_RATES,
            manipulation_curve,
            write_curve_report,
        )

        rates = QUICK_RATES if inputs.quick else DEFAULT_RATES
        result = manipulation_curve(inputs.run, inputs.store, attribute=attribute, rates=rates,
                                    split=inputs.split, max_items=inputs.max_items)
        return list(write_curve_report(result, inputs.out).values())

    return run


def _tsne(inputs: Inputs) -> list[str]:
    from mvpt.analysis.tsne import tsne_analysis, write_tsne_report

    labels = _genre_source(inputs)
    result = tsne_analysis(inputs.run, inputs.store, genres=labels, split=inputs.split,
                           seed=inputs.seed, max_points=500 if inputs.quick else None)
    return list(write_tsne_report(result, inputs.out).values())


def _attributes(inputs: Inputs) -> list[str]:
    from mvpt.analysis.attributes import attribute_genre_matrix, write_attributes_report

    if inputs.images is None:
        raise Skip("no pictures of attribute classes (--images DIR with one folder per class)")
    labels = _genre_source(inputs)
    result = attribute_genre_matrix(inputs.run, inputs.store, inputs.images, genres=labels,
                                    split=inputs.split, seed=inputs.seed)
    return list(write_attributes_report(result, inputs.out).values())


def _conditioning(inputs: Inputs) -> list[str]:
    from mvpt.analysis.conditioning import conditioning_analysis, write_conditioning_report

    missing = [flag for flag, value in (("--songs DIR", inputs.songs),
                                        ("--instrument NAME", inputs.instrument),
                                        ("--instrument-images DIR", inputs.instrument_images),
                                        ("--videos VIDEO...", inputs.videos)) if not value]
    if missing:
        raise Skip(f"the conditioning study needs {', '.join(missing)} (multitrack songs in "
                   "MedleyDB's layout, pictures of the instrument and query videos)")
    result = conditioning_analysis(inputs.run, inputs.songs, inputs.videos,
                                   images=inputs.instrument_images, instrument=inputs.instrument,
                                   out_dir=inputs.out)
    return list(write_conditioning_report(result, inputs.out).values())


def _qualitative(inputs: Inputs) -> list[str]:
    from mvpt.analysis.qualitative import qualitative_analysis, write_qualitative_report

    labels = _genre_source(inputs)
    result = qualitative_analysis(inputs.run, inputs.store, random_n=2 if inputs.quick else 5,
                                  split=inputs.split, seed=inputs.seed, genres=labels,
                                  out_dir=inputs.out)
    return list(write_qualitative_report(result, inputs.out).values())


def _study(inputs: Inputs) -> list[str]:
    from mvpt.analysis.study import analyze_responses, write_study_report

    if inputs.study_key is None or not inputs.study_responses:
        raise Skip("no human-study answers (--study-key KEY.json --study-responses FILE...); "
                   "make a study with `mvpt study make`")
    result = analyze_responses(inputs.study_responses, key=inputs.study_key)
    return list(write_study_report(result, inputs.out).values())


@dataclass(frozen=True)
class Analysis:
    name: str
    title: str
    run: Callable[[Inputs], list[str]]


ANALYSES: tuple[Analysis, ...] = (
    Analysis("shortcut", "Length-shortcut control (appendix C.6, table 4)", _shortcut),
    Analysis("same_genre", "Same-genre baseline (appendix C.3)", _same_genre),
    Analysis("manipulate_brightness", "Manipulation: brightness (figure 12)",
             _manipulation("brightness")),
    Analysis("manipulate_hue", "Manipulation: hue (figure 12)", _manipulation("hue")),
    Analysis("manipulate_tempo", "Manipulation: tempo (figure 12)", _manipulation("tempo")),
    Analysis("tsne", "t-SNE of the embeddings by genre (figure 16)", _tsne),
    Analysis("attributes", "Attribute versus genre (figures 4, 13-15)", _attributes),
    Analysis("conditioning", "Conditioning on an instrument (appendix C.1)", _conditioning),
    Analysis("qualitative", "Qualitative comparison (appendix C.4)", _qualitative),
    Analysis("study", "Human study (appendix C.2)", _study),
)


# ------------------------------------------------------------------------------ running
def find_baselines(run: Path) -> list[Path]:
    """Runs beside ``run`` (sibling folders holding a checkpoint), such as the demo's ``mlp``
    and ``linear`` next to its ``mvpt``."""
    run = Path(run)
    return sorted(p for p in run.parent.iterdir()
                  if p.is_dir() and p.resolve() != run.resolve()
                  and any((p / name).is_file() for name in ("best.pt", "last.pt")))


def run_all(inputs: Inputs, *, only: list[str] | None = None,
            progress: Callable[[str], None] | None = None) -> dict:
    """Run every analysis (or those named in ``only``) into ``inputs.out``, write
    ``report.json`` and ``report.html``; returns the report's content."""
    names = [a.name for a in ANALYSES]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise UsageError(f"unknown analyses {', '.join(unknown)}; expected some of "
                         f"{', '.join(names)}")
    inputs.out.mkdir(parents=True, exist_ok=True)
    inputs.run = Run.coerce(inputs.run)
    entries = []
    for analysis in ANALYSES:
        if only and analysis.name not in only:
            continue
        if progress:
            progress(analysis.name)
        started = time.perf_counter()
        entry = {"name": analysis.name, "title": analysis.title}
        try:
            entry.update(status="done", files=[str(Path(p).name) for p in analysis.run(inputs)])
        except Skip as exc:
            entry.update(status="skipped", reason=str(exc))
        except (MvptError, OSError, ValueError) as exc:
            entry.update(status="failed", reason=_one_line(exc))
        entry["seconds"] = round(time.perf_counter() - started, 2)
        entries.append(entry)
    report = {"run": str(inputs.run.folder), "store": str(inputs.store),
              "baselines": [str(b) for b in inputs.baselines], "split": inputs.split,
              "quick": inputs.quick, "analyses": entries}
    if inputs.tagged_genres is not None:
        report["genres"] = (f"tagged here from the store's YAMNet scores (relative), "
                            f"{len(set(inputs.tagged_genres.values()))} genres")
    atomic_write_json(inputs.out / "report.json", report)
    atomic_write_bytes(inputs.out / "report.html", render_html(report, inputs.out).encode())
    return report


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, MvptError) else f"{type(exc).__name__}: {text}"


# ------------------------------------------------------------------------------ the page
_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f5f6f8; }
header { background: #1d2330; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c5cad6; font-size: 13px; }
main { max-width: 980px; margin: 0 auto; padding: 16px 24px 48px; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 6px; }
nav li a { display: block; padding: 4px 10px; border-radius: 12px; background: #fff;
  border: 1px solid #d6dae3; color: #1d2330; text-decoration: none; font-size: 13px; }
section { background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 8px 20px 16px;
  margin: 16px 0; }
section h2 { font-size: 18px; }
.status { font-size: 12px; padding: 2px 8px; border-radius: 10px; margin-left: 8px; }
.done { background: #dff3e4; color: #17602c; } .skipped { background: #eef0f4; color: #4d5566; }
.failed { background: #fbe3e3; color: #8a1c1c; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #e1e4ea; padding: 3px 8px; }
th { background: #f0f2f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
code { background: #f0f2f6; padding: 1px 4px; border-radius: 3px; }
"""


def render_html(report: dict, out_dir: Path) -> str:
    """The report page: a header, a list of the analyses and one section each (status, the
    markdown summary as HTML, the figure)."""
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>mvpt analysis report</title>", f"<style>{_CSS}</style></head><body>",
             "<header><h1>mvpt analysis report</h1>",
             f"<p>run {html.escape(report['run'])} &middot; store {html.escape(report['store'])}"
             f" &middot; split {html.escape(str(report['split']))}</p></header><main>",
             "<nav><ul>"]
    for entry in report["analyses"]:
        parts.append(f'<li><a href="#{entry["name"]}">{html.escape(entry["title"])}</a></li>')
    parts.append("</ul></nav>")
    for entry in report["analyses"]:
        status = entry["status"]
        parts.append(f'<section id="{entry["name"]}"><h2>{html.escape(entry["title"])}'
                     f'<span class="status {status}">{status}</span></h2>')
        if status != "done":
            parts.append(f"<p>{html.escape(entry.get('reason', ''))}</p></section>")
            continue
        for name in entry["files"]:
            if name.endswith(".md"):
                parts.append(markdown_to_html((out_dir / name).read_text()))
        for name in entry["files"]:
            if name.endswith(".png"):
                parts.append(f'<img src="{html.escape(name)}" alt="{html.escape(entry["title"])}">')
        links = " &middot; ".join(f'<a href="{html.escape(n)}">{html.escape(n)}</a>'
                                  for n in entry["files"])
        parts.append(f"<p>files: {links}</p></section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


_NUMBER = re.compile(r"^[-+]?[\d.,]+%?$")


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def markdown_to_html(markdown: str) -> str:
    """The markdown our analyses write (headings, paragraphs, bullet lists, pipe tables,
    inline code and bold) as HTML; anything else comes out as escaped text."""
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
        elif line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            out.append(_table(block))
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 6)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif line.lstrip().startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith(("- ", "* ")):
                items.append(f"<li>{_inline(lines[i].lstrip()[2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while (i < len(lines) and lines[i].strip()
                   and not lines[i].lstrip().startswith(("|", "#", "- ", "* "))):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def _table(rows: list[list[str]]) -> str:
    is_rule = [all(re.fullmatch(r":?-+:?", c) for c in row if c) and any(row) for row in rows]
    head = rows[0] if len(rows) > 1 and is_rule[1] else None
    body = [r for r, rule in zip(rows, is_rule) if not rule and r is not head]
    cells = []
    if head:
        cells.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
    for row in body:
        cells.append("<tr>" + "".join(
            f'<td class="num">{_inline(c)}</td>' if _NUMBER.match(c) else f"<td>{_inline(c)}</td>"
            for c in row) + "</tr>")
    return "<table>" + "".join(cells) + "</table>"


def load_report(out_dir) -> dict:
    """``report.json`` of a finished ``analyze all``."""
    path = Path(out_dir) / "report.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: no readable report ({exc})") from None

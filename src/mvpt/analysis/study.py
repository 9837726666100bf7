"""Human study kit (appendix C.2): blind pairwise preference pages and their binomial test.

Input: two recommendation files, one per model (``ours`` and the ``baseline``), each a JSON object
``{"video_to_music": {QUERY_ID: TOP1_ID, ...}, "music_to_video": {QUERY_ID: TOP1_ID, ...}}``: for
every held-out query, that model's top-1 candidate. Ids name media through two templates relative
to the output folder (``video_path="media/{id}.mp4"``, ``audio_path="media/{id}.mp4"`` by default).

:func:`make_study` keeps the queries where the two models disagree, deals each participant
``n_per_task`` *different* queries per task (no query is shown twice), puts our result on side A for
exactly half (rounded) of each participant's pairs of a task in random order, and writes one static
page per participant (plain HTML/JS, no network requests) plus ``key.json``, which says on which
side ours is and never goes into a page. A video-to-music clip plays the query video muted with a
candidate music; a music-to-video clip plays a candidate video muted with the query music.

The page saves ``{"study", "participant", "choices": [{"pair", "task", "choice": "A"|"B"}]}`` as a
JSON download. :func:`analyze_responses` counts, per task, how often ours was chosen and tests it
with a one-sided binomial test against 1/2 (:func:`preference_test`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from mvpt.errors import UsageError
from mvpt.fileio import atomic_write_bytes, atomic_write_json

TASKS = ("video_to_music", "music_to_video")
SIDES = ("A", "B")


# ---------------------------------------------------------------------------- pairs
def load_recommendations(path) -> dict[str, dict[str, str]]:
    """Read a recommendation file (see the module docstring), checking its shape."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read recommendations JSON: {exc}") from None
    if not isinstance(data, dict) or not any(task in data for task in TASKS):
        raise UsageError(f"{path}: expected an object with keys {TASKS}")
    out = {}
    for task in TASKS:
        table = data.get(task, {})
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise UsageError(f"{path}: {task} must map query ids to one candidate id each")
        out[task] = {str(k): v for k, v in table.items()}
    return out


def build_pairs(ours: dict, baseline: dict, *, participants: int, n_per_task: int = 20,
                seed: int = 0) -> list[dict]:
    """Pairs ``{"pair", "participant", "task", "query", "ours", "baseline", "ours_side"}``:
    ``n_per_task`` distinct queries per task for each participant, where the models disagree."""
    if participants < 1 or n_per_task < 1:
        raise UsageError(f"participants and n_per_task must be >= 1, got {participants}, "
                         f"{n_per_task}")
    rng = np.random.default_rng(seed)
    pairs = []
    for task in TASKS:
        queries = sorted(q for q in ours[task] if q in baseline[task]
                         and ours[task][q] != baseline[task][q])
        need = participants * n_per_task
        if len(queries) < need:
            raise UsageError(f"{task}: {len(queries)} queries where the models disagree, need "
                             f"{need} ({participants} participants x {n_per_task})")
        order = [queries[i] for i in rng.permutation(len(queries))[:need]]
        for p in range(participants):
            chunk = order[p * n_per_task:(p + 1) * n_per_task]
            sides = np.array([SIDES[i % 2] for i in range(n_per_task)])[rng.permutation(n_per_task)]
            for j, (query, side) in enumerate(zip(chunk, sides)):
                pairs.append({"pair": f"p{p + 1:02d}-{task}-{j + 1:02d}",
                              "participant": f"p{p + 1:02d}", "task": task, "query": query,
                              "ours": ours[task][query], "baseline": baseline[task][query],
                              "ours_side": str(side)})
    return pairs


def clip_media(pair: dict, side: str, *, video_path: str, audio_path: str) -> dict:
    """{"video", "audio"} relative paths played on ``side`` of ``pair``."""
    shown = pair["ours"] if pair["ours_side"] == side else pair["baseline"]
    video_id, audio_id = ((pair["query"], shown) if pair["task"] == "video_to_music"
                          else (shown, pair["query"]))
    return {"video": video_path.format(id=video_id), "audio": audio_path.format(id=audio_id)}


def top1_recommendations(run_dir, store_path, *, split: str = "test", which: str = "best",
                         embed_fn=None, exclude_own: bool = True) -> dict:
    """A recommendation dict (see the module docstring) from a run: for every track of ``split``
    (its centred window), the most similar track of the other modality. ``exclude_own`` leaves
    out the query's own pair, which a participant would recognise as the original."""
    from mvpt.eval import gather_windows, track_windows
    from mvpt.run import embedder_for
    from mvpt.store import FeatureStore

    store = FeatureStore.open(store_path)
    embed, max_clips = embedder_for(run_dir, store, which=which, embed_fn=embed_fn)
    features = store.load(split=split, arrays=("video", "audio"))
    windows = track_windows(features.n_clips,
                            max_clips=max_clips)
    if len(windows[0]) < 2:
        raise UsageError(f"{store_path}: need at least 2 tracks in split {split!r}")
    ids = [features.ids[i] for i in windows[0]]
    video = np.asarray(embed("video", gather_windows(features, "video", windows)), np.float64)
    music = np.asarray(embed("audio", gather_windows(features, "audio", windows)), np.float64)
    out = {}
    for task, sims in (("video_to_music", video @ music.T), ("music_to_video", music @ video.T)):
        if exclude_own:
            np.fill_diagonal(sims, -np.inf)
        out[task] = {ids[i]: ids[j] for i, j in enumerate(np.argmax(sims, axis=1))}
    return out


# ---------------------------------------------------------------------------- pages
def make_study(ours, baseline, out_dir, *, participants: int, n_per_task: int = 20,
               seed: int = 0, video_path: str = "media/{id}.mp4",
               audio_path: str = "media/{id}.mp4", study: str = "mvpt-study") -> dict:
    """Write ``participant_NN.html`` per participant, ``key.json`` and ``index.html`` into
    ``out_dir``; ``ours``/``baseline`` are recommendation dicts or file paths. Returns the key."""
    ours = ours if isinstance(ours, dict) else load_recommendations(ours)
    baseline = baseline if isinstance(baseline, dict) else load_recommendations(baseline)
    pairs = build_pairs(ours, baseline, participants=participants, n_per_task=n_per_task,
                        seed=seed)
    out = Path(out_dir)
    names = sorted({p["participant"] for p in pairs})
    for name in names:
        shown = [{"pair": p["pair"], "task": p["task"],
                  **{side: clip_media(p, side, video_path=video_path, audio_path=audio_path)
                     for side in SIDES}}
                 for p in pairs if p["participant"] == name]
        page = _page(study=study, participant=name, pairs=shown)
        atomic_write_bytes(out / f"participant_{name[1:]}.html", page.encode())
    links = "\n".join(f'<li><a href="participant_{n[1:]}.html">{n}</a></li>' for n in names)
    atomic_write_bytes(out / "index.html", f"<!doctype html><meta charset='utf-8'><title>"
                       f"{html.escape(study)}</title><ul>\n{links}\n</ul>\n".encode())
    key = {"study": study, "seed": seed, "n_per_task": n_per_task, "pairs": pairs}
    atomic_write_json(out / "key.json", key)
    return key


def _page(*, study: str, participant: str, pairs: list[dict]) -> str:
    data = json.dumps({"study": study, "participant": participant, "pairs": pairs})
    data = data.replace("</", "<\\/")
    return _PAGE.replace("__TITLE__", html.escape(f"{study} - {participant}")).replace(
        "__DATA__", data)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>__TITLE__</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:auto}
.clips{display:flex;gap:1em}.clip{flex:1;text-align:center}video{width:100%}
button{font-size:1.1em;margin:.3em}</style></head>
<body><h1>Which clip fits its music and video best?</h1>
<p id="progress"></p><p id="task"></p>
<div class="clips">
<div class="clip"><h2>A</h2><video id="vA" muted playsinline></video><audio id="aA"></audio>
<br><button onclick="play('A')">Play A</button><button onclick="choose('A')">A fits better</button></div>
<div class="clip"><h2>B</h2><video id="vB" muted playsinline></video><audio id="aB"></audio>
<br><button onclick="play('B')">Play B</button><button onclick="choose('B')">B fits better</button></div>
</div>
<p><button id="save" onclick="save()" disabled>Download my answers</button></p>
<script>
const DATA = __DATA__;
const choices = [];
let i = 0;
function stopAll(){for(const s of "AB"){document.getElementById("v"+s).pause();
  document.getElementById("a"+s).pause();}}
function show(){
  stopAll();
  const done = i >= DATA.pairs.length;
  document.getElementById("progress").textContent = done ? "All done, thank you." :
    `Pair ${i + 1} of ${DATA.pairs.length}`;
  document.getElementById("save").disabled = !done;
  if (done) return;
  const p = DATA.pairs[i];
  document.getElementById("task").textContent = p.task === "video_to_music" ?
    "Same video, two musics." : "Same music, two videos.";
  for (const s of "AB"){document.getElementById("v"+s).src = p[s].video;
    document.getElementById("a"+s).src = p[s].audio;}
}
function play(s){stopAll(); const v = document.getElementById("v"+s),
  a = document.getElementById("a"+s); v.currentTime = 0; a.currentTime = 0; v.play(); a.play();}
function choose(s){if (i >= DATA.pairs.length) return;
  const p = DATA.pairs[i]; choices.push({pair: p.pair, task: p.task, choice: s}); i += 1; show();}
function save(){
  const blob = new Blob([JSON.stringify({study: DATA.study, participant: DATA.participant,
    choices: choices}, null, 1)], {type: "application/json"});
  const link = document.createElement("a"); link.href = URL.createObjectURL(blob);
  link.download = `${DATA.study}-${DATA.participant}.json`; link.click();
}
show();
</script></body></html>
"""


# ---------------------------------------------------------------------------- analysis
def preference_test(*, wins: int, total: int) -> dict:
    """{"wins", "total", "fraction", "p_value"}: one-sided binomial test that ours is preferred
    more often than 1/2 (``scipy.stats.binomtest(..., alternative="greater")``)."""
    if total < 1 or not 0 <= wins <= total:
        raise UsageError(f"need 0 <= wins <= total and total >= 1, got {wins} of {total}")
    from scipy.stats import binomtest

    result = binomtest(int(wins), int(total), 0.5, alternative="greater")
    return {"wins": int(wins), "total": int(total), "fraction": wins / total,
            "p_value": float(result.pvalue)}


def analyze_responses(response_paths, *, key) -> dict:
    """Per task, how often the participants chose ours (from ``key``, a dict or ``key.json``),
    with :func:`preference_test`; answers to unknown pairs or repeated pairs are errors."""
    response_paths = list(response_paths)
    key = key if isinstance(key, dict) else json.loads(Path(key).read_text())
    sides = {p["pair"]: p for p in key["pairs"]}
    seen: set[str] = set()
    wins = {task: 0 for task in TASKS}
    totals = {task: 0 for task in TASKS}
    for path in response_paths:
        for choice in _read_response(path, study=key["study"]):
            pair = sides.get(choice.get("pair"))
            if pair is None or choice.get("choice") not in SIDES:
                raise UsageError(f"{path}: answer {choice!r} does not match the study key")
            if pair["pair"] in seen:
                raise UsageError(f"{path}: pair {pair['pair']} answered twice")
            seen.add(pair["pair"])
            totals[pair["task"]] += 1
            wins[pair["task"]] += choice["choice"] == pair["ours_side"]
    tasks = {task: preference_test(wins=wins[task], total=totals[task])
             for task in TASKS if totals[task]}
    if not tasks:
        raise UsageError("no answers in the response files")
    return {"study": key["study"], "n_files": len(response_paths), "tasks": tasks}


def _read_response(path, *, study: str) -> list[dict]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read response JSON: {exc}") from None
    if data.get("study") != study or not isinstance(data.get("choices"), list):
        raise UsageError(f"{path}: not a response of study {study!r}")
    return data["choices"]


def summary_markdown(result: dict) -> str:
    """A markdown table of :func:`analyze_responses`' output."""
    lines = [f"Study {result['study']}: one-sided binomial test, H0 p = 0.5", "",
             "| task | ours preferred | total | % | p-value |", "|---|---:|---:|---:|---:|"]
    for task, t in result["tasks"].items():
        lines.append(f"| {task} | {t['wins']} | {t['total']} | {100 * t['fraction']:.1f} | "
                     f"{t['p_value']:.3g} |")
    return "\n".join(lines)


def write_study_report(result: dict, out_dir) -> dict:
    """``study.json``, ``study.md`` and a bar chart ``study.png`` of the preference fractions."""
    from mvpt.analysis import new_figure, write_report

    fig, ax = new_figure()
    tasks = list(result["tasks"])
    ax.bar(range(len(tasks)), [100 * result["tasks"][t]["fraction"] for t in tasks])
    ax.axhline(50, color="gray", linestyle="--", label="no preference")
    ax.set_xticks(range(len(tasks)), [t.replace("_", " ") for t in tasks])
    ax.set_ylabel("ours preferred (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    return write_report(out_dir, name="study", data=result, markdown=summary_markdown(result),
                        figure=fig)

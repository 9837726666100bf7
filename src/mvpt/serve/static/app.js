// The mvpt page: upload a video, show the ranked tracks, play them from their offsets, preview.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { video: null, conditions: [], maxUploadMb: null, busy: false, localUrl: null, answered: false };

function mmss(seconds) {
  const s = Math.max(0, Math.floor(seconds));  // as media controls show time
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setProgress({ text, percent = null, spinning = false, visible = true }) {
  $("progress").hidden = !visible;
  $("progress-text").textContent = text || "";
  $("spinner").hidden = !spinning;
  const bar = $("upload-progress");
  if (percent === null) bar.removeAttribute("value"); else bar.value = percent;
}

function setBusy(busy) {
  state.busy = busy;
  $("submit-button").disabled = busy || !state.video;
  $("query-form").setAttribute("aria-busy", String(busy));
}

// ------------------------------------------------------------------------ choosing the files
function chooseVideo(file) {
  if (!file) return;
  showError("");
  if (state.maxUploadMb !== null && file.size > state.maxUploadMb * 2 ** 20) {
    showError(`“${file.name}” is ${(file.size / 2 ** 20).toFixed(0)} MB; the server accepts up to ${state.maxUploadMb} MB.`);
    return;
  }
  state.video = file;
  $("video-name").textContent = `${file.name} · ${(file.size / 2 ** 20).toFixed(1)} MB`;
  $("drop-zone").classList.add("has-file");
  if (state.localUrl) URL.revokeObjectURL(state.localUrl);
  state.localUrl = URL.createObjectURL(file);
  const player = $("preview");
  player.src = state.localUrl;
  $("preview-caption").textContent = "Your video, with its own sound. Pick a track to hear it under the picture.";
  setBusy(state.busy);
}

function chooseConditions(files) {
  state.conditions = Array.from(files || []);
  const thumbs = $("condition-thumbs");
  thumbs.replaceChildren(...state.conditions.map((file) => {
    const img = document.createElement("img");
    img.src = URL.createObjectURL(file);
    img.alt = file.name;
    img.onload = () => URL.revokeObjectURL(img.src);
    return img;
  }));
}

function wireDropZone() {
  const zone = $("drop-zone");
  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("dragging")));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    chooseVideo(event.dataTransfer.files[0]);
  });
}

// ------------------------------------------------------------------------------- the query
function buildForm() {
  const form = new FormData();
  form.append("video", state.video, state.video.name);
  form.append("top", $("top-input").value || "10");
  form.append("strength", $("strength-input").value);
  state.conditions.forEach((file) => form.append("condition", file, file.name));
  return form;
}

function postQuery(form) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/recommend");
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) {
        const percent = Math.round((100 * event.loaded) / event.total);
        setProgress({ text: `Uploading… ${percent}%`, percent });
      }
    };
    xhr.upload.onload = () => setProgress({ text: "Finding music that fits…", spinning: true });
    xhr.onload = () => {
      const body = xhr.response;
      if (xhr.status >= 200 && xhr.status < 300 && body) resolve(body);
      else reject(new Error((body && body.error) || `The server answered ${xhr.status}.`));
    };
    xhr.onerror = () => reject(new Error("Could not reach the server. Is `mvpt serve` still running?"));
    xhr.send(form);
  });
}

async function runQuery(event) {
  if (event) event.preventDefault();
  if (!state.video || state.busy) return;
  showError("");
  setBusy(true);
  setProgress({ text: "Uploading… 0%", percent: 0 });
  try {
    const answer = await postQuery(buildForm());
    showResults(answer);
    state.answered = true;
    setProgress({ visible: false });
    $("submit-button").textContent = "Run again";
  } catch (error) {
    setProgress({ visible: false });
    showError(error.message);
  } finally {
    setBusy(false);
  }
}

// Once there are results, changing the attribute images or the strength ranks again.
function requeryIfSteered() {
  if (state.answered && state.conditions.length) runQuery();
}

// ----------------------------------------------------------------------------- the results
function showResults(answer) {
  const list = $("results");
  const rows = answer.results || [];
  const scale = scoreScale(rows);
  list.replaceChildren(...rows.map((row) => resultItem(row, scale)));
  $("results-empty").textContent = rows.length ? "" : "The index returned no tracks.";
  $("results-empty").hidden = rows.length > 0;
  list.setAttribute("aria-label", `${rows.length} tracks for ${answer.query}`);
}

// Cosines of the top tracks often differ only in the second decimal, so the bar spans the shown
// range: full for the best, short for the last; the text is the gap to the best, the raw cosine
// is in the tooltip.
function scoreScale(rows) {
  const scores = rows.map((row) => Number(row.score)).filter(Number.isFinite);
  const high = scores.length ? Math.max(...scores) : 1;
  const low = scores.length ? Math.min(...scores) : 0;
  return { high, low };
}

function showScore(meter, score, { high, low }) {
  const relative = high > low ? (score - low) / (high - low) : 1;
  const gap = high - score;
  const text = gap < 0.0005 ? "best" : `−${gap.toFixed(3)}`;
  meter.setAttribute("aria-valuenow", relative.toFixed(3));
  meter.setAttribute("aria-valuetext", `${text}; cosine similarity ${score.toFixed(4)}`);
  meter.setAttribute("aria-label", `Match: ${text} (cosine ${score.toFixed(3)})`);
  meter.title = `cosine similarity ${score.toFixed(4)}; ${gap < 0.0005 ? "the best match" : `${gap.toFixed(4)} below the best`}`;
  meter.querySelector(".score-fill").style.width = `${(0.08 + 0.92 * relative) * 100}%`;
  meter.querySelector(".score-value").textContent = text;
}

function resultItem(row, scale) {
  const item = $("result-template").content.firstElementChild.cloneNode(true);
  const offset = Number(row.offset_s) || 0;
  item.dataset.rank = row.rank;
  item.querySelector(".rank").textContent = row.rank;
  item.querySelector(".title").textContent = row.title || row.item_id;
  item.querySelector(".offset").textContent = `best part from ${mmss(offset)}` +
    (row.end_s != null ? ` to ${mmss(row.end_s)}` : "");
  showScore(item.querySelector(".score"), Number(row.score), scale);
  const audio = item.querySelector("audio");
  audio.setAttribute("aria-label", `${row.title || row.item_id}, from ${mmss(offset)}`);
  audio.src = `${row.audio_url}#t=${offset.toFixed(2)}`;
  audio.addEventListener("loadedmetadata", () => {
    if (Math.abs(audio.currentTime - offset) > 0.25) audio.currentTime = offset;
  }, { once: true });
  audio.addEventListener("play", () => pauseOthers(audio));
  const button = item.querySelector(".preview-button");
  button.setAttribute("aria-label", `Preview your video with ${row.title || row.item_id}`);
  button.addEventListener("click", () => playPreview(row, item));
  return item;
}

function pauseOthers(playing) {
  document.querySelectorAll("audio, video").forEach((media) => {
    if (media !== playing && !media.paused) media.pause();
  });
}

function playPreview(row, item) {
  const player = $("preview");
  document.querySelectorAll(".result.current").forEach((el) => el.classList.remove("current"));
  item.classList.add("current");
  showError("");
  $("preview-caption").textContent = `Making the preview with “${row.title}” from ${mmss(row.offset_s)}…`;
  player.onerror = () => previewFailed(row);
  player.oncanplay = () => {
    $("preview-caption").textContent = `Your video with “${row.title}” from ${mmss(row.offset_s)} (rank ${row.rank}).`;
  };
  player.src = row.preview_url;
  pauseOthers(player);
  player.play().catch(() => { /* an error event tells the user */ });
  player.scrollIntoView({ behavior: "smooth", block: "nearest" });
}

async function previewFailed(row) {
  let message = `The preview with “${row.title}” could not be played.`;
  try {
    const answer = await fetch(row.preview_url, { headers: { Range: "bytes=0-0" } });
    if (!answer.ok) message = (await answer.json()).error || message;
  } catch (_) { /* keep the generic message */ }
  showError(message);
  $("preview-caption").textContent = "No preview.";
}

// ----------------------------------------------------------------------------------- start
async function loadHealth() {
  try {
    const health = await (await fetch("/api/health")).json();
    state.maxUploadMb = health.max_upload_mb ?? null;
    $("index-status").textContent = `${health.tracks} tracks in the library`;
  } catch (_) {
    $("index-status").textContent = "Server not reachable";
  }
}

function start() {
  $("video-input").addEventListener("change", (event) => chooseVideo(event.target.files[0]));
  $("condition-input").addEventListener("change", (event) => {
    chooseConditions(event.target.files);
    requeryIfSteered();
  });
  $("strength-input").addEventListener("input", (event) => {
    $("strength-value").textContent = Number(event.target.value).toFixed(2);
  });
  $("strength-input").addEventListener("change", requeryIfSteered);
  $("query-form").addEventListener("submit", runQuery);
  wireDropZone();
  loadHealth();
}

start();

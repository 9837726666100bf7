"""The web page in Debian's Chromium (Playwright, headless) against a real uvicorn server.

Skipped, with the reason, where /usr/bin/chromium or Playwright is missing (CI installs both:
``apt-get install chromium``, ``pip install playwright``; never ``playwright install``).
The screenshots land under tmp_path and are copied to tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
WAIT_MS = 60_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def library(demo, tmp_path_factory) -> Path:
    """A creator's folder, as the README has them type it: music files in ``music/``, then
    ``mvpt index RUN music --out library`` run from that folder with relative arguments."""
    folder = tmp_path_factory.mktemp("creator")
    (folder / "music").mkdir()
    for video in sorted((Path(demo["data"]).parent / "videos").glob("*.mp4"))[:6]:
        shutil.copyfile(video, folder / "music" / video.name)
    res = subprocess.run([sys.executable, "-m", "mvpt.cli", "index", demo["runs"]["mvpt"],
                          "music", "--out", "library", "--no-progress"],
                         cwd=folder, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return folder


def serve(cwd: Path, index_arg: str):
    """``mvpt serve INDEX_ARG --port P`` started in ``cwd``; (url, process) once it answers."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mvpt.cli", "serve", index_arg, "--port",
                             str(port)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"mvpt serve did not start: {proc.communicate()[0][-2000:]}")


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module", params=["same folder", "another folder"])
def server_url(request, library):
    """``mvpt serve library`` from the creator's folder, and ``mvpt serve ../creator/library``
    from a sibling folder: media paths must resolve either way."""
    if request.param == "same folder":
        cwd, index_arg = library, "library"
    else:
        cwd = library.parent / "elsewhere"
        cwd.mkdir(exist_ok=True)
        index_arg = os.path.relpath(library / "library", cwd)
    url, proc = serve(cwd, index_arg)
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def query_video(tmp_path_factory) -> Path:
    from mvpt.data.synth import generate_video

    folder = tmp_path_factory.mktemp("query")
    factors = generate_video(folder, index=3, seed=5, duration_s=6.0, size=(320, 180))
    return folder / "videos" / f"{factors['id']}.mp4"


@pytest.fixture
def page(browser, server_url):
    """A 1280x800 page on the server that records console errors and every URL it requests."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.console_errors, page.requested = [], []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("request", lambda r: page.requested.append(r.url))
    page.goto(server_url)
    page.wait_for_function("() => /\\d+ tracks/.test(document.getElementById('index-status').textContent)")
    yield page
    context.close()


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=False)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / name)
    return path


def test_upload_rank_play_and_preview(page, query_video, server_url, tmp_path, request):
    page.set_input_files("#video-input", str(query_video))
    assert page.locator("#submit-button").is_enabled()
    page.click("#submit-button")
    expected = min(10, page.evaluate("() => fetch('/api/health').then(r => r.json())")["tracks"])
    page.wait_for_selector(f"#results li.result >> nth={expected - 1}", timeout=WAIT_MS)
    ranks = page.locator("#results .rank").all_text_contents()
    assert ranks == [str(rank) for rank in range(1, expected + 1)]
    assert page.locator("#error").is_hidden()

    # Each <audio> starts at its track's offset; the one with the latest offset plays from there.
    offsets = _audio_offsets(page)
    assert len(offsets) == expected
    assert all(offset >= 0 for offset in offsets)
    index = offsets.index(max(offsets))
    audio = page.locator("#results audio").nth(index)
    audio.evaluate("a => new Promise(r => a.readyState >= 1 ? r() : a.addEventListener('loadedmetadata', r))")
    page.wait_for_function("([a, t]) => Math.abs(a.currentTime - t) < 0.3", arg=[audio.element_handle(), offsets[index]])
    audio.evaluate("a => a.play()")
    page.wait_for_function("([a, t]) => !a.paused && a.currentTime > t + 1.0 && !a.error",
                           arg=[audio.element_handle(), offsets[index]], timeout=WAIT_MS)

    # The preview: the video plays, with picture and with (decoded) sound under it.
    page.locator("#results .preview-button").first.click()
    page.wait_for_function(
        "() => { const v = document.getElementById('preview');"
        " return v.src.includes('/api/previews/') && !v.paused && v.currentTime > 0.5 && !v.error"
        " && v.readyState >= 3 && v.videoWidth > 0 && v.webkitAudioDecodedByteCount > 0; }",
        timeout=WAIT_MS)
    assert page.locator("#results li.result").first.get_attribute("class").split() == ["result", "current"]
    assert "rank 1" in page.locator("#preview-caption").text_content()

    folder = request.node.callspec.params["server_url"].replace(" ", "-")
    save_screenshot(page, tmp_path, f"browser-{folder}.png")
    assert page.console_errors == []
    outside = [url for url in page.requested if not url.startswith((server_url, "blob:", "data:"))]
    assert outside == [], "the page must not reach outside the server"


def _audio_offsets(page) -> list[float]:
    """The offsets (s) each result's <audio> carries in its #t= media fragment."""
    sources = page.locator("#results audio").evaluate_all("list => list.map(a => a.getAttribute('src'))")
    return [float(src.split("#t=")[1]) for src in sources]


def test_api_errors_are_shown_in_the_page(page, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are notes, not a video\n" * 20)
    page.set_input_files("#video-input", str(fake))
    page.click("#submit-button")
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=WAIT_MS)
    assert "'notes.mp4' is not a media file" in error.text_content()
    assert page.locator("#progress").is_hidden()
    assert page.locator("#submit-button").is_enabled()


def test_narrow_screen_has_no_sideways_scroll(page, query_video, tmp_path):
    page.set_viewport_size({"width": 390, "height": 844})
    page.set_input_files("#video-input", str(query_video))
    page.click("#submit-button")
    page.wait_for_selector("#results li.result", timeout=WAIT_MS)
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1]
    boxes = [page.locator(sel).bounding_box() for sel in ("#query-title", "#preview-title", "#results-title")]
    assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]  # one column, in reading order
    save_screenshot(page, tmp_path, "browser-narrow.png")

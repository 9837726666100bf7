"""Recommend: video -> music and music -> video with offsets, conditioning on example pictures,
previews, CLI output and errors.

Uses the toy encoders and the hand-set linear run of :mod:`tests.fixtures.toy_index` (red pictures <->
low tones, green <-> mid, blue <-> high; an embedding is the normalised mean over a window).
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from mvpt.errors import MediaError
from mvpt.index import open_index
from mvpt.preview import make_preview
from mvpt.recommend import condition_queries, query_windows, recommend
from tests.fixtures.media_factory import frame_index_from_image, write_video
from tests.fixtures.toy_index import build, run_cli, write_colour_video, write_music


@pytest.fixture(scope="module")
def music_index(tmp_path_factory, linear_run, library) -> Path:
    out = tmp_path_factory.mktemp("indexes") / "music"
    build(linear_run, library, out)
    return out


@pytest.fixture(scope="module")
def green_blue_video(tmp_path_factory) -> Path:
    """10 s: green for 5 s, then blue: the mean of a mid tone and a high one."""
    return write_colour_video(tmp_path_factory.mktemp("queries") / "green-blue.mp4",
                              ["green", "blue"], section_s=5.0)


def test_video_query_finds_track_and_offset(music_index, green_blue_video):
    result = recommend(music_index, green_blue_video, top=3)
    best = result.hits[0]
    # Only low-high-mid has a window of half high, half mid tone: 15-25 s (high 15-20, mid 20-25).
    assert best.item_id == "low-high-mid" and best.score > 0.95
    assert (best.window_start_s, best.window_end_s, best.offset_s) == (15.0, 25.0, 15.0)
    assert result.hits[1].score < 0.8
    assert result.query_modality == "video" and result.index_modality == "music"
    assert result.query_windows_s == [(0.0, 10.0)] and result.query_duration_s == 10.0
    assert "0:15" in result.format_table().splitlines()[1]


def test_long_query_matches_with_its_best_window(music_index, tmp_path):
    """A 20 s query whose second half is the green-blue pattern: the offset accounts for where
    the matching query window starts (music window 15 s - query window 10 s = 5 s)."""
    video = write_colour_video(tmp_path / "q.mp4", ["orange", "orange", "green", "blue"],
                               section_s=5.0)
    best = recommend(music_index, video, top=1).hits[0]
    assert best.item_id == "low-high-mid" and best.window_start_s == 15.0
    assert best.query_start_s == 10.0 and best.offset_s == 5.0


def test_music_query_searches_a_video_index(tmp_path, linear_run):
    videos = [write_colour_video(tmp_path / f"{name}.mp4", colours)
              for name, colours in [("red-blue-green", ["red", "blue", "green"]),
                                    ("green-green", ["green", "green"]),
                                    ("blue-red", ["blue", "red"])]]
    build(linear_run, videos, tmp_path / "videos", modality="video")
    query = write_music(tmp_path / "query.m4a", ["high", "mid"], section_s=5.0)
    result = recommend(tmp_path / "videos", query, top=3)
    assert result.index_modality == "video" and result.query_modality == "music"
    best = result.hits[0]
    assert best.item_id == "red-blue-green" and (best.window_start_s, best.offset_s) == (15.0, 15.0)
    assert [h.rank for h in result.hits] == [1, 2, 3]


def test_query_windows_are_thinned_evenly(music_index):
    index = open_index(music_index)
    windows = query_windows(400, index, max_windows=32)
    assert len(windows) == 32 and windows[0] == (0, 10) and windows[-1] == (390, 10)
    assert query_windows(7, index) == [(0, 7)]


# ------------------------------------------------------------------------------ conditioning
def write_image(path: Path, rgb) -> Path:
    picture = np.zeros((24, 32, 3), np.uint8)
    picture[:] = rgb
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 32, 24, "rgb24"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def blend_index(tmp_path_factory, linear_run):
    """Tracks for a green (mid-tone) query: pure mid windows, and one track whose every window
    blends mid and high tones (the attribute "blue" pictures stand for)."""
    folder = tmp_path_factory.mktemp("blend")
    media = [write_music(folder / "mid-only.m4a", ["mid", "mid"]),
             write_music(folder / "low-mid.m4a", ["low", "mid"]),
             write_music(folder / "high-only.m4a", ["high", "high"]),
             write_music(folder / "mid-high-blend.m4a", ["mid", "high"] * 2, section_s=5.0)]
    build(linear_run, media, folder / "index")
    query = write_colour_video(folder / "green.mp4", ["green"])
    pictures = folder / "blue-pictures"
    pictures.mkdir()
    for i, shade in enumerate([(30, 30, 220), (60, 40, 200), (20, 50, 240)]):
        write_image(pictures / f"blue-{i}.png", shade)
    return folder / "index", query, pictures


def rank_of(result, item_id: str) -> int:
    return next(h.rank for h in result.hits if h.item_id == item_id)


def score_of(result, item_id: str) -> float:
    return next(h.score for h in result.hits if h.item_id == item_id)


def test_strength_zero_leaves_the_ranking_unchanged(blend_index):
    index, query, pictures = blend_index
    plain = recommend(index, query, top=4)
    zero = recommend(index, query, top=4, condition_images=[pictures], strength=0.0)
    assert zero.hits == plain.hits and zero.condition is None
    queries = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    assert condition_queries(queries, np.ones(3, np.float32), strength=0.0) is queries


def test_conditioning_on_pictures_raises_tracks_with_the_attribute(blend_index):
    index, query, pictures = blend_index
    plain = recommend(index, query, top=4)
    steered = recommend(index, query, top=4, condition_images=[pictures], strength=1.0)
    assert rank_of(plain, "mid-high-blend") >= 3
    assert rank_of(steered, "mid-high-blend") == 1
    assert steered.condition == {"images": [str(p) for p in sorted(pictures.glob("*.png"))],
                                 "strength": 1.0}
    # A little strength moves scores towards the attribute without overturning the query.
    gentle = recommend(index, query, top=4, condition_images=[pictures], strength=0.3)
    assert score_of(plain, "mid-high-blend") < score_of(gentle, "mid-high-blend") < score_of(
        steered, "mid-high-blend")
    assert score_of(gentle, "mid-only") < score_of(plain, "mid-only")
    assert gentle.hits[0].item_id in ("mid-only", "low-mid")  # still pure mid tones first


# ------------------------------------------------------------------------------ previews
def decoded_durations_s(path: Path) -> tuple[float, float, int]:
    """(video, audio) durations in seconds from decoding every frame, and the frame count."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [frame.time for frame in container.decode(stream)]
        video_s = times[-1] + 1.0 / float(stream.average_rate)
    with av.open(str(path)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
        audio_s = samples / container.streams.audio[0].rate
    return video_s, audio_s, len(times)


@pytest.mark.parametrize("container, codec", [("mp4", "aac"), ("webm", "opus")])
def test_preview_durations_match(tmp_path, container, codec):
    video = write_video(tmp_path / "v.mp4", duration_s=6.0, size=(64, 48), fps=24.0)
    music = write_music(tmp_path / "m.m4a", ["mid", "high"], section_s=5.0)
    info = make_preview(video, music, 2.0, tmp_path / f"p.{container}")
    video_s, audio_s, frames = decoded_durations_s(info.path)
    assert frames == 144 and abs(video_s - 6.0) < 0.05
    assert abs(audio_s - video_s) < 0.1
    with av.open(str(info.path)) as out:
        assert out.streams.audio[0].codec_context.name == codec
    assert info.music_audible_s == pytest.approx(6.0)


def test_preview_of_a_short_track_fades_then_silence(tmp_path):
    video = write_video(tmp_path / "v.mp4", duration_s=6.0, size=(64, 48), fps=10.0)
    music = write_music(tmp_path / "m.m4a", ["mid"], section_s=4.0)
    info = make_preview(video, music, 1.0, tmp_path / "p.mp4", fade_s=0.5)
    assert info.music_audible_s == pytest.approx(3.0) and info.duration_s == pytest.approx(6.0)
    with av.open(str(info.path)) as container:
        wave = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    rate = 48000
    level = lambda a, b: float(np.sqrt(np.mean(wave[int(a * rate):int(b * rate)] ** 2)))
    assert level(1.0, 2.0) > 0.2  # full music
    assert level(0.0, 0.05) < 0.5 * level(1.0, 2.0)  # fading in
    assert level(2.9, 3.0) < 0.5 * level(1.0, 2.0)  # fading out at the track's end
    assert level(3.5, 5.5) < 1e-3  # silence after it
    video_s, audio_s, _ = decoded_durations_s(info.path)
    assert abs(audio_s - video_s) < 0.1


def test_preview_from_a_video_offset_shows_the_right_frames(tmp_path):
    video = write_video(tmp_path / "v.mp4", duration_s=6.0, size=(64, 48), fps=10.0)
    music = write_music(tmp_path / "m.m4a", ["mid"], section_s=10.0)
    info = make_preview(video, music, 0.0, tmp_path / "p.mp4", video_start_s=2.5)
    assert info.frames == 35
    with av.open(str(info.path)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert frame_index_from_image(first) == 25


def preview_wave(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])


def level(wave: np.ndarray, a_s: float, b_s: float, rate: int = 48000) -> float:
    return float(np.sqrt(np.mean(wave[int(a_s * rate):int(b_s * rate)] ** 2)))


def dominant_hz(wave: np.ndarray, a_s: float, b_s: float, rate: int = 48000) -> float:
    part = wave[int(a_s * rate):int(b_s * rate)]
    spectrum = np.abs(np.fft.rfft(part * np.hanning(part.size)))
    return float(np.argmax(spectrum) * rate / part.size)


def test_preview_with_a_negative_offset_starts_with_silence(tmp_path):
    video = write_video(tmp_path / "v.mp4", duration_s=6.0, size=(64, 48), fps=10.0)
    music = write_music(tmp_path / "m.m4a", ["mid"], section_s=10.0)
    info = make_preview(video, music, -1.5, tmp_path / "p.mp4", fade_s=0.2)
    wave = preview_wave(info.path)
    assert level(wave, 0.0, 1.4) < 1e-3  # silence until the music enters at 1.5 s
    assert level(wave, 2.0, 5.5) > 0.2
    assert info.music_offset_s == -1.5 and info.music_audible_s == pytest.approx(4.5)


def test_hit_preview_music_enters_late_when_its_window_starts_earlier(tmp_path):
    """The best music window starts 1 s into its track, the best video window 4 s into the
    video: the preview plays the music from its start, entering 3 s into the video, so the two
    windows line up (the offset is not clamped to 0)."""
    from mvpt.index import WindowHit
    from mvpt.recommend import Recommendation, write_hit_preview

    video = write_video(tmp_path / "v.mp4", duration_s=8.0, size=(64, 48), fps=10.0)
    music = write_music(tmp_path / "m.m4a", ["mid", "high"], section_s=2.0)  # mid 0-2 s, high 2-4+
    hit = WindowHit(rank=1, item_id="m", title="m", source_path=str(music), score=1.0,
                    offset_s=0.0, window_start_s=1.0, window_end_s=3.0, query_start_s=4.0,
                    query_end_s=6.0, item_duration_s=4.0)
    result = Recommendation(query_path=str(video), query_modality="video", index_path="i",
                            index_modality="music", query_duration_s=8.0,
                            query_windows_s=[(4.0, 6.0)], hits=[hit])
    wave = preview_wave(write_hit_preview(result, hit, tmp_path / "p.mp4"))
    assert level(wave, 0.0, 2.9) < 1e-3
    assert dominant_hz(wave, 3.6, 4.9) == pytest.approx(800, abs=20)  # music 0.6-1.9 s: mid
    assert dominant_hz(wave, 5.1, 6.9) == pytest.approx(3200, abs=20)  # music 2.1-3.9 s: high


def test_recommend_writes_a_preview(music_index, green_blue_video, tmp_path):
    result = recommend(music_index, green_blue_video, top=2, preview=tmp_path / "best.webm")
    video_s, audio_s, _ = decoded_durations_s(Path(result.preview_path))
    assert abs(video_s - 10.0) < 0.15 and abs(audio_s - video_s) < 0.1


# ------------------------------------------------------------------------------ CLI
def test_cli_json_output_shape(music_index, green_blue_video, tmp_path, capsys):
    done = run_cli(capsys, "recommend", music_index, green_blue_video, "--top", "2", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {"query_path", "query_modality", "index_path", "index_modality", "query_duration_s",
            "query_windows_s", "hits", "condition", "preview_path"} <= set(out)
    assert len(out["hits"]) == 2 and out["hits"][0]["item_id"] == "low-high-mid"
    assert set(out["hits"][0]) == {
        "rank", "item_id", "title", "source_path", "score", "offset_s", "window_start_s",
        "window_end_s", "query_start_s", "query_end_s", "item_duration_s", "aligned_start_s"}
    hit = out["hits"][0]
    assert hit["aligned_start_s"] == hit["window_start_s"] - hit["query_start_s"]
    assert hit["offset_s"] == max(0.0, hit["aligned_start_s"])
    assert out["hits"][0]["offset_s"] == 15.0
    table = run_cli(capsys, "recommend", music_index, green_blue_video, "--top", "2",
                    "--json", tmp_path / "r.json")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split() == [
        "rank", "score", "offset", "title"]
    assert "0:15" in table.stdout and json.loads((tmp_path / "r.json").read_text())["hits"]


def test_cli_bad_query_fails_with_one_line(music_index, tmp_path, library,
                                           capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 50)
    done = run_cli(capsys, "recommend", music_index, junk)
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and str(junk) in done.stderr
    done = run_cli(capsys, "recommend", music_index, library[0])  # music cannot query music
    assert done.returncode == 1 and "no video stream" in done.stderr
    assert "a music index is searched with a video query" in done.stderr
    with pytest.raises(MediaError, match="file not found"):
        recommend(music_index, tmp_path / "missing.mp4")

"""Tests for mvpt.media on real files written by tests/fixtures/media_factory.py."""

from __future__ import annotations

import bisect
import re
from pathlib import Path

import numpy as np
import pytest

from mvpt.errors import MediaError, UsageError
from mvpt.media import MediaInfo, probe, read_audio, read_frames
from tests.fixtures.media_factory import (
    MARKER_RGB,
    default_frame,
    frame_index_from_image,
    frame_times_s,
    make_bad_inputs,
    tone_frequencies_hz,
    write_video,
)

REQUIRED_KINDS = {
    "zero_bytes",
    "truncated",
    "text_as_mp4",
    "no_audio",
    "no_video",
    "short",
    "audio_6ch",
    "audio_8k",
    "audio_48k",
    "large_frame",
    "non_ascii_name",
    "missing",
    "variable_fps",
    "rotated",
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return {case.kind: case for case in make_bad_inputs(tmp_path_factory.mktemp("bad inputs"))}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """3 s, 64x48, 10 fps, mono 440 Hz at 16 kHz."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4")


def dominant_frequency_hz(samples: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate_hz)[np.argmax(spectrum)])


def band_amplitude(
    samples: np.ndarray, rate_hz: int, freq_hz: float, half_width_hz: float = 15.0
) -> float:
    """Peak amplitude near ``freq_hz`` (Hann-windowed FFT: a sine of amplitude a gives about a)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) * 4 / len(samples)
    freqs = np.fft.rfftfreq(len(samples), 1 / rate_hz)
    return float(spectrum[np.abs(freqs - freq_hz) <= half_width_hz].max())


def is_marker(pixel: np.ndarray) -> bool:
    return abs(int(pixel[0]) - MARKER_RGB[0]) < 40 and int(pixel[1]) < 80 and int(pixel[2]) < 80


# --- the bad-input set ------------------------------------------------------------------------


def test_bad_input_set_has_every_required_kind(cases):
    assert set(cases) >= REQUIRED_KINDS
    assert cases["non_ascii_name"].path.name == "été à Zürich.mp4"
    assert not cases["missing"].path.exists()
    assert cases["zero_bytes"].path.stat().st_size == 0


def extract_everything(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """What a full extraction needs: frames every 0.25 s to the end, and all the audio."""
    info = probe(path)
    times = np.arange(0.0, info.duration_s, 0.25)
    frames = read_frames(path, times, size=(32, 32), info=info)
    audio = read_audio(path, sample_rate_hz=16000, start_s=0.0, end_s=info.duration_s, info=info)
    return frames, audio


def test_full_extraction_succeeds_exactly_where_expected(cases):
    for case in cases.values():
        if case.expect == "ok":
            frames, audio = extract_everything(case.path)
            assert len(frames) >= 2 and audio.size > 0, case.kind
        else:
            with pytest.raises(MediaError) as caught:
                extract_everything(case.path)
            assert caught.value.path == str(case.path), case.kind


# --- probe ------------------------------------------------------------------------------------

PROBED = {  # kind: expected MediaInfo fields
    "short": dict(duration_s=0.5, has_video=True, has_audio=True, width=64, height=48, fps=10.0),
    "audio_6ch": dict(audio_channels=6, audio_rate_hz=16000),
    "audio_8k": dict(audio_channels=1, audio_rate_hz=8000),
    "audio_48k": dict(audio_channels=2, audio_rate_hz=48000),
    "large_frame": dict(width=3840, height=2160, fps=4.0, duration_s=1.0),
    "non_ascii_name": dict(duration_s=3.0, width=64, height=48),
    "variable_fps": dict(duration_s=3.0, width=64, height=48),
    "rotated": dict(width=48, height=64, rotation_deg=90),
    "odd_size": dict(width=63, height=47),
    "no_audio": dict(has_audio=False, audio_rate_hz=0, audio_channels=0, has_video=True),
    "no_video": dict(has_video=False, width=0, height=0, fps=0.0, rotation_deg=0, has_audio=True),
    "no_video_cover_art": dict(has_video=False, has_audio=True, audio_rate_hz=44100),
    "no_container_duration": dict(has_video=True, has_audio=True, width=64, height=48),
    "truncated": dict(duration_s=4.0, has_video=True),  # the header is intact: probe trusts it
    "truncated_mkv": dict(has_video=True, has_audio=True),
}


@pytest.mark.parametrize("kind", sorted(PROBED))
def test_probe_reports_each_readable_kind(cases, kind):
    info = probe(cases[kind].path)
    assert isinstance(info, MediaInfo) and info.path == str(cases[kind].path)
    for field, expected in PROBED[kind].items():
        actual = getattr(info, field)
        if isinstance(expected, float):
            assert actual == pytest.approx(expected, abs=0.02), field
        else:
            assert actual == expected, field


def test_probe_measures_a_file_whose_header_has_no_duration(cases):
    info = probe(cases["no_container_duration"].path)
    assert info.duration_s == pytest.approx(3.0, abs=0.1)


def test_probe_variable_frame_rate_reports_the_average(cases):
    times = frame_times_s(3.0, 10.0, variable_fps=True, seed=0)
    assert probe(cases["variable_fps"].path).fps == pytest.approx(len(times) / 3.0, rel=0.1)


def test_probe_reads_the_title_tag(tmp_path):
    path = write_video(tmp_path / "titled.mp4", title="Été à Zürich", duration_s=0.5)
    assert probe(path).title == "Été à Zürich"
    assert probe(write_video(tmp_path / "untitled.mp4", duration_s=0.5)).title is None


UNREADABLE = {  # kind: reason the error must give
    "zero_bytes": r"empty file \(0 bytes\)",
    "text_as_mp4": r"not a media file",
    "missing": r"file not found",
    "truncated_header_lost": r"damaged beyond reading",
}


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
@pytest.mark.parametrize("reader", ["probe", "read_frames", "read_audio"])
def test_unreadable_files_raise_media_error_naming_the_file(cases, kind, reader):
    path = cases[kind].path
    call = {
        "probe": lambda: probe(path),
        "read_frames": lambda: read_frames(path, [0.0]),
        "read_audio": lambda: read_audio(path, sample_rate_hz=16000),
    }[reader]
    with pytest.raises(MediaError, match=UNREADABLE[kind]) as caught:
        call()
    assert str(path) in str(caught.value) and caught.value.path == str(path)


def test_a_directory_is_not_a_media_file(tmp_path):
    with pytest.raises(MediaError, match="not a file"):
        probe(tmp_path)


# --- read_frames: which frame -----------------------------------------------------------------


def test_read_frames_returns_the_frame_shown_at_each_time_in_request_order(clip):
    # 10 fps: frame k is stamped k / 10 s; a stamp up to 0.1 ms after t counts as shown at t.
    times = [2.95, 0.0, 0.05, 0.1, 0.149, 1.0, 1.0, 0.25, 3.0, 0.0995, 0.09999]
    frames = read_frames(clip, times, size=(32, 24), resize_mode="squash")
    assert frames.shape == (len(times), 24, 32, 3) and frames.dtype == np.uint8
    expected = [29, 0, 0, 1, 1, 10, 10, 2, 29, 0, 1]
    assert [frame_index_from_image(frame) for frame in frames] == expected


def test_read_frames_variable_frame_rate_uses_timestamps(cases):
    pts = frame_times_s(3.0, 10.0, variable_fps=True, seed=0)
    gaps = np.diff(pts)
    assert gaps.min() < 0.06 and gaps.max() > 0.14  # really variable
    times = [
        t for k in range(1, len(pts)) for t in (pts[k], pts[k] - 0.001, (pts[k - 1] + pts[k]) / 2)
    ]
    frames = read_frames(cases["variable_fps"].path, times, size=(16, 16))
    expected = [bisect.bisect_right(pts, t + 1e-9) - 1 for t in times]
    assert [frame_index_from_image(frame) for frame in frames] == expected


@pytest.mark.parametrize("thread_type", ["AUTO", "FRAME", "SLICE", "NONE", "none"])
def test_decoder_threading_leaves_the_frames_alone(cases, monkeypatch, thread_type):
    """MVPT_DECODE_THREADS only changes how FFmpeg spreads the work: the same frames come out."""
    path = cases["variable_fps"].path
    times = np.linspace(0.0, 2.9, 23)
    expected = read_frames(path, times, size=(16, 16))
    monkeypatch.setenv("MVPT_DECODE_THREADS", thread_type)
    np.testing.assert_array_equal(read_frames(path, times, size=(16, 16)), expected)


def test_an_unknown_decoder_threading_is_a_usage_error(clip, monkeypatch):
    monkeypatch.setenv("MVPT_DECODE_THREADS", "MANY")
    with pytest.raises(UsageError, match="MVPT_DECODE_THREADS must be one of"):
        read_frames(clip, [0.0])


def test_a_time_before_the_first_frame_gets_the_first_frame(tmp_path):
    late = lambda k, t, size: default_frame(k + 7, t, size)  # noqa: E731 - frame 0 shows level 7
    path = write_video(tmp_path / "late.mkv", content=late, duration_s=1.0)
    assert frame_index_from_image(read_frames(path, [0.0], size=(16, 16))[0]) == 7


def test_read_frames_empty_request_gives_an_empty_array(clip):
    assert read_frames(clip, [], size=(20, 10)).shape == (0, 10, 20, 3)


@pytest.mark.parametrize(
    "kind", ["short", "large_frame", "odd_size", "non_ascii_name", "no_container_duration"]
)
def test_read_frames_on_awkward_files(cases, kind):
    info = probe(cases[kind].path)
    times = [0.0, info.duration_s / 2, info.duration_s]
    frames = read_frames(cases[kind].path, times, size=(31, 17), info=info)
    assert frames.shape == (3, 17, 31, 3)
    last_index = (
        len(frame_times_s(round(info.duration_s, 1), info.fps)) - 1
    )  # audio may outlast video by 8 ms
    mid_index = int(np.floor(info.duration_s / 2 * info.fps + 1e-9))
    assert [frame_index_from_image(frame) for frame in frames] == [0, mid_index, last_index]


# --- read_frames: rotation and resizing -------------------------------------------------------


@pytest.mark.parametrize("rotation_deg", [0, 90, 180, 270])
def test_rotation_metadata_gives_an_upright_picture(tmp_path, rotation_deg):
    path = write_video(
        tmp_path / f"rot{rotation_deg}.mp4", rotation_deg=rotation_deg, duration_s=0.5
    )
    info = probe(path)
    upright = (48, 64) if rotation_deg in (90, 270) else (64, 48)
    assert (info.width, info.height, info.rotation_deg) == (*upright, rotation_deg)
    frame = read_frames(path, [0.2], size=upright, resize_mode="squash")[0]
    assert frame.shape == (upright[1], upright[0], 3)
    height, width = frame.shape[:2]
    assert is_marker(
        frame[height // 16, width // 16]
    )  # the marker is at the top left, as displayed
    for corner in (
        frame[height // 16, -width // 16],
        frame[-height // 16, width // 16],
        frame[-height // 16, -width // 16],
    ):
        assert not is_marker(corner)
    assert frame_index_from_image(frame) == 2


def gradient(k: int, t: float, size: tuple[int, int]) -> np.ndarray:
    """Level 4 * x across the picture, the same on every row."""
    width, height = size
    row = (4 * np.arange(width)).clip(0, 255).astype(np.uint8)
    return np.repeat(np.repeat(row[None, :, None], height, axis=0), 3, axis=2)


@pytest.fixture(scope="module")
def gradient_clip(tmp_path_factory) -> Path:
    return write_video(
        tmp_path_factory.mktemp("gradient") / "gradient.mp4", content=gradient, duration_s=0.5
    )


def column_levels(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32).mean(axis=(0, 2))


def test_crop_mode_scales_to_cover_then_cuts_the_centre(gradient_clip):
    frame = read_frames(gradient_clip, [0.0], size=(24, 24), resize_mode="crop")[0]
    # 64x48 -> 32x24 covers 24x24; the centre cut drops 4 scaled (8 source) columns each side.
    source_x = (np.arange(24) + 4 + 0.5) * 2 - 0.5
    assert frame.shape == (24, 24, 3)
    np.testing.assert_allclose(column_levels(frame)[2:-2], 4 * source_x[2:-2], atol=10)


def test_squash_mode_stretches_the_whole_picture(gradient_clip):
    frame = read_frames(gradient_clip, [0.0], size=(24, 24), resize_mode="squash")[0]
    source_x = (np.arange(24) + 0.5) * 64 / 24 - 0.5
    np.testing.assert_allclose(column_levels(frame)[2:-2], 4 * source_x[2:-2], atol=10)


def test_crop_of_a_portrait_picture_cuts_top_and_bottom(tmp_path):
    path = write_video(
        tmp_path / "portrait.mp4", size=(48, 64), duration_s=0.5
    )  # marker: top-left 12x16
    frame = read_frames(path, [0.0], size=(48, 48), resize_mode="crop")[0]
    marker_rows = [row for row in range(48) if is_marker(frame[row, 2])]
    assert (
        marker_rows and marker_rows[0] == 0 and 6 <= len(marker_rows) <= 10
    )  # 16 rows, 8 of them cut


# --- read_audio -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start_s", "end_s", "rate_hz", "count"),
    [
        (0.0, 1.0, 16000, 16000),
        (0.1, 0.35, 16000, 4000),
        (1 / 3, 2 / 3, 22050, round(2 / 3 * 22050) - round(1 / 3 * 22050)),
        (2.9, 3.0, 16000, 1600),
        (0.5, None, 16000, 40000),
        (0.0, None, 8000, 24000),
        (1.5, 1.5, 16000, 0),
        (0.0, 3.0, 44100, 132300),
    ],
)
def test_read_audio_returns_exactly_the_requested_samples(clip, start_s, end_s, rate_hz, count):
    audio = read_audio(clip, sample_rate_hz=rate_hz, start_s=start_s, end_s=end_s)
    assert audio.dtype == np.float32 and audio.shape == (count,)


def test_read_audio_start_offset_lines_up_with_the_whole(clip):
    whole = read_audio(clip, sample_rate_hz=16000)
    part = read_audio(clip, sample_rate_hz=16000, start_s=1.25, end_s=2.5)
    np.testing.assert_allclose(part, whole[20000:40000], atol=2e-3)
    assert np.abs(part).max() > 0.2


@pytest.mark.parametrize("kind", ["audio_8k", "audio_48k"])
def test_a_tone_keeps_its_frequency_through_resampling(cases, kind):
    audio = read_audio(cases[kind].path, sample_rate_hz=16000, start_s=0.5, end_s=2.5)
    assert len(audio) == 32000
    # 8 kHz file: mono 440 Hz. 48 kHz file: 440 Hz left, 880 Hz right, mixed to half each.
    assert dominant_frequency_hz(audio, 16000) == pytest.approx(440, abs=2)
    if kind == "audio_48k":
        assert band_amplitude(audio, 16000, 880) == pytest.approx(0.15, abs=0.03)
    assert band_amplitude(audio, 16000, 440) == pytest.approx(
        0.3 if kind == "audio_8k" else 0.15, abs=0.03
    )


def test_resampling_down_removes_what_the_new_rate_cannot_hold(tmp_path):
    # 10 kHz is above 16 kHz's Nyquist frequency: it must vanish, not fold back to 6 kHz.
    high = lambda times, channels: np.tile(0.3 * np.sin(2 * np.pi * 10000 * times), (channels, 1))  # noqa: E731
    path = write_video(
        tmp_path / "high.m4a", has_video=False, audio_rate_hz=48000, audio_content=high
    )
    audio = read_audio(path, sample_rate_hz=16000, start_s=0.5, end_s=2.5)
    assert band_amplitude(audio, 16000, 6000, half_width_hz=200) < 0.01
    native = read_audio(path, sample_rate_hz=48000, start_s=0.5, end_s=2.5)
    assert band_amplitude(native, 48000, 10000) > 0.2


def test_six_channels_mix_to_mono_with_the_standard_downmix(cases):
    audio = read_audio(cases["audio_6ch"].path, sample_rate_hz=16000, start_s=0.5, end_s=2.5)
    front_left, front_right, centre, lfe, back_left, back_right = tone_frequencies_hz(6)
    amplitude = {freq: band_amplitude(audio, 16000, freq) for freq in tone_frequencies_hz(6)}
    # ffmpeg's 5.1 -> mono weights, normalised to sum to 1:
    # fronts 0.207, centre 0.293, backs 0.146, LFE 0.
    for freq, weight in [
        (front_left, 0.207),
        (front_right, 0.207),
        (centre, 0.293),
        (back_left, 0.146),
        (back_right, 0.146),
    ]:
        assert amplitude[freq] == pytest.approx(0.3 * weight, rel=0.25), freq
    assert amplitude[lfe] < 0.005
    assert np.abs(audio).max() <= 0.3 + 1e-3  # unit gain: never louder than the loudest channel


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 7, 8])
def test_any_channel_count_mixes_to_mono(tmp_path, channels):
    path = write_video(
        tmp_path / f"ch{channels}.m4a", has_video=False, audio_channels=channels, duration_s=1.0
    )
    assert probe(path).audio_channels == channels
    audio = read_audio(path, sample_rate_hz=16000)
    assert (
        audio.shape == (16000,) and 0.02 < np.abs(audio).max() <= 0.36
    )  # 0.3 at unit gain, plus AAC noise
    assert (
        band_amplitude(audio[2000:14000], 16000, 440) > 0.02
    )  # the front-left tone is in every mix


def test_onset_lands_on_the_same_sample_at_every_rate(tmp_path):
    def onset_at_1s(times, channels):
        return np.tile(
            np.where(times >= 1.0, 0.5 * np.sin(2 * np.pi * 300 * times), 0.0), (channels, 1)
        )

    for rate_hz in (8000, 22050, 48000):
        path = write_video(
            tmp_path / f"onset{rate_hz}.m4a",
            has_video=False,
            audio_rate_hz=rate_hz,
            audio_content=onset_at_1s,
        )
        audio = read_audio(path, sample_rate_hz=16000, start_s=0.5, end_s=1.5)
        onset = int(np.argmax(np.abs(audio) > 0.1))
        assert abs(onset - 8000) <= 16, rate_hz  # within 1 ms


def test_a_soundtrack_shorter_than_the_video_is_padded_with_zeros(tmp_path):
    path = write_video(tmp_path / "short_sound.mp4", duration_s=3.0, audio_duration_s=2.0)
    audio = read_audio(path, sample_rate_hz=16000, start_s=1.0, end_s=3.0)
    assert audio.shape == (32000,)
    assert np.abs(audio[:15000]).max() > 0.2 and np.all(audio[17000:] == 0)
    assert len(read_audio(path, sample_rate_hz=16000)) == pytest.approx(
        32000, abs=200
    )  # to the stream's end


def test_reading_stops_before_a_cut_it_does_not_need(cases):
    # The truncated file decodes up to about 1.6 s: requests before the cut work.
    frames = read_frames(cases["truncated"].path, [0.0, 1.0], size=(16, 16))
    assert [frame_index_from_image(frame) for frame in frames] == [0, 10]
    assert read_audio(cases["truncated"].path, sample_rate_hz=16000, end_s=1.0).shape == (16000,)


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reader", "reason"),
    [
        ("truncated", "frames", r"truncated or corrupt"),
        ("truncated", "audio", r"truncated or corrupt"),
        ("truncated_mkv", "frames", r"truncated or corrupt: video data ends at \d\.\d\d s"),
        ("truncated_mkv", "audio", r"truncated or corrupt: audio data ends at \d\.\d\d s"),
        ("no_audio", "audio", r"no audio stream"),
        ("no_video", "frames", r"no video stream"),
        ("no_video_cover_art", "frames", r"no video stream"),
        ("missing", "frames", r"file not found"),
    ],
)
def test_reading_what_is_not_there_raises_media_error(cases, kind, reader, reason):
    path = cases[kind].path
    with pytest.raises(MediaError, match=reason) as caught:
        if reader == "frames":
            read_frames(path, [0.0, 3.5], size=(16, 16))
        else:
            read_audio(path, sample_rate_hz=16000)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda path: read_frames(path, [1.0, 3.5]),
        lambda path: read_frames(path, [-0.1]),
        lambda path: read_audio(path, sample_rate_hz=16000, start_s=3.2),
        lambda path: read_audio(path, sample_rate_hz=16000, start_s=1.0, end_s=4.0),
    ],
)
def test_times_outside_the_media_raise_media_error(clip, call):
    with pytest.raises(
        MediaError,
        match=re.escape(str(clip)) + r": time -?\d+\.\d+ s is outside the media \(0 to 3\.000 s\)",
    ):
        call(clip)


@pytest.mark.parametrize(
    "call",
    [
        lambda path: read_frames(path, [0.0], size=(0, 10)),
        lambda path: read_frames(path, [0.0], resize_mode="stretch"),
        lambda path: read_frames(path, [[0.0]]),
        lambda path: read_frames(path, [float("nan")]),
        lambda path: read_audio(path, sample_rate_hz=0),
        lambda path: read_audio(path, sample_rate_hz=16000.5),
        lambda path: read_audio(path, sample_rate_hz=16000, start_s=2.0, end_s=1.0),
    ],
)
def test_wrong_arguments_raise_usage_error(clip, call):
    with pytest.raises(UsageError):
        call(clip)


def test_corrupt_data_behind_a_good_header_raises_media_error(tmp_path):
    # A real header (the index is at the front), then random bytes where the packets should be.
    good = write_video(tmp_path / "good.mp4", duration_s=2.0).read_bytes()
    rng = np.random.default_rng(0)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(
        good[:2000] + rng.integers(0, 256, len(good) - 2000, dtype=np.uint8).tobytes()
    )
    for call in (
        lambda: probe(damaged),
        lambda: read_frames(damaged, [0.0, 1.5]),
        lambda: read_audio(damaged, sample_rate_hz=16000),
    ):
        with pytest.raises(MediaError, match=re.escape(str(damaged)) + r": .*corrupt"):
            call()


# --- decode limits and the container allow-list (issue 12) -------------------------------------


def test_a_playlist_naming_a_local_file_is_refused_before_it_is_read(tmp_path):
    secret = write_video(tmp_path / "secret.mp4", duration_s=1.0)
    playlist = tmp_path / "list.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{secret}\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "list.txt"
    concat.write_text(f"ffconcat version 1.0\nfile '{secret}'\n")
    for path in (playlist, concat):
        with pytest.raises(MediaError, match="not a media file of an allowed kind"):
            probe(path)
        with pytest.raises(MediaError, match="allowed kind"):
            read_frames(path, [0.0])


def test_header_limits_refuse_long_large_and_fast_files(tmp_path):
    from mvpt.media import DecodeLimits, MediaLimitError

    video = write_video(tmp_path / "v.mp4", duration_s=3.0, size=(64, 48), fps=10.0)
    for limits, reason in [(DecodeLimits(max_duration_s=2.0), "lasts 3 s, over the limit of 2 s"),
                           (DecodeLimits(max_pixels=64 * 47), "frames of 64x48 pixels"),
                           (DecodeLimits(max_fps=5.0), "10 frames per second, over the limit of 5")]:
        for read in (lambda: probe(video, limits=limits),
                     lambda: read_frames(video, [0.0], limits=limits),
                     lambda: read_audio(video, sample_rate_hz=16000, limits=limits)):
            with pytest.raises(MediaLimitError, match=reason):
                read()
    assert probe(video, limits=DecodeLimits(max_duration_s=3.5)).duration_s == pytest.approx(3.0, abs=0.1)


def test_the_frame_array_asked_for_is_bounded_before_it_is_made(tmp_path):
    from mvpt.media import DecodeLimits, MediaLimitError

    video = write_video(tmp_path / "v.mp4", duration_s=1.0)
    with pytest.raises(MediaLimitError, match="passed the limit of 100 MB"):
        read_frames(video, [0.0] * 1000, size=(1000, 1000), limits=DecodeLimits(max_decoded_bytes=100 * 2**20))


def test_decoding_stops_when_data_passes_the_length_limit_a_header_did_not_state(tmp_path):
    """A Matroska file written through a pipe has no duration in its header; the reader counts
    the decoded time itself."""
    import dataclasses

    from mvpt.media import DecodeLimits, MediaLimitError

    piped = write_video(tmp_path / "piped.mkv", duration_s=4.0, seekable=False)
    short_claim = dataclasses.replace(probe(piped), duration_s=1.0)  # as a lying index would say
    with pytest.raises(MediaLimitError, match="decoded data passes 2 s"):
        read_audio(piped, sample_rate_hz=16000, info=short_claim, limits=DecodeLimits(max_duration_s=2.0))


def test_set_decode_limits_is_the_default_of_every_reader(tmp_path):
    from mvpt.media import DEFAULT_LIMITS, DecodeLimits, MediaLimitError, decode_limits, set_decode_limits

    video = write_video(tmp_path / "v.mp4", duration_s=2.0)
    previous = set_decode_limits(DecodeLimits(max_duration_s=1.0))
    try:
        with pytest.raises(MediaLimitError):
            probe(video)
    finally:
        set_decode_limits(previous)
    assert decode_limits() is DEFAULT_LIMITS and probe(video).duration_s == pytest.approx(2.0, abs=0.1)

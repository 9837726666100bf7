"""Tests of the synthetic music-video generator: files, determinism, and the picture-sound link."""

from __future__ import annotations

import csv
import json
from collections import Counter

import av
import numpy as np
import pytest

from mvpt.data import synth
from mvpt.data.synth.writer import _duration_for
from mvpt.errors import UsageError
from tests.fixtures.speech import speech_like

FPS = 12.0
RATE_HZ = 16000


def decode(path) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [n, h, w, 3], mono audio float32 [samples]) of an mp4."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return frames, audio


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """Six 4-7 s videos of seed 5 (varied lengths)."""
    out = tmp_path_factory.mktemp("synth")
    return synth.generate(out, n=6, seed=5, duration_s=(4.0, 7.0))


def test_manifest_lists_every_video_with_its_stable_split(small_set):
    with small_set.manifest_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "path", "split"]
    assert [r["id"] for r in rows] == small_set.ids == [synth.video_id(5, i) for i in range(6)]
    for row, path in zip(rows, small_set.paths):
        assert (small_set.out_dir / row["path"]).resolve() == path.resolve()
        assert path.is_file() and path.stat().st_size > 1000
        assert row["split"] == synth.split_for_id(row["id"])


def test_factors_describe_contiguous_sections(small_set):
    saved = json.loads(small_set.factors_path.read_text())
    assert saved["params"]["seed"] == 5
    assert saved["videos"] == json.loads(json.dumps(small_set.factors))
    for ident, info in synth.load_factors(small_set.out_dir).items():
        sections = info["sections"]
        assert [s.to_dict() for s in sections] == small_set.factors[ident]["sections"]
        assert info["genre"] in synth.GENRE_NAMES
        assert 1 <= len(sections) <= synth.MAX_SECTIONS
        assert sections[0].start_s == 0.0
        assert sections[-1].end_s == pytest.approx(info["duration_s"])
        for before, after in zip(sections, sections[1:]):
            assert before.end_s == after.start_s
            # neighbours differ in what the picture and the sound both show
            assert abs(before.tempo_bpm - after.tempo_bpm) > 0
            assert abs(before.energy - after.energy) >= 0.2
            assert before.key != after.key
        low, high = synth.GENRES[info["genre"]].tempo_bpm
        assert all(low <= s.tempo_bpm <= high for s in sections)


def test_both_streams_last_the_requested_duration(small_set):
    lengths_s = []
    for ident, path in zip(small_set.ids, small_set.paths):
        duration_s = small_set.factors[ident]["duration_s"]
        frames, audio = decode(path)
        assert len(frames) == round(duration_s * FPS)
        assert abs(audio.size / RATE_HZ - duration_s) <= 1.0 / FPS
        assert frames.shape[1:] == (64, 96, 3)
        assert 4.0 - 1.0 / FPS <= duration_s <= 7.0 + 1.0 / FPS
        lengths_s.append(duration_s)
    assert len(set(lengths_s)) > 1  # a range gives varied lengths


def test_equal_length_gives_every_video_one_duration(tmp_path):
    result = synth.generate(tmp_path, n=3, seed=1, duration_s=(3.0, 5.0), equal_length=True)
    assert {info["duration_s"] for info in result.factors.values()} == {4.0}
    for path in result.paths:
        frames, audio = decode(path)
        assert len(frames) == 48
        assert abs(audio.size / RATE_HZ - 4.0) <= 1.0 / FPS


def test_equal_length_defaults_to_30_seconds(rng):
    assert synth.DEFAULT_DURATION_S == (20.0, 40.0)
    assert _duration_for(synth.DEFAULT_DURATION_S, True, rng) == 30.0
    drawn = [_duration_for(synth.DEFAULT_DURATION_S, False, rng) for _ in range(20)]
    assert all(20.0 <= d <= 40.0 for d in drawn) and len(set(drawn)) == 20


def test_same_seed_same_content_other_seed_other_content(tmp_path, small_set):
    again = synth.generate(tmp_path / "again", n=2, seed=5, duration_s=(4.0, 7.0))
    alone = synth.generate_video(tmp_path / "alone", index=1, seed=5, duration_s=(4.0, 7.0))
    other = synth.generate(tmp_path / "other", n=1, seed=6, duration_s=(4.0, 7.0))
    for first, second in zip(small_set.paths, again.paths):
        for a, b in zip(decode(first), decode(second)):
            np.testing.assert_array_equal(a, b)
    # one video generated on its own is the same as in the batch (partial / parallel runs)
    assert alone == small_set.factors[synth.video_id(5, 1)]
    alone_path = tmp_path / "alone" / "videos" / "s5-00001.mp4"
    for a, b in zip(decode(small_set.paths[1]), decode(alone_path)):
        np.testing.assert_array_equal(a, b)
    frames_a, audio_a = decode(small_set.paths[0])
    frames_b, audio_b = decode(other.paths[0])
    assert other.ids[0] != small_set.ids[0]
    n = min(len(frames_a), len(frames_b))
    assert np.abs(frames_a[:n].astype(int) - frames_b[:n]).mean() > 10
    n = min(audio_a.size, audio_b.size)
    assert np.abs(audio_a[:n] - audio_b[:n]).mean() > 0.01


def test_videos_of_a_genre_play_the_same_themes_in_their_own_orders():
    """Order, not the mix of sections, tells videos of a genre apart (plans only, no media)."""
    palette = synth.genre_palette("jazz", seed=4)
    assert palette == synth.genre_palette("jazz", seed=4)
    assert palette != synth.genre_palette("jazz", seed=5)
    assert len(palette) == synth.PALETTE_SIZE
    energies = sorted(theme.energy for theme in palette)
    assert min(np.diff(energies)) >= 0.2
    assert len({theme.pitch_class for theme in palette}) == len(palette)
    orders = set()
    for k in range(40):
        sections = synth.plan_sections("jazz", duration_s=30.0, rng=np.random.default_rng(k),
                                       palette=palette)
        durations = [s.duration_s for s in sections]
        assert max(durations) - min(durations) <= 1 / FPS + 1e-9
        key = tuple(sorted((s.key, s.tempo_bpm, s.energy) for s in sections))
        assert key == tuple(sorted((synth.KEY_NAMES[t.pitch_class], t.tempo_bpm, t.energy)
                                   for t in palette))
        orders.add(tuple(s.key for s in sections))
    assert len(orders) >= 30  # 120 possible orders
    short = synth.plan_sections("jazz", duration_s=7.0, rng=np.random.default_rng(0),
                                palette=palette)
    assert len(short) == 2 and {s.key for s in short} <= {
        synth.KEY_NAMES[t.pitch_class] for t in palette}


def test_splits_are_stable_and_near_80_10_10():
    ids = [synth.video_id(seed, i) for seed in range(3) for i in range(1000)]
    splits = [synth.split_for_id(i) for i in ids]
    assert splits == [synth.split_for_id(i) for i in ids]
    counts = Counter(splits)
    assert set(counts) == {"train", "val", "test"}
    assert counts["train"] / len(ids) == pytest.approx(0.8, abs=0.03)
    assert counts["val"] / len(ids) == pytest.approx(0.1, abs=0.02)
    assert counts["test"] / len(ids) == pytest.approx(0.1, abs=0.02)


def test_every_genre_appears_with_its_own_instruments(tmp_path):
    result = synth.generate(tmp_path, n=10, seed=2, duration_s=1.0)
    genres = Counter(info["genre"] for info in result.factors.values())
    assert len(genres) >= 4
    assert set(genres) == set(synth.GENRE_NAMES) and set(genres.values()) == {2}
    instruments = {
        name: {part.voice for part in (*style.drums, style.bass, style.chords, style.lead)}
        for name, style in synth.GENRES.items()
    }
    for a in synth.GENRE_NAMES:
        for b in synth.GENRE_NAMES:
            if a < b:
                assert len(instruments[a] ^ instruments[b]) >= 3, (a, b)
    assert not synth.GENRES["ambient"].drums


@pytest.fixture(scope="module")
def linked_set(tmp_path_factory):
    """Four 12 s videos (one of each genre but one) for the picture-sound link."""
    return synth.generate(tmp_path_factory.mktemp("linked"), n=4, seed=3, duration_s=12.0)


def _per_second(values: np.ndarray, per_second: int) -> np.ndarray:
    n = values.size // per_second
    return values[: n * per_second].reshape(n, per_second)


def test_frame_brightness_follows_loudness(linked_set):
    brightness, loudness_db = [], []
    for path in linked_set.paths:
        frames, audio = decode(path)
        value = frames.max(axis=-1).mean(axis=(1, 2)) / 255.0  # HSV value, blind to hue
        brightness.extend(_per_second(value, int(FPS)).mean(axis=1))
        power = (_per_second(audio, RATE_HZ) ** 2).mean(axis=1)
        loudness_db.extend(10 * np.log10(power + 1e-12))
    assert len(brightness) == 48
    assert np.corrcoef(brightness, loudness_db)[0, 1] > 0.8


def test_picture_cuts_at_section_changes(linked_set):
    for ident, path in zip(linked_set.ids, linked_set.paths):
        frames, _ = decode(path)
        change = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
        cuts = [round(s["start_s"] * FPS) - 1 for s in linked_set.factors[ident]["sections"][1:]]
        assert cuts
        # every cut is the biggest frame-to-frame change within half a second of it (a bright,
        # fast section's beat flashes can rival a cut between two similar themes further away)
        for cut in cuts:
            nearby = np.r_[change[max(0, cut - 6) : cut], change[cut + 1 : cut + 7]]
            assert change[cut] > nearby.max(), (ident, cut)
        assert np.mean(change[cuts]) > 2 * np.median(np.delete(change, cuts))


def _beat_contrast(
    values: np.ndarray, times_s: np.ndarray, section: dict, tempo_bpm: float
) -> float:
    """Mean of ``values`` just after beats over its mean in the second half of beats."""
    inside = (times_s >= section["start_s"]) & (times_s < section["end_s"])
    phase = ((times_s[inside] - section["start_s"]) * tempo_bpm / 60.0) % 1.0
    return values[inside][phase < 0.2].mean() / values[inside][phase >= 0.5].mean()


def test_flashes_and_sound_share_the_section_tempo(linked_set):
    hop = 160  # 10 ms audio windows
    for ident, path in zip(linked_set.ids, linked_set.paths):
        frames, audio = decode(path)
        luma = frames.astype(np.float32).mean(axis=(1, 2, 3))
        envelope = np.sqrt((_per_second(audio, hop) ** 2).mean(axis=1))
        streams = {"luma": (luma, np.arange(len(frames)) / FPS),
                   "audio": (envelope, np.arange(envelope.size) * hop / RATE_HZ)}
        sections = linked_set.factors[ident]["sections"]
        for name, (values, times_s) in streams.items():
            def mean_contrast(tempo_ratio):
                return np.mean([_beat_contrast(values, times_s, s, s["tempo_bpm"] * tempo_ratio)
                                for s in sections])

            at_tempo = mean_contrast(1.0)
            off_tempo = (mean_contrast(0.71) + mean_contrast(1.37)) / 2
            assert at_tempo > 1.15, (ident, name)
            # control: folded at a wrong tempo, the beat is (mostly) gone
            assert at_tempo - 1 > 2.5 * abs(off_tempo - 1), (ident, name)
        for section in sections:  # every section flashes on its own beat
            assert _beat_contrast(luma, streams["luma"][1], section, section["tempo_bpm"]) > 1.08


def test_music_clip_is_rich_deterministic_and_genre_specific():
    clips = {g: synth.music_clip(g, duration_s=4.0, seed=1) for g in synth.GENRE_NAMES}
    for genre, clip in clips.items():
        assert clip.dtype == np.float32 and clip.shape == (4 * RATE_HZ,)
        assert np.isfinite(clip).all() and np.abs(clip).max() <= 1.0
        assert np.sqrt(np.mean(clip**2)) > 0.01
        spectrum = np.abs(np.fft.rfft(clip)) ** 2
        freqs_hz = np.fft.rfftfreq(clip.size, 1.0 / RATE_HZ)
        # harmonic-rich, not a sine: at least 4 of 7 octaves (55 Hz - 7 kHz) hold 1% of the energy
        lows_hz = 55.0 * 2.0 ** np.arange(7)
        octaves = [spectrum[(freqs_hz >= low) & (freqs_hz < 2 * low)].sum() for low in lows_hz]
        assert np.sum(np.array(octaves) / spectrum.sum() > 0.01) >= 4, genre
    np.testing.assert_array_equal(clips["rock"], synth.music_clip("rock", duration_s=4.0, seed=1))
    assert not np.array_equal(clips["rock"], synth.music_clip("rock", duration_s=4.0, seed=2))


def test_render_music_follows_section_loudness(rng):
    sections = synth.plan_sections("electronic", duration_s=9.0, rng=rng)
    wave = synth.render_music(sections, genre="electronic", duration_s=9.0, sample_rate_hz=RATE_HZ,
                              rng=rng)
    assert wave.shape == (9 * RATE_HZ,)
    for section in sections:
        part = wave[int(section.start_s * RATE_HZ) : int(section.end_s * RATE_HZ)]
        level_db = 10 * np.log10(np.mean(part**2))
        assert level_db == pytest.approx(section.loudness_db, abs=1.5)


def test_speech_like_has_a_syllable_rhythm():
    wave = speech_like(8.0, RATE_HZ, 0)
    assert wave.dtype == np.float32 and wave.shape == (8 * RATE_HZ,)
    assert np.abs(wave).max() == pytest.approx(0.5, abs=1e-3)
    np.testing.assert_array_equal(wave, speech_like(8.0, RATE_HZ, 0))
    envelope = np.sqrt((_per_second(wave, 160) ** 2).mean(axis=1))  # 100 Hz envelope
    modulation = np.abs(np.fft.rfft(envelope - envelope.mean()))
    rates_hz = np.fft.rfftfreq(envelope.size, 0.01)
    syllabic = modulation[(rates_hz >= 2) & (rates_hz <= 8)].sum()
    assert syllabic / modulation[rates_hz > 0.5].sum() > 0.3
    assert np.mean(envelope < 0.05 * envelope.max()) > 0.1  # pauses between words


def test_progress_bar_is_shown(tmp_path, capsys):
    synth.generate(tmp_path, n=1, seed=0, duration_s=1.0, progress=True)
    assert "synth" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be"),
        ({"n": 1, "seed": -1}, "seed must be"),
        ({"n": 1, "duration_s": 0.5}, "duration_s must be"),
        ({"n": 1, "duration_s": (9.0, 3.0)}, "duration_s must be"),
        ({"n": 1, "size": (95, 64)}, "size must be"),
        ({"n": 1, "audio_rate_hz": 12345}, "audio_rate_hz must be"),
        ({"n": 1, "fps": 0.0}, "fps must be"),
    ],
)
def test_bad_parameters_raise_usage_error(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        synth.generate(tmp_path, **kwargs)
    assert not (tmp_path / "manifest.csv").exists()


def test_generate_video_checks_its_parameters(tmp_path):
    with pytest.raises(UsageError, match="index must be"):
        synth.generate_video(tmp_path, index=-1)
    with pytest.raises(UsageError, match="size must be"):
        synth.generate_video(tmp_path, index=0, size=(8, 8))


def test_unknown_genre_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown genre 'polka'"):
        synth.music_clip("polka", duration_s=1.0)

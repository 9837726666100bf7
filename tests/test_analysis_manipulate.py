"""Media manipulations: hue formula on known colours, brightness and tempo measured on output."""

from __future__ import annotations

import numpy as np
import pytest

from mvpt.analysis.manipulate import (
    change_tempo,
    fit_length,
    hsv_to_rgb,
    manipulate,
    rgb_to_hsv,
    scale_brightness,
    shift_hue,
)
from mvpt.errors import UsageError

SR = 22050
RED, GREEN, BLUE = [255, 0, 0], [0, 255, 0], [0, 0, 255]


@pytest.mark.parametrize("colour,hue", [(RED, 0), (GREEN, 120), (BLUE, 240), ([255, 255, 0], 60),
                                        ([0, 255, 255], 180), ([255, 0, 255], 300),
                                        ([255, 128, 0], 30.1)])
def test_rgb_to_hsv_known_hues(colour, hue):
    h, s, v = rgb_to_hsv(np.array(colour) / 255.0)
    assert h == pytest.approx(hue, abs=0.2) and s == pytest.approx(1) and v == pytest.approx(1)


@pytest.mark.parametrize("colour,rate,expected", [
    (RED, 1 + 1 / 3, GREEN), (RED, 1 + 2 / 3, BLUE), (GREEN, 1 + 1 / 3, BLUE),
    (BLUE, 1 + 1 / 3, RED), (RED, 2 / 3, BLUE), (GREEN, 1.5, [255, 0, 255]), (RED, 1.0, RED),
    (RED, 2.0, RED),
])
def test_hue_shift_formula(colour, rate, expected):
    frame = np.array([[colour]], dtype=np.uint8)
    assert shift_hue(frame, rate=rate)[0, 0].tolist() == expected


def test_hsv_round_trip_and_greys(rng):
    rgb = rng.random((50, 40, 3))
    assert np.allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-12)
    grey = np.full((2, 2, 3), 0.4)
    assert np.allclose(shift_hue(grey, rate=1.3), grey)  # no hue to move
    hsv = rgb_to_hsv(rgb)
    shifted = rgb_to_hsv(shift_hue(rgb, rate=1.25))
    assert np.allclose((shifted[..., 0] - hsv[..., 0]) % 360, 90, atol=1e-6)
    assert np.allclose(shifted[..., 1:], hsv[..., 1:], atol=1e-9)


def luma(frames) -> float:
    f = np.asarray(frames, np.float64)
    return float(np.mean(0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]))


@pytest.mark.parametrize("rate", [0.5, 0.8, 1.2, 1.5])
def test_brightness_scales_mean_luma(rng, rate):
    frames = rng.integers(20, 160, size=(4, 32, 32, 3)).astype(np.uint8)  # 160 * 1.5 < 255
    out = scale_brightness(frames, rate=rate)
    assert out.dtype == np.uint8
    assert luma(out) / luma(frames) == pytest.approx(rate, rel=0.01)
    assert np.array_equal(scale_brightness(frames, rate=1.0), frames)


def click_track(bpm: float, *, seconds: float = 8.0) -> np.ndarray:
    """A drum-like pattern: a decaying two-partial tone burst on every beat, louder on the
    downbeat of every four."""
    t = np.arange(int(seconds * SR)) / SR
    audio = np.zeros_like(t)
    burst_t = np.arange(int(0.15 * SR)) / SR
    burst = (np.sin(2 * np.pi * 440 * burst_t) + 0.5 * np.sin(2 * np.pi * 1320 * burst_t)) \
        * np.exp(-burst_t / 0.03)
    for beat, start in enumerate(np.arange(0, seconds - 0.16, 60 / bpm)):
        i = int(start * SR)
        audio[i:i + burst.size] += burst * (1.0 if beat % 4 == 0 else 0.6)
    return (0.3 * audio).astype(np.float32)


def estimate_bpm(audio, *, low: float = 80.0, high: float = 180.0, hop: int = 64) -> float:
    """Tempo from the autocorrelation of an onset envelope (positive log-energy flux per hop):
    the strongest lag in the tempo range, refined by a least-squares line through the
    autocorrelation peaks near its multiples (robust to beats jittered by a phase vocoder)."""
    frames = len(audio) // hop
    energy = np.square(audio[:frames * hop].astype(np.float64)).reshape(frames, hop).sum(axis=1)
    onset = np.maximum(np.diff(np.log1p(1e3 * energy)), 0.0)
    onset -= onset.mean()
    ac = np.correlate(onset, onset, mode="full")[onset.size - 1:]
    fps = SR / hop
    lags = np.arange(int(fps * 60 / high), int(fps * 60 / low) + 1)
    lag = lags[np.argmax(ac[lags])]
    multiples = np.arange(1, int(0.6 * onset.size / lag) + 1)
    peaks = [m * lag - lag // 4 + np.argmax(ac[m * lag - lag // 4:m * lag + lag // 4 + 1])
             for m in multiples]
    period = np.dot(multiples, peaks) / np.dot(multiples, multiples)
    return 60.0 * fps / period


def test_tempo_estimator_on_plain_clicks():
    for bpm in (96, 120, 150):
        assert estimate_bpm(click_track(bpm)) == pytest.approx(bpm, rel=0.01)


@pytest.mark.parametrize("rate", [0.8, 0.9, 1.1, 1.2])
def test_tempo_change_measured_on_output(rate):
    audio = click_track(120)
    out = change_tempo(audio, rate=rate)
    assert out.shape == audio.shape
    assert estimate_bpm(out) == pytest.approx(120 * rate, rel=0.03)


def test_tempo_change_keeps_pitch():
    t = np.arange(4 * SR) / SR
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    for rate in (0.7, 1.3):
        out = change_tempo(tone, rate=rate)
        spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
        peak_hz = np.argmax(spectrum) * SR / out.size
        assert peak_hz == pytest.approx(440, abs=2)


def burst_at(seconds: float, at_s: float, *, rate_hz: int = SR) -> np.ndarray:
    """Silence with one short decaying tone burst (a click) starting at ``at_s``."""
    audio = np.zeros(int(seconds * rate_hz), np.float32)
    t = np.arange(int(0.05 * rate_hz)) / rate_hz
    i = int(at_s * rate_hz)
    audio[i:i + t.size] = 0.5 * np.sin(2 * np.pi * 880 * t) * np.exp(-t / 0.01)
    return audio


def loudest_s(audio, *, rate_hz: int = SR) -> float:
    """Time (s) of the loudest 10 ms frame."""
    hop = rate_hz // 100
    frames = len(audio) // hop
    energy = np.square(audio[:frames * hop].astype(np.float64)).reshape(frames, hop).sum(axis=1)
    return float(np.argmax(energy) * hop / rate_hz)


@pytest.mark.parametrize("rate", [0.5, 0.625, 0.8, 1.25, 1.5])
def test_tempo_change_keeps_the_anchor_in_place(rate):
    """The click at the anchor (the evaluated window's centre, not the track's start) stays
    within one clip (1 s) of it: the stretch changes the tempo, not the alignment."""
    audio = burst_at(20.0, 13.0)
    out = change_tempo(audio, rate=rate, anchor_sample=13 * SR)
    assert out.shape == audio.shape
    assert abs(loudest_s(out) - 13.0) < 1.0, loudest_s(out)
    # by default the anchor is the middle
    middle = change_tempo(burst_at(20.0, 10.0), rate=rate)
    assert abs(loudest_s(middle) - 10.0) < 1.0


def test_tempo_change_loops_symmetrically_around_the_anchor():
    """Sped up, the music is looped on both sides of the anchor: three times faster, 18 s with
    a click at 9 s become 6 s looped around 9 s, so the click sounds at 3, 9 and 15 s."""
    out = change_tempo(burst_at(18.0, 9.0), rate=3.0, anchor_sample=9 * SR)
    thirds = [loudest_s(out[k * 6 * SR:(k + 1) * 6 * SR]) + 6 * k for k in range(3)]
    assert thirds == pytest.approx([3.0, 9.0, 15.0], abs=0.3)


def test_fit_length_and_errors():
    assert fit_length(np.arange(3), length=7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert fit_length(np.arange(9), length=4).tolist() == [0, 1, 2, 3]
    with pytest.raises(UsageError, match="positive"):
        scale_brightness(np.zeros((1, 1, 3)), rate=0)
    with pytest.raises(UsageError, match="attribute"):
        manipulate("contrast", np.zeros((1, 1, 3)), rate=1.1)
    assert np.array_equal(manipulate("tempo", np.ones(100), rate=1.0), np.ones(100))


# ---------------------------------------------------------------------------- curve runner

ITEMS = {"red": ((220, 30, 30), 200.0), "green": ((30, 220, 30), 800.0),
         "blue": ((30, 30, 220), 3200.0)}  # all three fall in split "train"


def mean_embed(modality, sequences):
    out = np.stack([s.mean(axis=0) for s in sequences]).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-9)


@pytest.fixture(scope="module")
def curve_store(tmp_path_factory):
    from mvpt.clips import ClipConfig
    from mvpt.extract import Extractor, extract
    from tests.fixtures.media_factory import write_video
    from tests.fixtures.toy_index import (  # registers the toy encoders
        ToyAudioEncoder,
        ToyFrameEncoder,
    )

    root = tmp_path_factory.mktemp("curve")
    for name, (rgb, hz) in ITEMS.items():
        write_video(root / "media" / f"{name}.mp4", duration_s=3.0,
                    content=lambda i, t, size, rgb=rgb: np.full((size[1], size[0], 3), rgb, np.uint8),
                    audio_content=lambda t, ch, hz=hz: np.tile(
                        (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), (ch, 1)))
    extractor = Extractor(video_encoder=ToyFrameEncoder.name, audio_encoder=ToyAudioEncoder.name,
                          clip=ClipConfig(clip_s=1.0, max_clips=30))
    extract([root / "media"], root / "store", extractor=extractor, progress=False,
            decode_workers=0)
    return root, extractor


def test_hue_curve_reextracts_queries(curve_store, tmp_path):
    from mvpt.analysis.manipulate import manipulation_curve, write_curve_report

    root, _ = curve_store
    result = manipulation_curve(None, root / "store", attribute="hue", split="train",
                                rates=[1.0, 1 + 1 / 3, 2.0], embed_fn=mean_embed)
    assert result["direction"] == "video_to_music" and result["n_items"] == 3
    at = {p["rate"]: p for p in result["curve"]}
    assert result["reference"]["R@1"] == 1.0
    assert at[1.0]["R@1"] == result["reference"]["R@1"]
    assert at[1.0]["median_rank"] == result["reference"]["median_rank"]
    assert at[1 + 1 / 3]["R@1"] == 0.0  # red looks green: every query finds the wrong tone
    assert at[2.0]["R@1"] == 1.0  # a full turn of the hue wheel
    paths = write_curve_report(result, tmp_path)
    assert set(paths) == {"json", "markdown", "png"}


def test_brightness_and_tempo_curves_keep_scale_free_features(curve_store):
    from mvpt.analysis.manipulate import manipulation_curve

    root, extractor = curve_store
    for attribute in ("brightness", "tempo"):
        result = manipulation_curve(None, root / "store", attribute=attribute, split=None,
                                    rates=[0.8, 1.0, 1.2], extractor=extractor,
                                    embed_fn=mean_embed, media_root=root / "media")
        assert [p["R@1"] for p in result["curve"]] == [1.0, 1.0, 1.0], attribute
    assert result["direction"] == "music_to_video"


def test_cli_curve_with_a_run(curve_store, tmp_path, capsys):
    from mvpt import cli
    from tests.fixtures.toy_index import make_linear_run

    root, _ = curve_store
    run = make_linear_run(tmp_path / "run")
    out = tmp_path / "out"
    assert cli.main(["analyze", "manipulate", str(run), str(root / "store"), "--attribute",
                     "hue", "--rates", "1,1.3333333333,2", "--split", "train",
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 1 | 100.00 |" in text and "| 1.33333 | 0.00 |" in text and "| stored | 100.00 |" in text
    assert {p.name for p in out.iterdir()} == {"manipulate_hue.json", "manipulate_hue.md",
                                               "manipulate_hue.png"}
    assert cli.main(["analyze", "manipulate", str(run), str(root / "store"), "--attribute",
                     "hue", "--rates", "1,x"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("attribute", ["hue", "tempo"])
def test_curves_of_the_trained_demo_model_peak_at_one(demo, attribute):
    """On synthetic data the model relies on hue (key) and tempo: changing either moves every
    query away from its own partner, so the true pair's similarity is highest unchanged."""
    from mvpt.analysis.manipulate import manipulation_curve

    rates = (0.5, 0.75, 1.0, 1.25, 1.5)
    result = manipulation_curve(demo["runs"]["mvpt"], demo["store"], attribute=attribute,
                                rates=rates, split=None, max_items=12)
    similarity = {p["rate"]: p["pair_similarity"] for p in result["curve"]}
    assert similarity[1.0] == pytest.approx(result["reference"]["pair_similarity"], abs=1e-3)
    assert all(similarity[1.0] > similarity[r] for r in rates if r != 1.0), similarity


class _WaveSpy:
    """Stands in for an extractor: decodes audio only and keeps each wave it is asked to
    encode (one clip feature per clip, zeros)."""

    def __init__(self, rate_hz: int):
        from mvpt.clips import ClipConfig
        from mvpt.extract import DecodeSpec

        self.spec = DecodeSpec(clip=ClipConfig(clip_s=1.0), frame_size=None,
                               resize_mode="squash", audio_rate_hz=rate_hz)
        self.waves = []

    def decode_spec(self):
        return self.spec

    def encode(self, dec):
        from mvpt.store import ItemResult

        self.waves.append(dec.wave)
        return ItemResult(id=dec.item.id, source_path=dec.item.path, split="query",
                          status="done", arrays={"audio": np.zeros((len(dec.bounds_s), 3))})


def test_curve_anchors_tempo_at_the_evaluated_windows_centre(tmp_path):
    """Region 2-10 s of a file, evaluated in a centred window of 4 clips (4-8 s): the click at
    the window's centre (6 s in the file, 4 s into the region) stays within one clip of it in
    the audio re-extracted at every rate."""
    import pandas as pd

    from mvpt.analysis.manipulate import _reextract_all
    from mvpt.eval import track_windows
    from mvpt.store import Features
    from tests.fixtures.media_factory import write_video

    rate_hz = 16000
    click = burst_at(10.0, 6.0, rate_hz=rate_hz)
    write_video(tmp_path / "v.mp4", duration_s=10.0,
                audio_content=lambda t, ch: np.tile(
                    click[np.minimum((t * rate_hz).astype(int), click.size - 1)], (ch, 1)))
    rows = pd.DataFrame({"id": ["v"], "source_path": [str(tmp_path / "v.mp4")],
                         "start_s": [2.0], "end_s": [10.0]})
    features = Features(rows=rows, offsets=np.array([0, 8]), arrays={})
    spy, rates = _WaveSpy(rate_hz), [0.5, 0.75, 1.0, 1.25, 1.5]
    _reextract_all(features, spy, attribute="tempo", rates=rates, modality="audio",
                   media_root=None, windows=track_windows(features.n_clips, max_clips=4))
    assert len(spy.waves) == len(rates)
    for rate, wave in zip(rates, spy.waves):
        assert abs(loudest_s(wave, rate_hz=rate_hz) - 4.0) < 1.0, rate

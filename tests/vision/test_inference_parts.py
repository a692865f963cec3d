"""Out-of-scope detection, heatmaps, checkpoints, training and diagnosis on tiny models."""

from pathlib import Path

import numpy as np
import pytest
import torch

from assistant.imaging.preprocess import PreprocessConfig
from assistant.vision.checkpoint import CheckpointError, VisionBundle, load_bundle, predict_proba
from assistant.vision.explain import (
    attention_rollout,
    deletion_curve,
    foreground_mask,
    gradient_x_input,
    heat_share_in_mask,
    patch_heat,
)
from assistant.vision.infer import VisionModel
from assistant.vision.metrics import roc_auc
from assistant.vision.model import PatchTransformer, VisionConfig
from assistant.vision.ood import MahalanobisDetector, image_gate
from assistant.vision.train import TrainConfig, operating_threshold, train

CFG = VisionConfig(image_size=32, stem="patch", patch_size=8, width=32, depth=2, heads=2,
                   dropout=0.0)


def _disc(size: int = 32, radius: float = 10, bright_spot: bool = False,
          seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2) * 0.5
    if bright_spot:
        cy, cx = rng.integers(12, 20, 2)
        img[cy - 2:cy + 2, cx - 2:cx + 2] = 1.0
    return (img + rng.normal(0, 0.02, img.shape)).clip(0, 1).astype(np.float32)


def _task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % 2
    x = np.stack([_disc(bright_spot=bool(label), seed=seed * 1000 + i)
                  for i, label in enumerate(y)])
    return x, y.astype(np.int64)


def test_mahalanobis_rejects_far_points_and_keeps_the_quantile() -> None:
    rng = np.random.default_rng(0)
    train_x = rng.normal(0, 1, (2000, 8))
    labels = (rng.random(2000) < 0.5).astype(np.int64)
    train_x[labels == 1] += 0.5
    val_x = rng.normal(0, 1, (1000, 8))
    det = MahalanobisDetector.fit(train_x, labels, val_x, quantile=0.99)
    assert 0.005 <= 1 - det.in_scope(val_x).mean() <= 0.02
    assert not det.in_scope(rng.normal(8, 1, (50, 8))).any()
    assert MahalanobisDetector.from_dict(det.to_dict()).threshold == det.threshold


def test_image_gate_refuses_blank_and_noise() -> None:
    assert not image_gate(np.zeros((32, 32))).ok
    assert "noise" in str(image_gate(np.random.default_rng(0).random((64, 64))).reason)
    assert image_gate(_disc()).ok


def test_rollout_of_identity_attention_is_uniform() -> None:
    n = 5
    att = torch.full((2, 3, n, n), 1.0 / n)
    out = attention_rollout([att, att])
    assert out.shape == (2, n - 1)
    assert torch.allclose(out, out[:, :1].expand_as(out))


def test_heatmaps_shapes_and_foreground_share() -> None:
    model = PatchTransformer(CFG).eval()
    x = torch.from_numpy(_disc())[None, None]
    assert gradient_x_input(model, x).shape == (1, CFG.num_patches)
    for method in ("rollout", "gradient"):
        heat = patch_heat(model, x, method)  # type: ignore[arg-type]
        assert heat.shape == (1, CFG.grid, CFG.grid)
        assert heat.min() >= 0 and heat.max() <= 1
    mask = foreground_mask(_disc())
    assert abs(mask.mean() - np.pi * 100 / 1024) < 0.05
    inside = np.zeros((CFG.grid, CFG.grid), np.float32)
    inside[1:3, 1:3] = 1.0
    assert heat_share_in_mask(inside, foreground_mask(_disc(radius=15))) > 0.9
    outside = np.zeros((CFG.grid, CFG.grid), np.float32)
    outside[0, 0] = 1.0
    assert heat_share_in_mask(outside, mask) < 0.2


def test_deletion_curve_starts_at_the_unmasked_probability() -> None:
    model = PatchTransformer(CFG).eval()
    x = torch.from_numpy(_disc())[None, None]
    curve = deletion_curve(model, x, np.arange(CFG.num_patches), steps=4)
    assert curve.shape == (5,)
    with torch.no_grad():
        p0 = model(x).logits.softmax(-1)[0, 1].item()
    assert curve[0] == pytest.approx(p0, abs=1e-6)


def _trained(tmp: Path) -> VisionBundle:
    x_train, y_train = _task(96, seed=1)
    x_val, y_val = _task(48, seed=2)
    torch.manual_seed(0)
    result = train(PatchTransformer(CFG), x_train, y_train, x_val, y_val,
                   TrainConfig(epochs=12, batch_size=16, lr=3e-3, patience=12), progress=False)
    feats = np.random.default_rng(0).normal(size=(96, 4))
    det = MahalanobisDetector.fit(feats, y_train, feats[:48])
    return VisionBundle(result.model, PreprocessConfig(image_size=32), ("none", "spot"),
                        result.temperature, result.threshold, det, {"name": "tiny"})


def test_training_learns_a_visible_signal_and_calibrates(tmp_path: Path) -> None:
    bundle = _trained(tmp_path)
    x_test, y_test = _task(48, seed=3)
    p = predict_proba(bundle, x_test)[:, 1]
    assert roc_auc(y_test, p) >= 0.95
    assert ((p >= bundle.threshold) == y_test).mean() >= 0.85
    assert bundle.temperature > 0 and 0 < bundle.threshold <= 0.25


def test_threshold_is_capped_by_the_cost_of_a_miss() -> None:
    y = np.array([0] * 50 + [1] * 50)
    p = np.r_[np.linspace(0, 0.1, 50), np.linspace(0.95, 1, 50)]
    assert operating_threshold(y, p, TrainConfig(miss_cost=3.0)) == 0.25
    assert operating_threshold(y, p, TrainConfig(miss_cost=0.0)) == pytest.approx(0.951, abs=1e-3)


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    bundle = _trained(tmp_path)
    path = tmp_path / "v.pt"
    sha = bundle.save(path)
    loaded = load_bundle(path, expected_sha256=sha)
    x = _task(8, seed=4)[0]
    assert np.allclose(predict_proba(loaded, x), predict_proba(bundle, x), atol=1e-6)
    assert loaded.threshold == bundle.threshold and loaded.labels == bundle.labels
    with pytest.raises(CheckpointError, match="differs from the expected"):
        load_bundle(path, expected_sha256="0" * 64)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_bundle(broken)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(CheckpointError, match="is not a"):
        load_bundle(other)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_bundle(tmp_path / "missing.pt")


def test_diagnosis_refuses_out_of_scope_and_labels_in_scope(tmp_path: Path) -> None:
    bundle = _trained(tmp_path)
    x, _ = _task(4, seed=5)
    # an in-domain detector for this tiny model: fitted on its own features
    from assistant.vision.checkpoint import as_batch, ood_features

    fit_x, fit_y = _task(400, seed=6)
    val_x, _ = _task(200, seed=7)
    bundle.ood = MahalanobisDetector.fit(ood_features(bundle.model, as_batch(fit_x)), fit_y,
                                         ood_features(bundle.model, as_batch(val_x)),
                                         quantile=1.0)
    model = VisionModel(bundle)
    out = model.diagnose([np.zeros((32, 32), np.float32), *x], heatmap=True)
    assert not out[0].in_scope and out[0].label is None and out[0].probability is None
    assert all(d.in_scope and d.label in ("none", "spot") for d in out[1:])
    assert all(d.heat is not None and d.heat.shape == (4, 4) for d in out[1:])


def test_weight_averaging_learns_and_keeps_the_averaged_weights() -> None:
    x_train, y_train = _task(96, seed=1)
    x_val, y_val = _task(48, seed=2)
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=12, batch_size=16, lr=3e-3, patience=12, ema=0.9)
    result = train(PatchTransformer(CFG), x_train, y_train, x_val, y_val, cfg, progress=False)
    x_test, y_test = _task(48, seed=3)
    with torch.no_grad():
        p = result.model(torch.from_numpy(x_test).unsqueeze(1)).logits.softmax(-1)[:, 1]
    assert roc_auc(y_test, p.numpy()) >= 0.95
    # The kept weights are the average's: they differ from a run without averaging that
    # took the same steps from the same start.
    torch.manual_seed(0)
    plain = train(PatchTransformer(CFG), x_train, y_train, x_val, y_val,
                  TrainConfig(epochs=12, batch_size=16, lr=3e-3, patience=12), progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(result.model.state_dict().values(),
                                                     plain.model.state_dict().values(),
                                                     strict=True))


def test_compiled_scorers_agree_with_the_eager_model_on_the_cnn_stem() -> None:
    """The channels-last TorchScript scorer (and the MKL-DNN one) give the eager model's
    probabilities and scope features, and the traced rollout scorer the rollout heatmap
    too; converting the eager model changes no output."""
    from assistant.vision.explain import normalise_heat, patch_heat
    from assistant.vision.infer import _Scorer, channels_last, compile_scorer

    torch.manual_seed(0)
    cfg = VisionConfig(image_size=64, width=32, depth=1, heads=2, stem_stages=4, dropout=0.0)
    model = PatchTransformer(cfg).eval()
    with torch.no_grad():  # batch norms away from identity, so folding them is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    bundle = VisionBundle(model, PreprocessConfig(image_size=64), ("none", "spot"), 1.3, 0.2,
                          MahalanobisDetector.fit(np.random.default_rng(0).normal(size=(8, 4)),
                                                  np.array([0, 1] * 4),
                                                  np.random.default_rng(1).normal(size=(4, 4))),
                          {"name": "tiny-hybrid"})
    x = torch.rand(5, 1, 64, 64)
    with torch.no_grad():
        p_ref, f_ref = _Scorer(bundle)(x)
        for scorer in (compile_scorer(bundle), compile_scorer(bundle, mkldnn=True)):
            p, f = scorer(x)
            assert torch.allclose(p, p_ref, atol=1e-5) and torch.allclose(f, f_ref, atol=1e-4)
        p_r, f_r, relevance = compile_scorer(bundle, rollout=True)(x)  # one pass, traced
        assert torch.allclose(p_r, p_ref, atol=1e-5) and torch.allclose(f_r, f_ref, atol=1e-4)
        heat = patch_heat(model, x, "rollout")
        assert np.allclose(normalise_heat(relevance, cfg.grid), heat, atol=1e-4)
        assert heat.std() > 0
        channels_last(model)
        assert model.stem.blocks[0][1].weight.is_contiguous(memory_format=torch.channels_last)
        p_cl, f_cl = _Scorer(bundle)(x)
    assert torch.allclose(p_cl, p_ref, atol=1e-5) and torch.allclose(f_cl, f_ref, atol=1e-4)

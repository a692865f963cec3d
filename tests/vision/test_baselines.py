"""Tests for ``assistant.vision.baselines`` on tiny synthetic images (32 x 32, patch 8)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
import torch

from assistant.vision.baselines import (
    GPT2_NAME,
    L2_GRID,
    LOGISTIC_NAME,
    NaiveGPT2Classifier,
    NaiveGPT2Config,
    downsample,
    patchify,
    predict_proba_gpt2,
    predict_proba_logistic,
    run_baselines,
    train_logistic,
    train_naive_gpt2,
)
from assistant.vision.data import Dataset

TINY = NaiveGPT2Config(image_size=32, patch_size=8, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def squares(n: int, seed: int, contrast: float = 0.25,
            ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Noisy grey 32 x 32 images with a centre square, bright (label 1) or dark (0)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % 2
    x = (0.5 + 0.1 * rng.standard_normal((n, 32, 32))).astype(np.float32)
    shift = np.where(y == 1, contrast, -contrast).astype(np.float32)
    x[:, 10:22, 10:22] += shift[:, None, None]
    return np.clip(x, 0.0, 1.0), y


def _model() -> NaiveGPT2Classifier:
    torch.manual_seed(0)
    return NaiveGPT2Classifier(TINY).eval()


# ---------------------------------------------------------------- naive GPT-2


def test_patchify_is_row_major() -> None:
    index = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    x = index.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # (1, 1, 32, 32)
    patches = patchify(x, 8)  # (1, 16, 64)
    assert patches.shape == (1, 16, 64)
    assert torch.equal(patches, torch.arange(16.0)[None, :, None].expand(1, 16, 64))


def test_classifier_shapes_and_probabilities() -> None:
    model = _model()
    x = torch.rand(3, 1, 32, 32)
    assert model(x).shape == (3, 2)
    assert model.hidden_states(x).shape == (3, TINY.num_patches, TINY.n_embd)
    p = predict_proba_gpt2(model, x[:, 0].numpy())
    assert p.shape == (3,) and p.dtype == np.float64
    assert np.all((p >= 0) & (p <= 1))


def test_classifier_rejects_wrong_image_size() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
        _model()(torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        NaiveGPT2Config(image_size=30, patch_size=8)


@torch.no_grad()
def test_head_reads_the_last_token_only() -> None:
    model = _model()
    x = torch.rand(2, 1, 32, 32)
    hidden = model.hidden_states(x)
    torch.testing.assert_close(model(x), model.head(hidden[:, -1]))
    last = x.clone()
    last[..., 24:, 24:] = torch.rand(2, 1, 8, 8)  # patch 15, the last token
    assert not torch.allclose(model(x), model(last))
    first = x.clone()
    first[..., :8, :8] = torch.rand(2, 1, 8, 8)  # patch 0: the last token sees it too
    assert not torch.allclose(model(x), model(first))


@torch.no_grad()
def test_attention_is_causal() -> None:
    model = _model()
    x = torch.rand(2, 1, 32, 32)
    later = x.clone()
    later[..., 16:24, 16:24] = torch.rand(2, 1, 8, 8)  # patch 10 (row 2, column 2)
    before, after = model.hidden_states(x), model.hidden_states(later)
    torch.testing.assert_close(before[:, :10], after[:, :10], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 10:], after[:, 10:])


def test_gpt2_training_is_deterministic_for_a_seed() -> None:
    x, y = squares(16, seed=1)

    def fit(seed: int) -> npt.NDArray[np.float64]:
        model = train_naive_gpt2(x, y, TINY, epochs=2, batch_size=8, seed=seed,
                                 progress=False)
        assert not model.training
        return predict_proba_gpt2(model, x)

    a, b, c = fit(3), fit(3), fit(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ---------------------------------------------------------------- logistic regression


def test_downsample_shape_and_constant_image() -> None:
    x = np.full((3, 32, 32), 0.37, dtype=np.float32)
    out = downsample(x, size=8)
    assert out.shape == (3, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.37, atol=1e-6)


def test_downsample_averages_blocks() -> None:
    x = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    blocks = x.reshape(2, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(2, 64)
    np.testing.assert_allclose(downsample(x, size=8), blocks, atol=1e-6)


def test_logistic_separates_squares_and_its_loss_falls() -> None:
    x, y = squares(64, seed=0)
    x_test, y_test = squares(64, seed=1)
    model = train_logistic(x, y, size=8, l2=1e-3)
    p = predict_proba_logistic(model, x_test)
    assert p.shape == (64,)
    assert np.mean((p >= 0.5) == y_test) > 0.95
    history = np.array(model.loss_history)
    assert len(history) > 2
    assert np.all(np.diff(history) <= 1e-12)  # strong Wolfe: never up
    assert history[-1] < 0.5 * history[0]


def test_logistic_is_deterministic() -> None:
    x, y = squares(32, seed=2)
    a, b = train_logistic(x, y, size=8), train_logistic(x, y, size=8)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert a.bias == b.bias


def test_logistic_l2_is_the_best_on_validation() -> None:
    x, y = squares(40, seed=3, contrast=0.02)  # weak signal: some L2 helps
    x_val, y_val = squares(200, seed=4, contrast=0.02)
    chosen = train_logistic(x, y, size=8, x_val=x_val, y_val=y_val)
    losses = []
    for l2 in L2_GRID:
        p = np.clip(predict_proba_logistic(train_logistic(x, y, size=8, l2=l2), x_val),
                    1e-12, 1 - 1e-12)
        losses.append(-np.mean(y_val * np.log(p) + (1 - y_val) * np.log(1 - p)))
    assert chosen.l2 == L2_GRID[int(np.argmin(losses))]
    assert L2_GRID[0] < chosen.l2 < L2_GRID[-1]  # an interior choice: the search matters


# ---------------------------------------------------------------- both, on one split


def _dataset(n: int) -> Dataset:
    x, y = squares(n, seed=6)
    folds = np.array(["test" if i % 5 == 0 else str(i % 5) for i in range(n)])
    return Dataset(x, y, np.arange(n, dtype=np.int64), folds,
                   tuple(f"img{i}.png" for i in range(n)), "0" * 64)


def test_run_baselines_returns_probabilities_on_eval_images() -> None:
    data = _dataset(40)
    train, val, test = data.fold_masks("1")
    out = run_baselines(data, test, train, val, progress=False, gpt2_cfg=TINY, epochs=1)
    assert set(out) == {GPT2_NAME, LOGISTIC_NAME}
    for p in out.values():
        assert p.shape == (int(test.sum()),)
        assert np.all((p >= 0) & (p <= 1))
    with pytest.raises(ValueError, match="overlaps"):
        run_baselines(data, test | val, train, val, progress=False, gpt2_cfg=TINY, epochs=1)

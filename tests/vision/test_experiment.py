"""Cross-validation plumbing on a tiny synthetic data set with a tiny hybrid model."""

import numpy as np
import pytest

from assistant.config import Settings
from assistant.imaging.preprocess import PreprocessConfig
from assistant.vision.data import Dataset
from assistant.vision.evaluate import cv_summary
from assistant.vision.experiment import N_FOLDS, cross_validate
from assistant.vision.model import VisionConfig
from assistant.vision.train import TrainConfig


def _dataset(per_fold: int = 12, size: int = 32) -> Dataset:
    rng = np.random.default_rng(0)
    folds = np.array([str(f) for f in range(N_FOLDS) for _ in range(per_fold)]
                     + ["test"] * per_fold)
    n = len(folds)
    labels = (np.arange(n) % 2).astype(np.int64)
    images = rng.random((n, size, size)).astype(np.float32) * 0.3
    images[labels == 1, 8:16, 8:16] = 1.0  # the "tumour": a bright square
    return Dataset(images, labels, np.arange(n, dtype=np.int64), folds,
                   tuple(f"img{i}.png" for i in range(n)), "0" * 64)


@pytest.mark.data
def test_cross_validation_evaluates_every_fold_once() -> None:
    cfg = VisionConfig(image_size=32, stem_stages=3, width=32, depth=1, heads=2)
    train_cfg = TrainConfig(epochs=2, batch_size=16, freeze_blocks=2, views=2, patience=2)
    data = _dataset()
    outcomes = cross_validate(data, cfg, PreprocessConfig(image_size=32), train_cfg,
                              Settings().data_dir, progress=False)
    assert [o.fold for o in outcomes] == [str(k) for k in range(N_FOLDS)]
    for o in outcomes:
        assert np.array_equal(o.labels, data.labels[data.folds == o.fold])
        assert o.p_tumour.shape == o.labels.shape and 0 < o.threshold <= 0.25
    summary = cv_summary(outcomes)
    assert len(summary["folds"]) == N_FOLDS
    assert 0.0 <= summary["accuracy"]["mean"] <= 1.0
    assert summary["accuracy"]["std"] >= 0.0


@pytest.mark.data
def test_cross_validation_trains_from_restored_copies() -> None:
    """Views start from the re-stored copies the data set carries, in every fold."""
    cfg = VisionConfig(image_size=32, stem_stages=3, width=32, depth=1, heads=2)
    train_cfg = TrainConfig(epochs=2, batch_size=16, freeze_blocks=2, views=2, patience=2,
                            restored_copies=2, restored_share=1.0)
    data = _dataset()
    shifted = np.roll(data.images, 1, axis=2)[:, None]  # a copy the image itself is not
    data = Dataset(data.images, data.labels, data.groups, data.folds, data.paths,
                   data.split_sha256, np.concatenate([shifted, shifted], axis=1))
    outcomes = cross_validate(data, cfg, PreprocessConfig(image_size=32), train_cfg,
                              Settings().data_dir, progress=False)
    assert [o.fold for o in outcomes] == [str(k) for k in range(N_FOLDS)]
    assert all(np.isfinite(o.p_tumour).all() for o in outcomes)


def test_recipe_and_data_set_must_agree_on_restored_copies() -> None:
    """A run never records re-stored copies it did not train on, or the reverse."""
    cfg = VisionConfig(image_size=32, stem_stages=3, width=32, depth=1, heads=2)
    data = _dataset(per_fold=2)
    with pytest.raises(ValueError, match="asks for 2 re-stored copies"):
        cross_validate(data, cfg, PreprocessConfig(image_size=32),
                       TrainConfig(restored_copies=2), Settings().data_dir, progress=False)
    with_copies = Dataset(data.images, data.labels, data.groups, data.folds, data.paths,
                          data.split_sha256, data.images[:, None].copy())
    with pytest.raises(ValueError, match="asks for 0 re-stored copies"):
        cross_validate(with_copies, cfg, PreprocessConfig(image_size=32), TrainConfig(),
                       Settings().data_dir, progress=False)
    with pytest.raises(ValueError, match="do not match the images"):
        Dataset(data.images, data.labels, data.groups, data.folds, data.paths,
                data.split_sha256, data.images[:-1, None].copy())

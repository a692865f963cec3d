"""Synthetic images and labelled groups for the de-duplication and split tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest


def smooth_texture(seed: int, height: int = 192, width: int = 224) -> np.ndarray:
    """A float32 image in [0.1, 0.9]: bilinearly upsampled 12 x 14 random blocks, blurred.

    Large smooth structures, so its low DCT frequencies are well separated from their
    median and its perceptual hash survives re-encoding and rescaling.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.random((12, 14)).astype(np.float32)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    img = cv2.GaussianBlur(img, (0, 0), 4.0)
    img = (img - img.min()) / (img.max() - img.min())
    return (0.1 + 0.8 * img).astype(np.float32)


@pytest.fixture
def texture() -> Callable[[int], np.ndarray]:
    """``texture(seed)`` -> a smooth random float32 texture (see ``smooth_texture``)."""
    return smooth_texture


def synthetic_groups(
    seed: int, n_groups: int = 300
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(labels, groups) for images in shuffled order: groups of 1-12 images, about 60%
    tumour groups, and 5% of groups holding both labels (a labelling conflict)."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.geometric(0.35, n_groups), 12)
    group_label = (rng.random(n_groups) < 0.6).astype(np.int64)
    groups = np.repeat(np.arange(n_groups), sizes)
    labels = np.repeat(group_label, sizes)
    mixed = np.flatnonzero((sizes > 1) & (rng.random(n_groups) < 0.05))
    for group in mixed:
        first = np.flatnonzero(groups == group)[0]
        labels[first] = 1 - labels[first]
    order = rng.permutation(groups.size)
    return labels[order], groups[order]


@pytest.fixture
def labelled_groups() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Synthetic (labels, groups) of 300 groups, fixed seed."""
    return synthetic_groups(seed=7)


@pytest.fixture
def settings_data_dir() -> Path:
    from assistant.config import Settings

    return Settings().data_dir

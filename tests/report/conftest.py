"""The released pipeline on real Br35H test-fold images, and small synthetic evidence."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import cv2
import numpy as np
import pytest

from assistant.config import Settings
from assistant.pipeline import Pipeline
from assistant.report import ModelInfo
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest


@pytest.fixture(scope="session")
def released() -> Pipeline:
    """The released vision model, no literature index."""
    return Pipeline.from_settings(Settings(), citations=False)


@pytest.fixture(scope="session")
def test_fold() -> list[tuple[Path, int]]:
    """(path, label) of every Br35H test-fold image, label 1 = tumour."""
    data_dir = Settings().data_dir
    return [(data_dir / r.path, r.label) for r in read_split_manifest(BR35H_SPLIT_PATH)
            if r.fold == TEST_FOLD]


@pytest.fixture(scope="session")
def photo_png() -> bytes:
    """A colour photograph (the temple of scikit-learn's ``load_sample_image``), as PNG:
    not a brain MRI slice. Read from the wheel's file (its loader needs Pillow)."""
    jpeg = (importlib.resources.files("sklearn.datasets") / "images" / "china.jpg").read_bytes()
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None
    return bytes(cv2.imencode(".png", bgr)[1].tobytes())


@pytest.fixture
def model_info() -> ModelInfo:
    return ModelInfo(name="vision-test", sha256="ab" * 32, labels=("no tumour", "tumour"),
                     input_size=128, grid=8, heat_method="rollout",
                     training_data="Br35H brain MRI slices", training_source="test==0")


def disc_image(size: int = 200, centre: tuple[int, int] = (100, 100), radius: int = 80,
               background: float = 0.0, seed: int = 0) -> np.ndarray:
    """A bright disc ("head") with some texture on a (possibly noisy) background."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), background, np.float32)
    img += rng.normal(0, 0.02, img.shape).astype(np.float32) if background else 0
    cv2.circle(img, centre, radius, 0.7, thickness=-1)
    cv2.circle(img, centre, radius // 3, 0.4, thickness=-1)  # a darker "ventricle"
    return np.clip(img, 0, 1)

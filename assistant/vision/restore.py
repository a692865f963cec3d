"""The same slice stored another way, for training: re-encoded as JPEG, resampled, or both.

A hospital's export, a conversion tool or a viewer's "save as" re-stores a slice before it
reaches the service, and the verdict should not move with it. Tensor augmentation
(``augment.py``) works on the model input, after the content box is found and the slice
is resized; it cannot show the model what a lossy re-encoding or another stored size does
to the input, box included. These copies are made from the source file's 8-bit grey
levels and go through the checkpoint's own ``preprocess``, so every step after reading is
the one the service runs.

Each copy is drawn, per image and copy index from a fixed seed, from three kinds:
JPEG at a quality in [40, 95]; resampled by a factor log-uniform in [0.5, 2] with area,
bilinear or bicubic interpolation; or resampled and then JPEG-encoded.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from assistant.imaging import read_image
from assistant.imaging.preprocess import PreprocessConfig, preprocess, to_grey

JPEG_QUALITY = (40, 95)
SCALE = (0.5, 2.0)
_INTERPOLATIONS = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


def grey_levels(pixels: np.ndarray) -> npt.NDArray[np.uint8]:
    """A reader's pixels as the 8-bit grey levels a re-stored copy starts from."""
    return np.round(to_grey(pixels) * 255).astype(np.uint8)


def _jpeg(grey: npt.NDArray[np.uint8], quality: int) -> npt.NDArray[np.uint8]:
    ok, data = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    decoded = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if decoded is None:
        raise RuntimeError("OpenCV could not decode its own JPEG")
    return np.asarray(decoded, dtype=np.uint8)


def _resampled(grey: npt.NDArray[np.uint8], scale: float, interpolation: int
               ) -> npt.NDArray[np.uint8]:
    height, width = grey.shape
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    out = cv2.resize(grey.astype(np.float32), size, interpolation=interpolation)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def restore(grey: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """One re-stored copy of ``grey``: JPEG, resampled, or resampled then JPEG."""
    kind = int(rng.integers(3))
    out = grey
    if kind >= 1:
        scale = math.exp(rng.uniform(math.log(SCALE[0]), math.log(SCALE[1])))
        interpolation = _INTERPOLATIONS[int(rng.integers(len(_INTERPOLATIONS)))]
        out = _resampled(out, scale, interpolation)
    if kind != 1:
        out = _jpeg(out, int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
    return out


def check_copies(copies: tuple[int, ...], images: tuple[int, ...]) -> None:
    """Re-stored copies of shape (N, K, *S) belong to images of shape (N, *S); a
    ValueError otherwise."""
    if len(copies) != len(images) + 1 or copies[0] != images[0] or copies[2:] != images[1:]:
        raise ValueError(f"re-stored copies {copies} do not match the images {images}: "
                         "(N, K, *image shape) expected")


def restored_copies(source: bytes | Path, cfg: PreprocessConfig, copies: int,
                    seed: int, index: int) -> npt.NDArray[np.float32]:
    """(copies, S, S) model inputs of ``copies`` re-stored versions of one image (a path
    or encoded bytes), the ``index``-th of its data set: the same seed and index give the
    same copies."""
    grey = grey_levels(read_image(source).pixels)
    rng = np.random.default_rng([seed % 2**32, index])  # any integer seed, -1 included
    return np.stack([preprocess(restore(grey, rng).astype(np.float32) / 255, cfg)
                     .astype(np.float32) for _ in range(copies)])

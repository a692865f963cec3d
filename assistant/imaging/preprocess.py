"""Pure preprocessing from reader pixels to the model's square input, and patch views of it.

Images come from the reader as floating-point arrays with display values in [0, 1],
shaped (H, W) grey or (H, W, 3) RGB. Every function here is pure (no I/O) and checks its
input at the boundary, raising ``ValueError`` that says what was expected and what came.
``PreprocessConfig`` travels with a checkpoint so that preprocessing is never typed twice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt

Denoise = Literal["none", "nlm"]

FloatArray = npt.NDArray[np.floating[Any]]

_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_UINT16_MAX = 65535
# Connected components smaller than this fraction of the largest one are treated as specks.
_MIN_COMPONENT_FRACTION = 0.01


def _check_image(img: np.ndarray, name: str = "image") -> None:
    """Raise ValueError unless ``img`` is a finite float (H, W) or (H, W, 3) array."""
    if not isinstance(img, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(img).__name__}")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"{name} must have shape (H, W) or (H, W, 3), got {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"{name} must have a floating dtype, got {img.dtype}")
    if not np.isfinite(img).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")


def _check_positive(value: int, name: str) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def to_grey(img: np.ndarray) -> np.ndarray:
    """RGB to BT.601 luminance as float32 (H, W); a grey image passes through unchanged."""
    _check_image(img)
    if img.ndim == 2:
        return img
    return np.asarray(img.astype(np.float32, copy=False) @ _BT601, dtype=np.float32)


def denoise_nlm(
    img: np.ndarray, strength: float = 0.05, template: int = 7, search: int = 21
) -> np.ndarray:
    """Non-local means (Buades et al.) via OpenCV on a 16-bit quantisation, L1 patch norm.

    ``strength`` is OpenCV's ``h`` in display units (h = strength * 65535 on the 16-bit
    scale); 0 returns the input. Values are clipped to [0, 1] before quantising. RGB images
    are denoised with one ``h`` for all channels. Returns float32 in [0, 1].
    """
    _check_image(img)
    if not np.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a finite number >= 0, got {strength}")
    for value, name in ((template, "template"), (search, "search")):
        if value <= 0 or value % 2 == 0:
            raise ValueError(f"{name} window must be a positive odd size, got {value}")
    if strength == 0:
        return img
    quantised = np.round(np.clip(img, 0.0, 1.0) * _UINT16_MAX).astype(np.uint16)
    out = cv2.fastNlMeansDenoising(
        quantised,
        h=[float(strength) * _UINT16_MAX],
        templateWindowSize=template,
        searchWindowSize=search,
        normType=cv2.NORM_L1,
    )
    return np.asarray(out, dtype=np.float32) / np.float32(_UINT16_MAX)


_SELECT_BINS = 4096  # bins of ``order_statistics``' one pass, at most


def order_statistics(values: np.ndarray, ranks: Sequence[int]) -> np.ndarray:
    """``np.sort(values, axis=None)[ranks]``, exactly, without sorting or partitioning the
    whole array (which took most of a percentile normalisation's time): one pass puts
    every value in one of up to ``_SELECT_BINS`` equal-width bins, an order-preserving
    map, so the values of rank r are those of the bin whose cumulative count passes r,
    and each rank is selected among that bin's members alone. ``values`` must be finite."""
    flat = values.ravel()
    for rank in ranks:
        if not 0 <= rank < flat.size:
            raise ValueError(f"rank {rank} is outside 0..{flat.size - 1}")
    low, high = flat.min(), flat.max()
    if low == high:
        return np.full(len(ranks), low, dtype=flat.dtype)
    bins = max(1, min(_SELECT_BINS, flat.size // 16))
    spread = float(high) - float(low)
    floating = np.issubdtype(flat.dtype, np.floating)
    with np.errstate(over="ignore"):
        scale = flat.dtype.type(bins / spread) if floating else np.inf
    if not (floating and spread < float(np.finfo(flat.dtype).max)
            and np.isfinite(scale) and scale > 0):
        return np.partition(flat, sorted(set(ranks)))[list(ranks)]  # not binnable as floats
    # In the values' own precision: subtracting, scaling by a positive number and
    # flooring are monotone under rounding, so x <= y never lands x in a later bin than
    # y; the clip keeps the top values in the last bin.
    offset = np.subtract(flat, low)
    offset *= scale
    which = offset.astype(np.intp)
    np.clip(which, 0, bins - 1, out=which)
    ends = np.cumsum(np.bincount(which, minlength=bins))
    out = np.empty(len(ranks), dtype=flat.dtype)
    by_bin: dict[int, list[int]] = {}
    for i, rank in enumerate(ranks):
        by_bin.setdefault(int(np.searchsorted(ends, rank, side="right")), []).append(i)
    for b, positions in by_bin.items():
        start = int(ends[b - 1]) if b else 0
        members = flat[which == b]
        kth = sorted({ranks[i] - start for i in positions})
        members.partition(kth)
        for i in positions:
            out[i] = members[ranks[i] - start]
    return out


def percentiles(values: np.ndarray, qs: Sequence[float], divisor: float | None = None,
                ) -> npt.NDArray[np.float64]:
    """``np.percentile(values, qs)`` (its default, linear method), the same numbers to the
    last bit, from ``order_statistics``: the two ranks around each percentile's position,
    interpolated as numpy does. With ``divisor``: ``np.percentile(values.astype(float64) /
    divisor, qs)``, the ranks still selected among ``values`` (dividing by a positive
    number keeps their order, and each value divides to the element numpy would sort).
    ``values`` must be finite."""
    count = values.size
    if count == 0:
        raise ValueError("percentiles of an empty array")
    if divisor is not None and not divisor > 0:
        raise ValueError(f"divisor must be > 0, got {divisor}")
    position = (count - 1) * np.true_divide(np.asarray(qs, dtype=np.float64), 100)
    if np.any((position < 0) | (position > count - 1)):
        raise ValueError(f"percentiles must be in [0, 100], got {list(qs)}")
    below = np.floor(position)
    gamma = position - below
    below_rank = below.astype(np.intp)
    above_rank = np.minimum(below_rank + 1, count - 1)
    ranks = sorted({*below_rank.tolist(), *above_rank.tolist()})
    stats = dict(zip(ranks, order_statistics(values, ranks), strict=True))
    dtype = values.dtype if divisor is None else np.dtype(np.float64)
    a = np.array([stats[r] for r in below_rank.tolist()], dtype=dtype)
    b = np.array([stats[r] for r in above_rank.tolist()], dtype=dtype)
    if divisor is not None:
        a /= divisor
        b /= divisor
    diff = b - a
    out = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return out.astype(np.float64)


def normalize_percentile(img: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the [low, high] percentiles of ``img`` to [0, 1] and clip, as float32.

    Robust to a few extreme pixels (hot pixels, burned-in text) that would flatten a
    min-max scaling. If the percentiles coincide the min-max range is used instead; a
    constant image gives zeros.
    """
    _check_image(img)
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    work = img.astype(np.float64)
    scale = float(np.max(np.abs(work)))
    if scale == 0.0:
        return np.zeros(img.shape, dtype=np.float32)
    work /= scale  # keeps differences finite for values near the float64 limit
    # the percentiles of ``work``, selected among the narrower input's values
    lo, hi = (float(v) for v in percentiles(img, [low, high], divisor=scale))
    if hi <= lo:
        lo, hi = float(work.min()), float(work.max())
    if hi <= lo:
        return np.zeros(img.shape, dtype=np.float32)
    out = np.clip((work - lo) / (hi - lo), 0.0, 1.0)
    return out.astype(np.float32)


def _content_mask(grey: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels above ``threshold``, opened, keeping only components that are not specks."""
    above = (grey > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(above, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:  # label 0 is the background
        return np.zeros(grey.shape, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    kept = np.zeros(count, dtype=bool)  # by label: a look-up, a quarter of np.isin's time
    kept[np.flatnonzero(areas >= _MIN_COMPONENT_FRACTION * areas.max()) + 1] = True
    return kept[labels]


def content_bbox(
    img: np.ndarray, threshold: float = 0.05, margin: int = 2, work_side: int | None = None
) -> tuple[int, int, int, int]:
    """Half-open box (y0, y1, x0, x1) around the content above ``threshold``, plus ``margin``.

    Isolated noise pixels and small text specks do not extend the box: the mask is opened
    and components under 1% of the largest one's area are dropped. No content -> the whole
    image. ``work_side``: find the content on a copy whose longer side is at most that
    (area-averaged), so that the box does not depend on the resolution the same slice was
    stored at (an image stored twice as large keeps noise specks that a 3x3 opening no
    longer removes); the box is mapped back outwards to ``img``'s pixels.
    """
    _check_image(img)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if work_side is not None and work_side < 8:
        raise ValueError(f"work_side must be >= 8 or None, got {work_side}")
    height, width = img.shape[:2]
    grey = to_grey(img)
    factor = 1.0 if work_side is None else work_side / max(height, width)
    if factor < 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    mask = _content_mask(grey, threshold)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, height, 0, width
    sy, sx = height / mask.shape[0], width / mask.shape[1]  # 1.0 at full resolution
    y0, y1 = math.floor(rows[0] * sy) - margin, math.ceil((rows[-1] + 1) * sy) + margin
    x0, x1 = math.floor(cols[0] * sx) - margin, math.ceil((cols[-1] + 1) * sx) + margin
    return max(0, y0), min(height, y1), max(0, x0), min(width, x1)


def config_bbox(img: np.ndarray, cfg: PreprocessConfig) -> tuple[int, int, int, int]:
    """The box ``preprocess`` crops ``img`` (the normalised frame) to under ``cfg``: the
    content box with its threshold and working side, or the whole image without a crop."""
    if not cfg.crop:
        return 0, img.shape[0], 0, img.shape[1]
    return content_bbox(img, cfg.crop_threshold, work_side=cfg.crop_work_side)


# The low-pass blurs at most this many target pixels' worth of source per target pixel: a
# larger crop is first area-averaged down to it, so a 40-megapixel frame does not take a
# blur hundreds of taps wide (Br35H crops shrink by at most about 8 to 128 px).
MAX_BLUR_FACTOR = 8.0


def _check_antialias(strength: float) -> None:
    if not 0.0 <= strength <= 4.0:
        raise ValueError(f"antialias must be in [0, 4], got {strength}")


def _low_pass(img: np.ndarray, size: int, strength: float) -> np.ndarray:
    out: np.ndarray = img.astype(np.float32, copy=False)
    longer = max(out.shape[:2])
    if strength == 0 or longer <= size:
        return out
    if longer > MAX_BLUR_FACTOR * size:
        scale = MAX_BLUR_FACTOR * size / longer
        shape = (max(1, round(out.shape[1] * scale)), max(1, round(out.shape[0] * scale)))
        out = cv2.resize(out, shape, interpolation=cv2.INTER_AREA)
    factor = max(out.shape[:2]) / size  # > 1: the cap leaves 8 x size
    sigma = strength * float(np.sqrt(factor * factor - 1.0))
    return cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT_101)


def antialias_filter(img: np.ndarray, size: int, strength: float) -> np.ndarray:
    """Low-pass ``img`` before its longer side is shrunk to ``size``, so that the result
    depends little on the resolution the image was stored at. An area average alone lets
    fine texture alias, and differently for each shrink factor: a slice stored at twice the
    size reached the model input with other high-frequency content than as fetched.

    A Gaussian of sigma ``strength * sqrt(f**2 - 1)`` pixels for a shrink factor f: the
    blur that brings a source pixel's own footprint up to ``strength`` target pixels, the
    same in target pixels whatever f is. (Halving first with ``cv2.pyrDown`` is cheaper but
    adds its own blur, a different amount on each side of every power of two.) A crop more
    than ``MAX_BLUR_FACTOR`` times ``size`` is area-averaged down to that first. 0 or no
    shrink: the image as given. Returns float32, possibly smaller than ``img``.
    """
    _check_image(img)
    _check_positive(size, "size")
    _check_antialias(strength)
    return _low_pass(img, size, strength)


def resize_and_pad(img: np.ndarray, size: int, pad_value: float = 0.0,
                   antialias: float = 0.0) -> np.ndarray:
    """Scale the longer side to ``size`` keeping aspect ratio, centred on a square canvas.

    INTER_AREA when shrinking, INTER_LINEAR when growing; the shorter side is at least 1.
    ``antialias``: the strength of ``antialias_filter`` applied first when shrinking (0:
    none). Returns float32 (size, size) or (size, size, 3).
    """
    _check_image(img)
    _check_positive(size, "size")
    height, width = img.shape[:2]
    scale = size / max(height, width)
    new_h = min(size, max(1, round(height * scale)))
    new_w = min(size, max(1, round(width * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    _check_antialias(antialias)
    source = _low_pass(img, size, antialias) if scale < 1 else img
    resized = cv2.resize(source.astype(np.float32), (new_w, new_h), interpolation=interpolation)
    # Both interpolations are convex; clipping removes float rounding past the input range.
    resized = np.clip(resized, img.min(), img.max())
    canvas = np.full((size, size, *img.shape[2:]), pad_value, dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized.reshape(new_h, new_w, *img.shape[2:])
    return canvas


def to_patches(img: np.ndarray, patch: int) -> np.ndarray:
    """Split into (N, patch*patch*C) rows, ViT order: patches row-major, pixels row-major,
    channels last (C = 1 for a grey image)."""
    _check_image(img)
    _check_positive(patch, "patch")
    height, width = img.shape[:2]
    if height % patch or width % patch:
        raise ValueError(f"image {height}x{width} is not divisible into {patch}x{patch} patches")
    channels = img.shape[2] if img.ndim == 3 else 1
    grid = img.reshape(height // patch, patch, width // patch, patch, channels)
    # (gh, p, gw, p, C) -> (gh, gw, p, p, C)
    return grid.transpose(0, 2, 1, 3, 4).reshape(-1, patch * patch * channels)


def from_patches(patches: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """Inverse of ``to_patches``: (N, p*p*C) back to (H, W), or (H, W, 3) when channels is 3."""
    if not isinstance(patches, np.ndarray) or patches.ndim != 2:
        shape = getattr(patches, "shape", type(patches).__name__)
        raise ValueError(f"patches must be a 2-D array (N, p*p*C), got {shape}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    _check_positive(height, "height")
    _check_positive(width, "width")
    count, length = patches.shape
    patch = round((length / channels) ** 0.5)
    if patch <= 0 or patch * patch * channels != length:
        raise ValueError(f"patch length must be p*p*{channels} for some p, got {length}")
    if height % patch or width % patch or count != (height // patch) * (width // patch):
        raise ValueError(
            f"{count} patches of {patch}x{patch} do not tile an image {height}x{width}"
        )
    grid = patches.reshape(height // patch, width // patch, patch, patch, channels)
    image = grid.transpose(0, 2, 1, 3, 4).reshape(height, width, channels)
    return image[:, :, 0] if channels == 1 else image


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw reader pixels become model input; stored in every checkpoint."""

    image_size: int = 224
    denoise: Denoise = "none"
    denoise_strength: float = 0.05
    low_pct: float = 1.0
    high_pct: float = 99.0
    crop: bool = True
    crop_threshold: float = 0.05
    # The content box is found at most this many pixels on the longer side (None: at the
    # image's own resolution, as checkpoints before it were trained).
    crop_work_side: int | None = None
    grey: bool = True
    # Strength of the low-pass filter before the crop is shrunk to ``image_size``
    # (``antialias_filter``; 0: none, as checkpoints before it were trained).
    antialias: float = 0.0

    def __post_init__(self) -> None:
        _check_positive(self.image_size, "image_size")
        if self.denoise not in get_args(Denoise):
            raise ValueError(f"denoise must be one of {get_args(Denoise)}, got {self.denoise!r}")
        if not self.denoise_strength >= 0:
            raise ValueError(f"denoise_strength must be >= 0, got {self.denoise_strength}")
        if not 0.0 <= self.low_pct < self.high_pct <= 100.0:
            raise ValueError(
                "percentiles must satisfy 0 <= low_pct < high_pct <= 100, "
                f"got {self.low_pct}, {self.high_pct}"
            )
        if not 0.0 <= self.crop_threshold < 1.0:
            raise ValueError(f"crop_threshold must be in [0, 1), got {self.crop_threshold}")
        if self.crop_work_side is not None and self.crop_work_side < 8:
            raise ValueError(f"crop_work_side must be >= 8 or None, got {self.crop_work_side}")
        _check_antialias(self.antialias)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, as stored in a checkpoint."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Rebuild from ``to_dict`` output; missing keys take defaults, unknown keys raise."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown PreprocessConfig keys: {unknown}; expected some of {sorted(known)}"
            )
        return cls(**data)


def preprocess(img: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Reader pixels -> model input: grey, denoise, percentile-normalise, crop, low-pass and
    resize, pad.

    Deterministic; returns float32 in [0, 1], (size, size) or (size, size, 3).
    """
    _check_image(img)
    out = to_grey(img) if cfg.grey else img
    if cfg.denoise == "nlm":
        out = denoise_nlm(out, strength=cfg.denoise_strength)
    out = normalize_percentile(out, cfg.low_pct, cfg.high_pct)
    y0, y1, x0, x1 = config_bbox(out, cfg)
    return resize_and_pad(out[y0:y1, x0:x1], cfg.image_size, antialias=cfg.antialias)

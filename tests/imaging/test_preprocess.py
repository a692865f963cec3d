"""Tests for the pure preprocessing in ``assistant.imaging.preprocess``."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from assistant.imaging.preprocess import (
    PreprocessConfig,
    antialias_filter,
    content_bbox,
    denoise_nlm,
    from_patches,
    normalize_percentile,
    order_statistics,
    percentiles,
    preprocess,
    resize_and_pad,
    to_grey,
    to_patches,
)

# ---------------------------------------------------------------- phantoms


def disc_phantom(size: int = 128, radius: int = 35) -> np.ndarray:
    """A bright disc (0.75) on a dark background (0.25)."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2
    return np.where(inside, 0.75, 0.25).astype(np.float32)


def brain_phantom(height: int = 128, width: int = 160) -> np.ndarray:
    """An axial 'brain': a bright ellipse with darker ventricles on a black background."""
    img = np.zeros((height, width), dtype=np.float32)
    centre = (width // 2, height // 2)
    cv2.ellipse(img, centre, (width // 3, height // 3), 0, 0, 360, 0.8, -1)
    cv2.ellipse(img, centre, (width // 4, height // 4), 0, 0, 360, 0.6, -1)
    cv2.ellipse(img, (centre[0] - 8, centre[1]), (4, 12), 10, 0, 360, 0.2, -1)
    cv2.ellipse(img, (centre[0] + 8, centre[1]), (4, 12), -10, 0, 360, 0.2, -1)
    return cv2.GaussianBlur(img, (5, 5), 1.0)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((image - reference) ** 2)))


def gradient_magnitude(img: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    return np.asarray(np.hypot(gx, gy))


# ---------------------------------------------------------------- boundary checks


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((4, 4, 2), np.float32), "shape"),
        (np.zeros(5, np.float32), "shape"),
        (np.zeros((4, 4), np.uint8), "floating dtype"),
        (np.full((4, 4), np.nan, np.float32), "finite"),
        (np.zeros((0, 4), np.float32), "non-empty"),
    ],
)
def test_bad_images_are_rejected(bad: np.ndarray, match: str) -> None:
    for fn in (to_grey, denoise_nlm, normalize_percentile, content_bbox):
        with pytest.raises(ValueError, match=match):
            fn(bad)
    with pytest.raises(ValueError, match=match):
        resize_and_pad(bad, 8)
    with pytest.raises(ValueError, match=match):
        to_patches(bad, 2)


def test_bad_sizes_are_rejected() -> None:
    img = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="size must be > 0, got 0"):
        resize_and_pad(img, 0)
    with pytest.raises(ValueError, match="patch must be > 0"):
        to_patches(img, -1)
    with pytest.raises(ValueError, match="strength"):
        denoise_nlm(img, strength=-0.1)
    with pytest.raises(ValueError, match="odd"):
        denoise_nlm(img, template=6)
    with pytest.raises(ValueError, match="low < high"):
        normalize_percentile(img, 99.0, 1.0)


# ---------------------------------------------------------------- grey


def test_to_grey_uses_bt601_and_passes_grey_through() -> None:
    rgb = np.zeros((2, 2, 3), np.float32)
    rgb[0, 0] = (1, 0, 0)
    rgb[0, 1] = (0, 1, 0)
    rgb[1, 0] = (0, 0, 1)
    rgb[1, 1] = (1, 1, 1)
    grey = to_grey(rgb)
    assert grey.dtype == np.float32
    np.testing.assert_allclose(grey, [[0.299, 0.587], [0.114, 1.0]], atol=1e-6)
    flat = np.ones((3, 3), np.float32)
    assert to_grey(flat) is flat


# ---------------------------------------------------------------- denoise


def test_nlm_raises_psnr_and_keeps_the_edge() -> None:
    clean = disc_phantom()
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 0.08, clean.shape), 0, 1).astype(np.float32)
    denoised = denoise_nlm(noisy)
    assert denoised.dtype == np.float32 and denoised.shape == clean.shape
    assert psnr(denoised, clean) - psnr(noisy, clean) >= 6.0
    edge = gradient_magnitude(clean) > 0
    kept = gradient_magnitude(denoised)[edge].mean() / gradient_magnitude(clean)[edge].mean()
    assert kept >= 0.6


def test_nlm_zero_strength_returns_input_and_rgb_works() -> None:
    img = disc_phantom(32)
    assert denoise_nlm(img, strength=0.0) is img
    rgb = np.stack([img] * 3, axis=-1)
    out = denoise_nlm(rgb)
    assert out.shape == rgb.shape and out.dtype == np.float32


# ---------------------------------------------------------------- normalisation


def test_percentiles_survive_a_hot_pixel_where_min_max_does_not() -> None:
    img = brain_phantom()
    img[3, 3] = 1000 * img.max()
    out = normalize_percentile(img, 1.0, 99.0)
    min_max = (img - img.min()) / (img.max() - img.min())
    spread = lambda a: float(np.percentile(a, 95) - np.percentile(a, 5))  # noqa: E731
    assert spread(out) > 0.5
    assert spread(min_max) < 0.01


@pytest.mark.parametrize(("a", "b"), [(2.0, 0.0), (0.5, 0.3), (10.0, -4.0)])
def test_percentile_normalisation_ignores_affine_contrast(a: float, b: float) -> None:
    img = brain_phantom()
    np.testing.assert_allclose(
        normalize_percentile(a * img + b), normalize_percentile(img), atol=1e-5
    )


def test_constant_image_normalises_to_zeros() -> None:
    for value in (0.0, 0.4, -3.0):
        out = normalize_percentile(np.full((5, 7), value, np.float32))
        assert out.dtype == np.float32 and not out.any()


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=20),
        elements=st.floats(allow_nan=False, allow_infinity=False),
    )
)
def test_normalised_values_are_finite_and_in_unit_range(img: np.ndarray) -> None:
    out = normalize_percentile(img)
    assert np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0


# ---------------------------------------------------------------- cropping


def test_bbox_ignores_specks_and_keeps_content() -> None:
    img = np.zeros((100, 120), np.float32)
    img[30:60, 40:90] = 0.7
    img[2, 2] = 1.0  # isolated noise pixel
    img[90:92, 110:113] = 1.0  # a tiny burned-in text speck
    assert content_bbox(img, margin=2) == (28, 62, 38, 92)
    y0, y1, x0, x1 = content_bbox(img, margin=0)
    assert (y1 - y0, x1 - x0) == (30, 50)


def _relative(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    return np.array([box[0] / shape[0], box[1] / shape[0], box[2] / shape[1], box[3] / shape[1]])


def test_bbox_at_a_working_side_does_not_depend_on_the_stored_size() -> None:
    img = np.zeros((180, 200), np.float32)
    cv2.ellipse(img, (100, 95), (60, 70), 0, 0, 360, 0.6, -1)  # the head
    img[10:170, 3:5] = 0.3  # a faint two-pixel line beside it: the opening removes it...
    native = _relative(content_bbox(img, work_side=160), img.shape)
    assert np.allclose(native, _relative(content_bbox(img), img.shape), atol=0.01)
    for factor in (2, 3):  # ...at the stored size, but not once upscaled, at full resolution
        big = np.clip(cv2.resize(img, (200 * factor, 180 * factor),
                                 interpolation=cv2.INTER_CUBIC), 0, 1)
        assert _relative(content_bbox(big), big.shape)[2] < 0.02  # the line widened the box
        assert np.allclose(_relative(content_bbox(big, work_side=160), big.shape), native,
                           atol=0.02)
    small = cv2.resize(img, (150, 135), interpolation=cv2.INTER_AREA)
    assert np.allclose(_relative(content_bbox(small, work_side=160), small.shape), native,
                       atol=0.02)
    # at or under the working side nothing is resampled: the full-resolution box
    assert content_bbox(small, work_side=160) == content_bbox(small)
    _, _, x0, x1 = content_bbox(big, work_side=160)
    assert x1 - x0 < 0.7 * big.shape[1]
    with pytest.raises(ValueError, match="work_side"):
        content_bbox(img, work_side=4)
    with pytest.raises(ValueError, match="crop_work_side"):
        PreprocessConfig(crop_work_side=0)


def test_bbox_of_empty_image_is_whole_image() -> None:
    assert content_bbox(np.zeros((10, 12), np.float32)) == (0, 10, 0, 12)
    assert content_bbox(np.ones((1, 5), np.float32)) == (0, 1, 0, 5)


# ---------------------------------------------------------------- resize


def test_resize_keeps_aspect_ratio_and_centres() -> None:
    out = resize_and_pad(np.ones((100, 50), np.float32), 64)
    assert out.shape == (64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 16:48], 1.0, atol=1e-6)
    assert not out[:, :16].any() and not out[:, 48:].any()


def test_resize_rgb_grows_and_pads_with_value() -> None:
    out = resize_and_pad(np.ones((10, 20, 3), np.float32), 40, pad_value=0.5)
    assert out.shape == (40, 40, 3)
    np.testing.assert_allclose(out[10:30], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[:10], 0.5)


def test_resize_one_pixel_wide_image() -> None:
    out = resize_and_pad(np.ones((300, 1), np.float32), 32)
    assert out.shape == (32, 32)
    assert out.max() <= 1.0
    np.testing.assert_allclose(out[:, 15], 1.0)  # left offset (32 - 1) // 2
    assert not np.delete(out, 15, axis=1).any()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.booleans(), st.integers(1, 64),
       st.sampled_from([0.0, 0.8]))
def test_resize_and_pad_shape_for_any_input(height: int, width: int, rgb: bool, size: int,
                                            antialias: float) -> None:
    shape = (height, width, 3) if rgb else (height, width)
    out = resize_and_pad(np.full(shape, 0.5, np.float32), size, antialias=antialias)
    assert out.shape == ((size, size, 3) if rgb else (size, size))
    assert out.dtype == np.float32 and out.max() <= 0.5
    assert out.max() == pytest.approx(0.5)  # a flat image stays flat, filtered or not


def _texture(side: int, blur: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).random((side, side)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), blur)


def test_the_low_pass_makes_the_input_depend_less_on_the_stored_size() -> None:
    """Fine texture stored at twice its size (bicubic) or at three quarters (area) reaches
    the 64-px input closer to the texture as given once filtered: an area average alone
    aliases it differently for each shrink factor."""
    totals = np.zeros(2)
    for side in (200, 256, 300):
        for blur in (0.5, 0.8):
            img = _texture(side, blur, seed=side)
            for scale, interpolation in ((2.0, cv2.INTER_CUBIC), (0.75, cv2.INTER_AREA)):
                other = cv2.resize(img, (round(side * scale),) * 2, interpolation=interpolation)
                plain, filtered = (float(np.abs(resize_and_pad(img, 64, antialias=k)
                                                - resize_and_pad(other, 64, antialias=k)).mean())
                                   for k in (0.0, 0.8))
                # 256 -> 64 and 192 -> 64 are exact box averages of each other: 0 unfiltered
                assert filtered < max(plain, 1e-3), (side, blur, scale, plain, filtered)
                totals += (plain, filtered)
    assert totals[1] < 0.3 * totals[0], totals


def test_the_low_pass_is_off_at_zero_and_when_nothing_shrinks() -> None:
    img = _texture(120, 0.5, seed=1)
    assert antialias_filter(img, 64, 0.0) is img
    assert antialias_filter(img, 120, 0.8) is img and antialias_filter(img, 200, 0.8) is img
    np.testing.assert_array_equal(resize_and_pad(img, 200, antialias=0.8),
                                  resize_and_pad(img, 200))  # growing: never filtered
    # shrinking: the blur's sigma grows with the factor, so more is removed from a finer grid
    step = [float(antialias_filter(img, size, 0.8).std()) for size in (100, 60, 30)]
    assert step[0] > step[1] > step[2]
    with pytest.raises(ValueError, match="antialias"):
        antialias_filter(img, 64, -1.0)
    with pytest.raises(ValueError, match="antialias"):
        PreprocessConfig(antialias=-0.1)
    with pytest.raises(ValueError, match="antialias"):
        PreprocessConfig(antialias=5.0)


def test_the_low_pass_area_averages_a_huge_crop_first() -> None:
    """A 40-megapixel frame must not take a blur hundreds of taps wide: past
    ``MAX_BLUR_FACTOR`` times the target the crop is area-averaged down to that first."""
    img = _texture(2048, 0.5, seed=2)[:, :1000]
    out = antialias_filter(img, 64, 0.8)
    assert out.shape == (512, 250)  # 8 x 64 on the longer side
    small = antialias_filter(img[:400, :500], 64, 0.8)
    assert small.shape == (400, 500)  # under the cap: filtered at its own size
    # and the input made from it still sits where an unfiltered shrink puts it
    np.testing.assert_allclose(resize_and_pad(img, 64, antialias=0.8).mean(),
                               resize_and_pad(img, 64).mean(), atol=2e-3)


def test_a_config_without_the_low_pass_key_loads_as_before() -> None:
    """Checkpoints written before the setting carry no ``antialias``: they load with 0, the
    preprocessing they were trained with."""
    saved = PreprocessConfig(image_size=128, crop_work_side=160).to_dict()
    del saved["antialias"]
    assert PreprocessConfig.from_dict(saved).antialias == 0.0
    assert PreprocessConfig.from_dict({**saved, "antialias": 0.8}).antialias == 0.8


# ---------------------------------------------------------------- patches


def test_patches_order_and_count() -> None:
    img = np.arange(6 * 8 * 3, dtype=np.float32).reshape(6, 8, 3)
    patches = to_patches(img, 2)
    assert patches.shape == ((6 // 2) * (8 // 2), 2 * 2 * 3)
    np.testing.assert_array_equal(patches[0], img[:2, :2].reshape(-1))
    np.testing.assert_array_equal(patches[1], img[:2, 2:4].reshape(-1))  # left to right first
    np.testing.assert_array_equal(patches[4], img[2:4, :2].reshape(-1))


def test_patches_match_torch_unfold() -> None:
    img = np.random.default_rng(1).random((12, 20), dtype=np.float32)
    p = 4
    unfolded = torch.from_numpy(img).unfold(0, p, p).unfold(1, p, p).reshape(-1, p * p)
    np.testing.assert_array_equal(to_patches(img, p), unfolded.numpy())


def test_indivisible_image_says_what_came() -> None:
    with pytest.raises(ValueError, match="image 30x31 is not divisible into 4x4 patches"):
        to_patches(np.zeros((30, 31), np.float32), 4)
    with pytest.raises(ValueError, match="do not tile"):
        from_patches(np.zeros((3, 16), np.float32), 8, 8, 1)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5), st.sampled_from([1, 3]))
def test_patch_round_trip(rows: int, cols: int, patch: int, channels: int) -> None:
    shape = (rows * patch, cols * patch) + ((3,) if channels == 3 else ())
    img = np.random.default_rng(rows * 100 + cols).random(shape, dtype=np.float32)
    patches = to_patches(img, patch)
    assert patches.shape[0] == rows * cols
    np.testing.assert_array_equal(from_patches(patches, shape[0], shape[1], channels), img)


# ---------------------------------------------------------------- config and pipeline


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    cfg = PreprocessConfig(image_size=64, denoise="nlm", crop=False)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"\['mean', 'std'\]"):
        PreprocessConfig.from_dict({**cfg.to_dict(), "std": 1.0, "mean": 0.0})
    with pytest.raises(ValueError, match="denoise"):
        PreprocessConfig(denoise="bilateral")  # type: ignore[arg-type]


@pytest.mark.parametrize("denoise", ["none", "nlm"])
def test_preprocess_shape_dtype_range(denoise: str) -> None:
    cfg = PreprocessConfig.from_dict({"image_size": 64, "denoise": denoise})
    out = preprocess(brain_phantom(), cfg)
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, preprocess(brain_phantom(), cfg))  # deterministic
    rgb = np.stack([brain_phantom()] * 3, axis=-1)
    assert preprocess(rgb, PreprocessConfig(image_size=32, grey=False)).shape == (32, 32, 3)


def test_preprocess_normalises_scale() -> None:
    cfg = PreprocessConfig(image_size=64)
    img = brain_phantom()
    bigger = cv2.resize(img, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    diff = np.abs(preprocess(bigger, cfg) - preprocess(img, cfg)).mean()
    assert diff < 0.05


def test_preprocess_normalises_contrast() -> None:
    cfg = PreprocessConfig(image_size=64)
    img = brain_phantom()
    diff = np.abs(preprocess(0.6 * img + 0.2, cfg) - preprocess(img, cfg)).mean()
    assert diff < 0.02


# ---------------------------------------------------------------- exact percentiles


_values = st.one_of(
    hnp.arrays(np.float32, st.integers(1, 3000),
               elements=st.floats(allow_nan=False, allow_infinity=False, width=32)),
    hnp.arrays(np.float64, st.integers(1, 3000),
               elements=st.floats(allow_nan=False, allow_infinity=False)),
    # 8-bit display values: thousands of ties, as in every PNG or JPEG
    hnp.arrays(np.uint8, st.integers(1, 5000)).map(lambda a: (a / 255).astype(np.float32)),
)


@settings(max_examples=300, deadline=None)
@given(values=_values, qs=st.lists(st.floats(0, 100), min_size=1, max_size=4))
def test_percentiles_are_numpys_to_the_last_bit(values: np.ndarray, qs: list[float]) -> None:
    with np.errstate(all="ignore"):  # spreads near the float limit overflow in both
        assert np.array_equal(percentiles(values, qs), np.percentile(values, qs),
                              equal_nan=True)


@settings(max_examples=200, deadline=None)
@given(values=_values, data=st.data())
def test_order_statistics_are_the_sorted_values(values: np.ndarray, data: st.DataObject
                                                ) -> None:
    ranks = data.draw(st.lists(st.integers(0, values.size - 1), min_size=1, max_size=5))
    assert np.array_equal(order_statistics(values, ranks), np.sort(values)[ranks])


@pytest.mark.parametrize("values", [
    np.array([-3e38, 3e38, 0, 1] * 20, np.float32),  # the spread overflows float32
    np.array([1e-40, 2e-40, 0, 3e-40] * 20, np.float32),  # subnormal: the scale overflows
    np.array([-1e308, 1e308, 0.0] * 20),
    np.arange(200, dtype=np.int64),  # not floats: selected by partition
    np.full(100, 0.25, np.float32),
    np.random.default_rng(0).random((512, 512)).astype(np.float32) ** 8,  # skewed, 2-d
])
def test_percentiles_at_the_extremes(values: np.ndarray) -> None:
    for qs in ([1.0, 99.0], [0.0, 50.0, 100.0]):
        with np.errstate(all="ignore"):
            assert np.array_equal(percentiles(values, qs), np.percentile(values, qs),
                                  equal_nan=True)


def test_percentiles_refuse_what_numpy_refuses() -> None:
    with pytest.raises(ValueError, match="in \\[0, 100\\]"):
        percentiles(np.arange(5.0), [101.0])
    with pytest.raises(ValueError, match="empty"):
        percentiles(np.array([], np.float32), [50.0])
    with pytest.raises(ValueError, match="outside"):
        order_statistics(np.arange(5.0), [5])


@settings(max_examples=200, deadline=None)
@given(values=_values, qs=st.lists(st.floats(0, 100), min_size=1, max_size=4),
       divisor=st.floats(1e-3, 1e30))
def test_percentiles_of_the_divided_values_are_numpys(values: np.ndarray, qs: list[float],
                                                      divisor: float) -> None:
    """What normalize_percentile takes: the percentiles of values / divisor in float64."""
    with np.errstate(all="ignore"):
        assert np.array_equal(percentiles(values, qs, divisor=divisor),
                              np.percentile(values.astype(np.float64) / divisor, qs),
                              equal_nan=True)

"""Measurements a report quotes: the head outline, the heat's location, image quality, and
the geometry that lays the heat back over the original frame."""

import cv2
import numpy as np
import pytest

from assistant.imaging.preprocess import PreprocessConfig, preprocess
from assistant.report import frame_geometry, head_mask, heat_location, image_quality
from tests.report.conftest import disc_image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _disc_mask(size: int, centre: tuple[int, int], radius: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, centre, radius, 1, thickness=-1)
    return mask.astype(bool)


@pytest.mark.parametrize("background", [0.0, 0.15])
def test_head_mask_finds_the_head_on_dark_and_noisy_grey_backgrounds(background: float) -> None:
    img = disc_image(background=background)
    assert _iou(head_mask(img), _disc_mask(200, (100, 100), 80)) > 0.95


def test_head_mask_ignores_a_thin_frame_and_text() -> None:
    img = disc_image()
    cv2.rectangle(img, (2, 2), (197, 197), 1.0, thickness=1)  # a frame line
    text = np.zeros(img.shape, np.uint8)
    cv2.putText(text, "R", (175, 192), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1)
    img = np.maximum(img, text.astype(np.float32) / 255)
    assert _iou(head_mask(img), _disc_mask(200, (100, 100), 80)) > 0.95


def _heat_at(row: int, col: int, g: int = 8) -> np.ndarray:
    heat = np.zeros((g, g), np.float32)
    heat[row, col] = 1.0
    return heat


@pytest.mark.parametrize(("row", "col", "side", "third", "depth"), [
    (3, 1, "image left", "middle", "peripheral"),
    (3, 6, "image right", "middle", "peripheral"),
    (0, 2, "image left", "upper", "peripheral"),
    (7, 5, "image right", "lower", "peripheral"),
    (3, 3, "image left", "middle", "central"),
])
def test_heat_location_names_where_the_heat_is(row: int, col: int, side: str, third: str,
                                               depth: str) -> None:
    mask = _disc_mask(128, (64, 64), 62)
    loc = heat_location(_heat_at(row, col), mask)
    assert loc is not None
    assert (loc.side, loc.third, loc.depth) == (side, third, depth)
    assert loc.side_share > 0.9 and 0 < loc.extent < 0.1 and loc.share_on_head >= 0.5


def test_heat_on_both_sides_is_called_across_the_midline() -> None:
    heat = _heat_at(4, 3) + _heat_at(4, 4)
    loc = heat_location(heat, _disc_mask(128, (64, 64), 62))
    assert loc is not None and loc.side == "across the midline" and loc.depth == "central"


def test_heat_location_needs_a_head() -> None:
    assert heat_location(_heat_at(3, 3), np.zeros((128, 128), bool)) is None


@pytest.mark.parametrize("work_side", [None, 100])
def test_geometry_places_the_crop_where_preprocess_puts_it(work_side: int | None) -> None:
    img = np.zeros((150, 300), np.float32)
    img[30:120, 40:280] = 0.8  # content 90 x 240, off-centre
    cfg = PreprocessConfig(image_size=128, crop_work_side=work_side)
    geometry = frame_geometry(img, cfg)
    top, left, h, w = geometry.placed
    rows, cols = np.nonzero(preprocess(img, cfg) > 0.5)
    # a box found at 100 px is 3 frame pixels coarse, about 1.3 of the input's
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == pytest.approx(
        (top, top + h, left, left + w), abs=1 if work_side is None else 3)
    # A map over the input goes back onto the content of the frame, and only there.
    back = geometry.to_frame(np.ones((128, 128), np.float32))
    y0, y1, x0, x1 = geometry.bbox
    assert back[y0:y1, x0:x1].min() == 1.0 and back.sum() == (y1 - y0) * (x1 - x0)
    assert y0 <= 30 and y1 >= 120 and x0 <= 40 and x1 >= 280


def test_quality_flags_what_it_measures() -> None:
    cfg = PreprocessConfig(image_size=128)
    small = disc_image(size=100, centre=(50, 50), radius=40)
    q = image_quality(small, frame_geometry(small, cfg))
    assert q.upscaled and not q.cut_edges and not q.colour and not q.low_contrast
    flat = 0.4 + 0.1 * disc_image(size=200) + 0.02 * np.random.default_rng(0).random((200, 200))
    q = image_quality(flat.astype(np.float32), frame_geometry(flat.astype(np.float32), cfg))
    assert q.low_contrast and q.dynamic_range < 0.25
    cut = disc_image(size=200, centre=(150, 100), radius=90)  # (x, y): off the right edge
    q = image_quality(cut, frame_geometry(cut, cfg))
    assert q.cut_edges == ("right",)
    rgb = np.repeat(disc_image()[..., None], 3, axis=2)
    assert image_quality(rgb, frame_geometry(rgb, cfg)).colour

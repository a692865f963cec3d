"""What a structured report may say about an image, measured from the image and the heat.

Pure functions over arrays; every figure a report sentence quotes comes from here or from
the diagnosis itself:

- ``frame_geometry``: where the model's square input came from in the reader's frame
  (the same percentile normalisation and content crop as ``imaging.preprocess``), so the
  heat can be laid back over the original image and the crop can be judged;
- ``heat_location``: the hottest area of the heat grid inside the head's foreground, as an
  image side (left / right of the input's vertical midline; the crop centres the head, so
  this is the head's midline too), a vertical third of the head and its depth in the head;
- ``image_quality``: measurable properties only: size against the model input, colour,
  dynamic range, how much of the frame the head fills and whether it touches an edge.

Image left and right are sides of the picture: a PNG or JPEG carries no patient
orientation, so they are never called the patient's left or right.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from assistant.imaging.preprocess import (
    PreprocessConfig,
    config_bbox,
    denoise_nlm,
    normalize_percentile,
    percentiles,
    resize_and_pad,
    to_grey,
)
from assistant.vision.explain import upsample

Side = Literal["image left", "image right", "across the midline"]
Third = Literal["upper", "middle", "lower"]
Depth = Literal["central", "peripheral"]

HOT_FRACTION = 0.5  # the hottest area: heat >= this fraction of the maximum on the head
SIDE_SHARE = 2 / 3  # a side is named when it holds at least this share of the hot area
PERIPHERAL_RADIUS = 0.5  # elliptic radius in the head (0 centre, 1 edge) from which on the
# hot area is called peripheral: half-way out. On the 8 x 8 grid the hot centroid of a
# tumour against the skull lies at about 0.45-0.6; deep ones lie below 0.4 (test slices).
LOW_RANGE = 0.25  # 1st-99th percentile spread of display values below this: low contrast
EDGE_TOUCH = 0.15  # fraction of one image edge covered by the head above this: cut off
BACKGROUND_MIN = 0.08  # the head is brighter than this (as ``vision.explain``'s mask) ...
BACKGROUND_MARGIN = 0.08  # ... and than the image's outer ring by this much
SMALL_HEAD = 0.15  # head bounding box under this share of the frame: small in the image


def head_mask(image: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.bool_]:
    """The head on a grey image (H, W) in [0, 1]: pixels brighter than the background
    (the median of the image's outer ring plus a margin, at most Otsu's threshold and at
    least BACKGROUND_MIN), opened so that thin lines
    (frames, text) and specks drop out, then the convex hull of the largest component.

    A fixed low threshold fails on Br35H's noisy grey backgrounds (the whole frame becomes
    "head"); Otsu's threshold cuts through the brain of slices with large bright regions.
    The hull, not a hole fill, because a skull cut open by the image edge encloses no hole.
    """
    grey = np.clip(image, 0.0, 1.0).astype(np.float32)
    ring = max(1, round(min(grey.shape) * 0.03))
    border = np.concatenate([grey[:ring].ravel(), grey[-ring:].ravel(),
                             grey[:, :ring].ravel(), grey[:, -ring:].ravel()])
    blurred = cv2.GaussianBlur(grey, (5, 5), 0)
    otsu, _ = cv2.threshold((blurred * 255).astype(np.uint8), 0, 255,
                            cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # A head filling a framed image makes the outer ring bright: Otsu's cut between
    # background and tissue caps the threshold then.
    threshold = max(BACKGROUND_MIN, min(float(np.median(border)) + BACKGROUND_MARGIN,
                                        otsu / 255.0))
    above = (blurred > threshold).astype(np.uint8)
    k = max(3, round(min(grey.shape) / 40) | 1)  # odd, about 2.5% of the side
    opened = cv2.morphologyEx(above, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if count <= 1:
        return np.zeros(grey.shape, bool)
    largest = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    # The hull of the component's outer contour is the hull of all its pixels, from a
    # few hundred points instead of tens of thousands (0.26 against 5.1 ms per Br35H
    # image here; the masks are identical on all 3,000).
    contours, _ = cv2.findContours(largest, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours))
    filled = np.zeros_like(largest)
    cv2.fillConvexPoly(filled, hull, 1)
    return filled.astype(bool)


@dataclass(frozen=True)
class FrameGeometry:
    """How the model input was cut from the reader's frame (``imaging.preprocess``)."""

    height: int  # of the reader's frame
    width: int
    bbox: tuple[int, int, int, int]  # (y0, y1, x0, x1) content crop, half-open
    placed: tuple[int, int, int, int]  # (top, left, h, w) of the crop inside the input
    size: int  # model input side
    antialias: float  # ``PreprocessConfig.antialias``
    normalised: npt.NDArray[np.float32]  # grey, percentile-normalised frame (H, W)
    head: npt.NDArray[np.bool_]  # the head over the frame (H, W), see ``head_mask``

    def to_input(self, frame_map: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        """A map over the frame (H, W) -> the same map over the model input (S, S)."""
        y0, y1, x0, x1 = self.bbox
        top, left, h, w = self.placed
        out = np.zeros((self.size, self.size), np.float32)
        crop = np.ascontiguousarray(frame_map[y0:y1, x0:x1], np.float32)
        out[top:top + h, left:left + w] = cv2.resize(crop, (w, h),
                                                     interpolation=cv2.INTER_LINEAR)
        return out

    def to_frame(self, input_map: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        """A map over the model input (S, S) -> over the frame (H, W), zero off the crop."""
        y0, y1, x0, x1 = self.bbox
        top, left, h, w = self.placed
        out = np.zeros((self.height, self.width), np.float32)
        region = np.ascontiguousarray(input_map[top:top + h, left:left + w], np.float32)
        out[y0:y1, x0:x1] = cv2.resize(region, (x1 - x0, y1 - y0),
                                       interpolation=cv2.INTER_LINEAR)
        return out

    def model_input(self) -> npt.NDArray[np.float32]:
        """The model input ``imaging.preprocess`` makes from the same grey frame, from the
        normalised frame and crop already computed here (the pipeline computes both once)."""
        y0, y1, x0, x1 = self.bbox
        return resize_and_pad(self.normalised[y0:y1, x0:x1], self.size,
                              antialias=self.antialias)

    def head_on_input(self) -> npt.NDArray[np.bool_]:
        """The head mask over the model input (S, S)."""
        return self.to_input(self.head.astype(np.float32)) >= 0.5


def frame_geometry(pixels: npt.NDArray[np.floating[Any]], cfg: PreprocessConfig,
                   ) -> FrameGeometry:
    """Repeat the geometric steps of ``preprocess`` on reader pixels (H, W) or (H, W, 3)."""
    grey = to_grey(pixels.astype(np.float32, copy=False))
    if cfg.denoise == "nlm":
        grey = denoise_nlm(grey, strength=cfg.denoise_strength)
    norm = normalize_percentile(grey, cfg.low_pct, cfg.high_pct)
    height, width = norm.shape
    bbox = config_bbox(norm, cfg)
    crop_h, crop_w = bbox[1] - bbox[0], bbox[3] - bbox[2]
    scale = cfg.image_size / max(crop_h, crop_w)
    new_h = min(cfg.image_size, max(1, round(crop_h * scale)))
    new_w = min(cfg.image_size, max(1, round(crop_w * scale)))
    placed = ((cfg.image_size - new_h) // 2, (cfg.image_size - new_w) // 2, new_h, new_w)
    return FrameGeometry(height, width, bbox, placed, cfg.image_size, cfg.antialias, norm,
                         head_mask(norm))


def heat_on_frame(heat: npt.NDArray[np.float32], geometry: FrameGeometry,
                  ) -> npt.NDArray[np.float32]:
    """Heat grid (g, g) over the model input -> heat (H, W) over the reader's frame, zero
    outside the content crop."""
    return np.clip(geometry.to_frame(upsample(heat, geometry.size)), 0.0, 1.0)


def elliptic_radius(mask: npt.NDArray[np.bool_], y: float, x: float) -> float:
    """How far (y, x) lies from the centre of ``mask`` towards its edge, measured on the
    ellipse of the mask's second moments: 0 at the centroid, 1 on the edge of an elliptic
    mask (a uniform ellipse has variance a^2 / 4 along a semi-axis a)."""
    ys, xs = np.nonzero(mask)
    coords = np.stack([ys, xs]).astype(np.float64)  # (2, N)
    centre = coords.mean(axis=1)
    cov = np.cov(coords) + 1e-6 * np.eye(2)
    diff = np.array([y, x]) - centre
    return float(np.sqrt(diff @ np.linalg.solve(cov, diff)) / 2.0)


@dataclass(frozen=True)
class HeatLocation:
    side: Side
    side_share: float  # share of the hot area's heat on the named side (or the larger one)
    third: Third  # vertical third of the head's bounding box holding the hot centroid
    depth: Depth  # central or peripheral in the head
    radius: float  # of the hot centroid in the head: 0 its centre, 1 its edge
    extent: float  # hot area / head area
    share_on_head: float  # of all the heat, the share on the head's foreground

    def phrase(self) -> str:
        """E.g. 'image left, upper third, peripheral'."""
        return f"{self.side}, {self.third} third, {self.depth}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "phrase": self.phrase()}


def heat_location(heat: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_],
                  ) -> HeatLocation | None:
    """Where the hottest area of ``heat`` (g, g) lies on the head ``mask`` (S, S) over the
    model input (``FrameGeometry.head_on_input``); None when there is no head or no heat
    on it."""
    size = mask.shape[0]
    full = upsample(heat, size)  # (S, S)
    on_head = np.where(mask, full, 0.0)
    peak = float(on_head.max()) if mask.any() else 0.0
    if peak <= 0.0:
        return None
    hot = on_head >= HOT_FRACTION * peak  # (S, S)
    weights = np.where(hot, on_head, 0.0)
    total = float(weights.sum())
    ys, xs = np.indices(hot.shape)
    cy, cx = float((weights * ys).sum() / total), float((weights * xs).sum() / total)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    midline = (int(cols[0]) + int(cols[-1]) + 1) / 2  # of the head's bounding box
    left = float((weights * (xs + 0.5 < midline)).sum()) / total
    share = max(left, 1.0 - left)
    side: Side = ("across the midline" if share < SIDE_SHARE
                  else "image left" if left >= SIDE_SHARE else "image right")
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    position = (cy - y0) / max(y1 - y0, 1)
    third: Third = "upper" if position < 1 / 3 else "middle" if position < 2 / 3 else "lower"
    radius = elliptic_radius(mask, cy, cx)
    depth: Depth = "peripheral" if radius >= PERIPHERAL_RADIUS else "central"
    all_heat = float(full.sum())
    return HeatLocation(side=side, side_share=round(share, 3), third=third, depth=depth,
                        radius=round(radius, 3),
                        extent=round(float(hot.sum()) / float(mask.sum()), 4),
                        share_on_head=round(float(on_head.sum()) / all_heat, 3)
                        if all_heat > 0 else 0.0)


@dataclass(frozen=True)
class ImageQuality:
    width: int
    height: int
    input_size: int
    upscaled: bool  # the longer side is shorter than the model input
    colour: bool  # the file held colour samples, converted to grey
    dynamic_range: float  # 99th - 1st percentile of the grey display values, in [0, 1]
    low_contrast: bool
    head_fraction: float  # the content crop's area / the frame's area
    small_head: bool
    cut_edges: tuple[str, ...]  # image edges the head runs into ("top", "left", ...)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cut_edges": list(self.cut_edges)}


def _cut_edges(mask: npt.NDArray[np.bool_]) -> tuple[str, ...]:
    """Edges of the frame along which the head ``mask`` covers more than EDGE_TOUCH."""
    edges = {"top": mask[0], "bottom": mask[-1], "left": mask[:, 0], "right": mask[:, -1]}
    return tuple(name for name, line in edges.items() if float(line.mean()) > EDGE_TOUCH)


def image_quality(pixels: npt.NDArray[np.floating[Any]], geometry: FrameGeometry,
                  ) -> ImageQuality:
    """Measurable quality of reader ``pixels`` (H, W) or (H, W, 3) in [0, 1]."""
    grey = to_grey(pixels.astype(np.float32, copy=False))
    low, high = percentiles(grey, [1.0, 99.0])
    spread = float(high - low)
    y0, y1, x0, x1 = geometry.bbox
    head = (y1 - y0) * (x1 - x0) / float(geometry.height * geometry.width)
    colour = pixels.ndim == 3
    return ImageQuality(width=geometry.width, height=geometry.height,
                        input_size=geometry.size,
                        upscaled=max(geometry.height, geometry.width) < geometry.size,
                        colour=colour, dynamic_range=round(spread, 3),
                        low_contrast=spread < LOW_RANGE, head_fraction=round(head, 3),
                        small_head=head < SMALL_HEAD,
                        cut_edges=_cut_edges(geometry.head))

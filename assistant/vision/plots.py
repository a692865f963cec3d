"""ROC curves and reliability diagrams drawn with OpenCV (matplotlib is not installed).

The public functions write a PNG and return nothing; the private helpers draw onto a
white BGR uint8 canvas in place. Colours are BGR, from matplotlib's "tab10" palette.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from assistant.vision.metrics import ReliabilityBins, format_auc, format_ece

Color = tuple[int, int, int]
Canvas = npt.NDArray[np.uint8]

WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GRID: Color = (225, 225, 225)
GREY: Color = (120, 120, 120)
PALETTE: tuple[Color, ...] = (
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23),
)
BAR: Color = (200, 140, 60)
GAP: Color = (60, 60, 230)
GAP_ALPHA = 0.45
GAP_FILL: Color = (167, 167, 244)  # GAP at GAP_ALPHA over white, for the legend swatch
FONT = cv2.FONT_HERSHEY_SIMPLEX
TICK_SCALE, LABEL_SCALE, TITLE_SCALE = 0.45, 0.5, 0.6
ROC_SIZE = 640
PANEL_WIDTH, RELIABILITY_HEIGHT = 600, 680


@dataclass(frozen=True)
class _Axes:
    """A pixel box (left, top, width, height) showing data [x0, x1] x [y0, y1]."""

    left: int
    top: int
    width: int
    height: int
    x0: float = 0.0
    x1: float = 1.0
    y0: float = 0.0
    y1: float = 1.0

    def px(self, x: float, y: float) -> tuple[int, int]:
        """Pixel (column, row) of data point (x, y); y grows upwards."""
        col = self.left + (x - self.x0) / (self.x1 - self.x0) * self.width
        row = self.top + self.height - (y - self.y0) / (self.y1 - self.y0) * self.height
        return round(col), round(row)

    @property
    def bottom(self) -> int:
        return self.top + self.height


def _canvas(height: int, width: int) -> Canvas:
    return np.full((height, width, 3), 255, dtype=np.uint8)


def _text(
    img: Canvas, text: str, org: tuple[int, int], scale: float = TICK_SCALE,
    color: Color = BLACK, thickness: int = 1, align: str = "left", valign: str = "base",
) -> None:
    """Draw ``text``; ``org`` is its left/centre/right end on the baseline, or the
    vertical middle of the text when ``valign="middle"``."""
    (w, h), _ = cv2.getTextSize(text, FONT, scale, thickness)
    x = org[0] - {"left": 0, "center": w // 2, "right": w}[align]
    y = org[1] + (h // 2 if valign == "middle" else 0)
    cv2.putText(img, text, (x, y), FONT, scale, color, thickness, cv2.LINE_AA)


def _vertical_text(img: Canvas, text: str, center: tuple[int, int], scale: float) -> None:
    """Dark text rotated 90 degrees anticlockwise (read bottom to top), centred."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    strip = _canvas(h + base + 4, w + 4)
    cv2.putText(strip, text, (2, h + 2), FONT, scale, BLACK, 1, cv2.LINE_AA)
    turned = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    top, left = center[1] - turned.shape[0] // 2, center[0] - turned.shape[1] // 2
    region = img[top : top + turned.shape[0], left : left + turned.shape[1]]
    np.minimum(region, turned, out=region)


def _dashed(
    img: Canvas, p0: tuple[int, int], p1: tuple[int, int], color: Color,
    dash: int = 8, gap: int = 6,
) -> None:
    length = float(np.hypot(p1[0] - p0[0], p1[1] - p0[1]))
    for start in np.arange(0.0, length, dash + gap):
        a, b = start / length, min(start + dash, length) / length
        q0 = (round(p0[0] + a * (p1[0] - p0[0])), round(p0[1] + a * (p1[1] - p0[1])))
        q1 = (round(p0[0] + b * (p1[0] - p0[0])), round(p0[1] + b * (p1[1] - p0[1])))
        cv2.line(img, q0, q1, color, 1, cv2.LINE_AA)


def _frame(
    img: Canvas, ax: _Axes, xticks: Sequence[float], yticks: Sequence[float],
    xlabel: str | None, ylabel: str, yfmt: str = "{:.1f}",
) -> None:
    """Grid, frame, ticks and labels of ``ax``; ``xlabel=None`` also leaves out the x
    tick labels (an x axis shared with the axes below)."""
    for x in xticks:
        col = ax.px(x, ax.y0)[0]
        cv2.line(img, (col, ax.top), (col, ax.bottom), GRID, 1)
        cv2.line(img, (col, ax.bottom), (col, ax.bottom + 5), BLACK, 1)
        if xlabel is not None:
            _text(img, f"{x:.1f}", (col, ax.bottom + 20), align="center")
    for y in yticks:
        row = ax.px(ax.x0, y)[1]
        cv2.line(img, (ax.left, row), (ax.left + ax.width, row), GRID, 1)
        cv2.line(img, (ax.left - 5, row), (ax.left, row), BLACK, 1)
        _text(img, yfmt.format(y), (ax.left - 9, row), align="right", valign="middle")
    cv2.rectangle(img, (ax.left, ax.top), (ax.left + ax.width, ax.bottom), BLACK, 1)
    if xlabel:
        _text(img, xlabel, (ax.left + ax.width // 2, ax.bottom + 44), LABEL_SCALE,
              align="center")
    _vertical_text(img, ylabel, (ax.left - 52, ax.top + ax.height // 2), LABEL_SCALE)


def _legend(img: Canvas, entries: Sequence[tuple[str, Color, str]], right: int,
            bottom: int) -> None:
    """A boxed legend whose bottom-right corner is (right, bottom); each entry is
    (text, colour, "line" | "dashed" | "box")."""
    sizes = [cv2.getTextSize(text, FONT, TICK_SCALE, 1)[0] for text, _, _ in entries]
    row_h, swatch = 22, 28
    width = max(w for w, _ in sizes) + swatch + 24
    top, left = bottom - row_h * len(entries) - 10, right - width
    cv2.rectangle(img, (left, top), (right, bottom), WHITE, -1)
    cv2.rectangle(img, (left, top), (right, bottom), GREY, 1)
    for i, (text, color, kind) in enumerate(entries):
        mid = top + 5 + row_h * i + row_h // 2
        a, b = (left + 8, mid), (left + 8 + swatch, mid)
        if kind == "box":
            cv2.rectangle(img, (a[0], mid - 6), (b[0], mid + 6), color, -1)
        elif kind == "dashed":
            _dashed(img, a, b, color, dash=6, gap=4)
        else:
            cv2.line(img, a, b, color, 2, cv2.LINE_AA)
        _text(img, text, (b[0] + 8, mid), valign="middle")


def _save(img: Canvas, path: str | Path) -> None:
    ok, buffer = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"could not encode a PNG for {path}")
    Path(path).write_bytes(buffer.tobytes())


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, title: str
) -> None:
    """Write a 640 x 640 PNG of named ROC curves {name: (fpr, tpr, auc)}, legend
    "name (AUC 0.9876)" (AUC truncated to 4 decimals), dashed chance diagonal."""
    if not curves:
        raise ValueError("plot_roc needs at least one curve")
    img = _canvas(ROC_SIZE, ROC_SIZE)
    ax = _Axes(left=90, top=60, width=ROC_SIZE - 120, height=ROC_SIZE - 140)
    ticks = [i / 5 for i in range(6)]
    _frame(img, ax, ticks, ticks, "False positive rate (1 - specificity)",
           "True positive rate (sensitivity)")
    _dashed(img, ax.px(0.0, 0.0), ax.px(1.0, 1.0), GREY)
    entries: list[tuple[str, Color, str]] = []
    for i, (name, (fpr, tpr, auc)) in enumerate(curves.items()):
        x, y = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"{name}: fpr and tpr must be 1-D of equal length")
        color = PALETTE[i % len(PALETTE)]
        points = np.array([ax.px(a, b) for a, b in zip(x, y, strict=True)], dtype=np.int32)
        cv2.polylines(img, [points], False, color, 2, cv2.LINE_AA)
        entries.append((f"{name} (AUC {format_auc(auc)})", color, "line"))
    entries.append(("chance", GREY, "dashed"))
    _legend(img, entries, ax.left + ax.width - 10, ax.bottom - 10)
    _text(img, title, (ROC_SIZE // 2, 35), TITLE_SCALE, thickness=2, align="center")
    _save(img, path)


def _x_start(bins: Sequence[ReliabilityBins]) -> float:
    """Left end of the confidence axis: the first used bin, down to a tenth, <= 0.5."""
    used = [float(b.lower[b.count > 0].min()) for b in bins if (b.count > 0).any()]
    return min(np.floor(min(used, default=0.5) * 10) / 10, 0.5)


def _bars(img: Canvas, ax: _Axes, bins: ReliabilityBins) -> None:
    """Accuracy bars, with the gap to each bin's mean confidence shaded translucent."""
    for i in np.flatnonzero(bins.count > 0):
        lo, hi = max(float(bins.lower[i]), ax.x0), float(bins.upper[i])
        acc, conf = float(bins.accuracy[i]), float(bins.confidence[i])
        (c0, r_acc), (c1, r_base) = ax.px(lo, acc), ax.px(hi, ax.y0)
        cv2.rectangle(img, (c0, r_acc), (c1, r_base), BAR, -1)
        cv2.rectangle(img, (c0, r_acc), (c1, r_base), BLACK, 1)
        r_conf = ax.px(lo, conf)[1]
        top, bottom = min(r_acc, r_conf), max(r_acc, r_conf)
        if bottom > top:
            region = img[top : bottom + 1, c0 + 1 : c1]
            shade = np.empty_like(region)
            shade[:] = GAP
            cv2.addWeighted(region, 1.0 - GAP_ALPHA, shade, GAP_ALPHA, 0, dst=region)
            cv2.rectangle(img, (c0, top), (c1, bottom), GAP, 1)


def _histogram(img: Canvas, ax: _Axes, bins: ReliabilityBins) -> None:
    """Count per bin as grey bars, each labelled with its count."""
    for i in np.flatnonzero(bins.count > 0):
        lo, hi = max(float(bins.lower[i]), ax.x0), float(bins.upper[i])
        c0, row = ax.px(lo, float(bins.count[i]))
        c1, base = ax.px(hi, ax.y0)
        cv2.rectangle(img, (c0, row), (c1, base), (170, 170, 170), -1)
        cv2.rectangle(img, (c0, row), (c1, base), BLACK, 1)
        _text(img, str(int(bins.count[i])), ((c0 + c1) // 2, row - 4), 0.38, align="center")


def _reliability_panel(
    img: Canvas, left: int, bins: ReliabilityBins, heading: str, x0: float
) -> None:
    """One panel: reliability diagram over a count histogram, ``left`` its pixel offset."""
    main = _Axes(left=left + 90, top=95, width=PANEL_WIDTH - 120, height=380, x0=x0)
    peak = float(max(int(bins.count.max()), 1)) * 1.2
    hist = _Axes(left=main.left, top=main.bottom + 16, width=main.width, height=120,
                 x0=x0, y1=peak)
    xticks = [t / 10 for t in range(round(x0 * 10), 11)]
    _frame(img, main, xticks, [i / 5 for i in range(6)], None, "Accuracy")
    _bars(img, main, bins)
    _dashed(img, main.px(x0, x0), main.px(1.0, 1.0), BLACK)
    _frame(img, hist, xticks, [0.0, peak / 1.2], "Confidence (top-label probability)",
           "Count", yfmt="{:.0f}")
    _histogram(img, hist, bins)
    _text(img, heading, (main.left + main.width // 2, main.top - 14), LABEL_SCALE,
          thickness=1, align="center")
    _legend(img, [("accuracy", BAR, "box"), ("gap to mean confidence", GAP_FILL, "box"),
                  ("perfect calibration", BLACK, "dashed")], main.left + 250, main.top + 82)


def plot_reliability(
    bins_before: ReliabilityBins, bins_after: ReliabilityBins, path: str | Path,
    title: str, ece_before: float, ece_after: float,
) -> None:
    """Write a 1200 x 680 PNG: reliability diagrams before (left) and after (right)
    temperature scaling, ECE in each panel's heading (rounded up to 4 decimals, so never
    understated), a count histogram under each."""
    img = _canvas(RELIABILITY_HEIGHT, 2 * PANEL_WIDTH)
    x0 = _x_start([bins_before, bins_after])
    for k, (bins, name, ece) in enumerate(
        ((bins_before, "Before", ece_before), (bins_after, "After", ece_after))
    ):
        heading = f"{name} temperature scaling (ECE {format_ece(ece)})"
        _reliability_panel(img, k * PANEL_WIDTH, bins, heading, x0)
    _text(img, title, (PANEL_WIDTH, 35), TITLE_SCALE, thickness=2, align="center")
    _save(img, path)

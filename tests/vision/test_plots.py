"""Tests for ``assistant.vision.plots``: valid, non-blank PNGs of the expected size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from assistant.vision.metrics import ReliabilityBins, reliability_bins, roc_auc, roc_curve
from assistant.vision.plots import plot_reliability, plot_roc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def _roc(seed: int, separation: float) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    scores = separation * y + rng.standard_normal(300)
    fpr, tpr, _ = roc_curve(y, scores)
    return fpr, tpr, roc_auc(y, scores)


def _bins(seed: int, sharpen: float) -> tuple[ReliabilityBins, float]:
    rng = np.random.default_rng(seed)
    p = rng.random(2000)
    y = (rng.random(2000) < p).astype(int)
    logit = np.log(p / (1 - p))
    bins = reliability_bins(y, 1 / (1 + np.exp(-sharpen * logit)))
    return bins, bins.ece


def test_plot_roc_writes_a_non_blank_png(tmp_path: Path) -> None:
    curves = {"test": _roc(0, 2.0), "fold 0": _roc(1, 1.0)}
    plot_roc(curves, tmp_path / "roc.png", "ROC: test split")
    img = _read_png(tmp_path / "roc.png")
    assert img.shape == (640, 640, 3)
    assert img.std() > 20
    assert 0.01 < np.mean(img.min(axis=2) < 200) < 0.5  # drawn, yet mostly background
    assert (img[0, 0] == 255).all()  # white background
    colourful = np.abs(img.astype(int) - img.mean(axis=2, keepdims=True)).max(axis=2) > 60
    assert colourful.sum() > 500  # the curves are drawn in colour


def test_plot_roc_differs_between_inputs(tmp_path: Path) -> None:
    plot_roc({"a": _roc(0, 2.0)}, tmp_path / "a.png", "ROC")
    plot_roc({"b": _roc(0, 2.0)}, tmp_path / "b.png", "ROC")  # only the legend name differs
    plot_roc({"a": _roc(0, 0.5)}, tmp_path / "c.png", "ROC")
    a, b, c = (_read_png(tmp_path / f"{k}.png") for k in "abc")
    assert (a != b).any() and (a != c).any()


def test_plot_roc_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        plot_roc({}, tmp_path / "empty.png", "ROC")
    fpr, tpr, auc = _roc(0, 1.0)
    with pytest.raises(ValueError):
        plot_roc({"bad": (fpr, tpr[:-1], auc)}, tmp_path / "bad.png", "ROC")
    with pytest.raises(FileNotFoundError):
        plot_roc({"a": (fpr, tpr, auc)}, tmp_path / "missing" / "roc.png", "ROC")


def test_plot_reliability_writes_a_non_blank_png(tmp_path: Path) -> None:
    before, ece_before = _bins(0, 3.0)
    after, ece_after = _bins(0, 1.0)
    path = tmp_path / "rel.png"
    plot_reliability(before, after, path, "Reliability", ece_before, ece_after)
    img = _read_png(tmp_path / "rel.png")
    assert img.shape == (680, 1200, 3)
    assert img.std() > 20
    assert (img[0, 0] == 255).all()
    left, right = img[:, :600], img[:, 600:]
    assert (left != right).any()  # the two panels show different bins


def test_plot_reliability_shows_the_ece(tmp_path: Path) -> None:
    before, _ = _bins(0, 3.0)
    after, _ = _bins(0, 1.0)
    plot_reliability(before, after, tmp_path / "x.png", "R", 0.1, 0.01)
    plot_reliability(before, after, tmp_path / "y.png", "R", 0.1, 0.02)
    x, y = _read_png(tmp_path / "x.png"), _read_png(tmp_path / "y.png")
    changed = np.flatnonzero((x != y).any(axis=(0, 2)))
    assert changed.size > 0 and changed.min() >= 600  # only the right panel's heading

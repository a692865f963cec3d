"""Binary classification metrics: confusion, ROC, calibration, thresholds, bootstrap.

Pure numpy functions; class 1 is the positive class (tumour). Conventions:

- A metric whose denominator is 0 (sensitivity with no positives, AUC with one class)
  is ``float('nan')``: undefined, never silently 0 or 1.
- A case is called positive when its score is ``>= threshold``.
- ECE is the top-label ECE of Guo et al. 2017 ("On Calibration of Modern Neural
  Networks"): confidence = max(p, 1 - p), correct = (predicted class == label), with
  ``n_bins`` equal-width bins over [0, 1], bin b = (b/n_bins, (b+1)/n_bins] (the first
  also holds 0). For two classes the confidence is >= 0.5, so the bins below 0.5 stay
  empty: with 15 bins about 8 bins are used. ECE = sum_b (n_b / N) |acc_b - conf_b|.
- Printed percentages are truncated (floored), never rounded up; see ``format_report``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TypedDict

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Interval = tuple[float, float, float]  # (point estimate, lower, upper)
Metric = Callable[[np.ndarray, np.ndarray], float]

T_MIN, T_MAX = 0.01, 100.0  # temperature search range
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _labels(y: npt.ArrayLike, name: str = "y_true") -> BoolArray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1, got values {np.unique(arr)[:5]}")
    return arr.astype(bool)


def _scores(s: npt.ArrayLike, n: int, name: str = "scores", prob: bool = False) -> FloatArray:
    arr = np.asarray(s, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like the labels, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    if prob and ((arr < 0.0) | (arr > 1.0)).any():
        raise ValueError(f"{name} must be probabilities in [0, 1]")
    return arr


def _ratio(num: int, den: int) -> float:
    return num / den if den > 0 else float("nan")


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of a binary decision, with its ratios:

    sensitivity TP/(TP+FN), specificity TN/(TN+FP), ppv TP/(TP+FP), npv TN/(TN+FN),
    accuracy (TP+TN)/N, f1 2TP/(2TP+FP+FN). Each is NaN when its denominator is 0
    (sensitivity without positives, f1 without positives or positive calls, where
    sklearn would say 0): undefined, not 0 or 1.
    """

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def sensitivity(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> float:
        return _ratio(self.tn, self.tn + self.fn)

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.tp + self.fp + self.tn + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


def confusion(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> ConfusionMatrix:
    """Confusion counts of 0/1 (or boolean) predictions against 0/1 labels."""
    y = _labels(y_true)
    pred = _labels(y_pred, "y_pred")
    if pred.shape != y.shape:
        raise ValueError(f"y_pred must have shape {y.shape} like y_true, got {pred.shape}")
    tp = int(np.count_nonzero(y & pred))
    fn = int(np.count_nonzero(y & ~pred))
    fp = int(np.count_nonzero(~y & pred))
    return ConfusionMatrix(tp=tp, fp=fp, tn=y.size - tp - fn - fp, fn=fn)


def roc_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic, average ranks for ties
    (a tied positive-negative pair counts 1/2). NaN when one class is absent."""
    y = _labels(y_true)
    s = _scores(scores, y.size)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each tie block
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def roc_curve(
    y_true: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(fpr, tpr, thresholds): one point per distinct score (ties collapsed), thresholds
    descending, starting at (0, 0) with threshold +inf and ending at (1, 1) with the
    lowest score. Point i calls ``score >= thresholds[i]`` positive. Needs both classes."""
    y = _labels(y_true)
    s = _scores(scores, y.size)
    n_pos = int(y.sum())
    if n_pos in (0, y.size):
        raise ValueError("roc_curve needs both classes in y_true")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s_sorted)), y.size - 1]  # last index of each tie
    tps = np.cumsum(y_sorted)[ends]
    fps = ends + 1 - tps
    fpr = np.r_[0.0, fps / (y.size - n_pos)]
    tpr = np.r_[0.0, tps / n_pos]
    return fpr, tpr, np.r_[np.inf, s_sorted[ends]]


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin arrays (one entry per bin) of a top-label reliability diagram.

    ``confidence`` and ``accuracy`` are the bin means, NaN for empty bins."""

    lower: FloatArray
    upper: FloatArray
    count: npt.NDArray[np.int64]
    confidence: FloatArray
    accuracy: FloatArray

    @property
    def ece(self) -> float:
        """sum_b (n_b / N) |accuracy_b - confidence_b| over the non-empty bins."""
        used = self.count > 0
        gaps = np.abs(self.accuracy[used] - self.confidence[used])
        return float(np.sum(self.count[used] * gaps) / np.sum(self.count))


def reliability_bins(
    y_true: npt.ArrayLike, p_positive: npt.ArrayLike, n_bins: int = 15
) -> ReliabilityBins:
    """Top-label reliability bins (see the module docstring). The predicted class is 1
    when p > 0.5 and 0 otherwise (argmax of [1 - p, p], ties to class 0)."""
    y = _labels(y_true)
    p = _scores(p_positive, y.size, "p_positive", prob=True)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    pred = p > 0.5
    conf = np.where(pred, p, 1.0 - p)
    correct = (pred == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return ReliabilityBins(edges[:-1], edges[1:], count, mean_conf, acc)


def expected_calibration_error(
    y_true: npt.ArrayLike, p_positive: npt.ArrayLike, n_bins: int = 15
) -> float:
    """Top-label ECE of Guo et al. 2017 with equal-width bins over [0, 1]."""
    return reliability_bins(y_true, p_positive, n_bins).ece


def softmax_with_temperature(logits: npt.ArrayLike, temperature: float) -> FloatArray:
    """Row-wise softmax of ``logits / temperature`` for logits of shape (N, C)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {z.shape}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    z = z / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _nll(z: FloatArray, y: npt.NDArray[np.intp], log_t: float) -> float:
    scaled = z / math.exp(log_t)
    top = scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_norm - scaled[np.arange(y.size), y]))


def fit_temperature(logits: npt.ArrayLike, y_true: npt.ArrayLike, tol: float = 1e-7) -> float:
    """Temperature T minimising the mean NLL of softmax(logits / T) (Guo et al. 2017).

    The NLL is convex in 1/T, so it is unimodal in log T; a golden-section search over
    log T in [log T_MIN, log T_MAX] finds the minimum deterministically. An optimum at a
    bound (for example separable data, where the NLL keeps falling as T -> 0) is logged.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, C) with N >= 1, C >= 2, got {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite")
    if y.shape != (z.shape[0],) or not np.isin(y, np.arange(z.shape[1])).all():
        raise ValueError(f"y_true must be {z.shape[0]} class indices in [0, {z.shape[1]})")
    labels = y.astype(np.intp)
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = _nll(z, labels, a), _nll(z, labels, b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = _nll(z, labels, a)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = _nll(z, labels, b)
    temperature = math.exp((lo + hi) / 2.0)
    if min(temperature / T_MIN, T_MAX / temperature) < 1.001:
        logger.warning("fitted temperature %.4g is at the search bound [%g, %g]",
                       temperature, T_MIN, T_MAX)
    return temperature


def choose_threshold(
    y_true: npt.ArrayLike, p_positive: npt.ArrayLike, min_sensitivity: float = 0.98
) -> float:
    """The highest threshold t with sensitivity(p >= t) >= min_sensitivity.

    Sensitivity only falls as t rises and specificity only rises, so this t gives the
    best specificity under the sensitivity floor. t is the k-th highest positive score,
    k the fewest positives that reach the floor. Ties: every case scoring exactly t is
    called positive, so negatives tied with that positive are false alarms, and positives
    tied with it count towards sensitivity. Raises ValueError without positives.
    """
    y = _labels(y_true)
    p = _scores(p_positive, y.size, "p_positive")
    if not 0.0 < min_sensitivity <= 1.0:
        raise ValueError(f"min_sensitivity must be in (0, 1], got {min_sensitivity}")
    pos = np.sort(p[y])[::-1]
    if pos.size == 0:
        raise ValueError("choose_threshold needs at least one positive case")
    k = min(math.ceil(min_sensitivity * pos.size), pos.size)
    while k > 1 and (k - 1) / pos.size >= min_sensitivity:  # float error in the ceil
        k -= 1
    while k < pos.size and k / pos.size < min_sensitivity:
        k += 1
    return float(pos[k - 1])


def _resample(
    rng: np.random.Generator, n: int, groups: npt.NDArray[np.intp] | None, n_groups: int
) -> npt.NDArray[np.intp]:
    """Indices of one bootstrap resample: cases, or whole groups, with replacement."""
    if groups is None:
        return rng.integers(0, n, size=n)
    picks = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)
    return np.repeat(np.arange(n), picks[groups])


def _bootstrap(
    metrics: Callable[[BoolArray, FloatArray], FloatArray], width: int, y: BoolArray,
    s: FloatArray, groups: npt.ArrayLike | None, n_boot: int, seed: int,
) -> FloatArray:
    """(n_boot, width) values of a vector of ``width`` metrics on resamples; NaN where
    undefined (the metric returns NaN, or raises ValueError, e.g. on a single class)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    inverse, n_groups = None, 0
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != y.shape:
            raise ValueError(f"groups must have shape {y.shape} like y_true, got {g.shape}")
        _, inverse = np.unique(g, return_inverse=True)
        n_groups = int(inverse.max()) + 1
    rng = np.random.default_rng(seed)
    values = np.full((n_boot, width), np.nan)
    for i in range(n_boot):
        idx = _resample(rng, y.size, inverse, n_groups)
        with contextlib.suppress(ValueError):  # left NaN: undefined on this resample
            values[i] = metrics(y[idx], s[idx])
    return values


def _percentile(values: FloatArray, alpha: float) -> tuple[float, float]:
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def bootstrap_ci(
    metric: Metric, y_true: npt.ArrayLike, scores: npt.ArrayLike, *,
    groups: npt.ArrayLike | None = None, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
) -> Interval:
    """(point on all data, lower, upper): percentile bootstrap 1 - alpha interval.

    With ``groups`` whole groups are resampled with replacement (cluster bootstrap), so
    near-copies move together and the interval is not too narrow. ``metric(labels, scores)``
    gets boolean labels and must not depend on the order of cases. Resamples where it is
    undefined (NaN, or ValueError) are skipped and their number logged as a warning.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    y = _labels(y_true)
    s = _scores(scores, y.size)
    point = float(metric(y, s))
    values = _bootstrap(lambda a, b: np.array([metric(a, b)]), 1, y, s, groups, n_boot,
                        seed)
    skipped = int(np.count_nonzero(~np.isfinite(values[:, 0])))
    if skipped:
        logger.warning("bootstrap: %d of %d resamples skipped (metric undefined)",
                       skipped, n_boot)
    return (point, *_percentile(values[:, 0], alpha))


BOOTSTRAP_METRICS = ("accuracy", "auc", "sensitivity", "specificity", "f1")


class BinaryEvaluation(TypedDict):
    """What ``evaluate_binary`` returns; intervals are (point, lower, upper)."""

    n: int
    positives: int
    negatives: int
    threshold: float
    accuracy: Interval
    auc: Interval
    sensitivity: Interval
    specificity: Interval
    f1: Interval
    confusion: ConfusionMatrix
    ece: float
    ece_uncalibrated: float | None
    n_bins: int
    n_boot: int
    alpha: float
    n_groups: int | None  # None: cases resampled, not groups
    skipped: dict[str, int]  # resamples where each metric was undefined


def _metric_vector(threshold: float) -> Callable[[BoolArray, FloatArray], FloatArray]:
    def metrics(y: BoolArray, p: FloatArray) -> FloatArray:
        cm = confusion(y, p >= threshold)
        return np.array([cm.accuracy, roc_auc(y, p), cm.sensitivity, cm.specificity, cm.f1])

    return metrics


def evaluate_binary(
    y_true: npt.ArrayLike, p_positive: npt.ArrayLike, threshold: float, *,
    groups: npt.ArrayLike | None = None, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
    n_bins: int = 15, p_uncalibrated: npt.ArrayLike | None = None,
) -> BinaryEvaluation:
    """Metrics at ``threshold`` with bootstrap intervals (all on the same resamples), the
    confusion matrix and ECE (of ``p_uncalibrated`` too, when given)."""
    y = _labels(y_true)
    p = _scores(p_positive, y.size, "p_positive", prob=True)
    metrics = _metric_vector(threshold)
    point = metrics(y, p)
    values = _bootstrap(metrics, len(BOOTSTRAP_METRICS), y, p, groups, n_boot, seed)
    out: dict[str, Interval] = {}
    skipped: dict[str, int] = {}
    for j, name in enumerate(BOOTSTRAP_METRICS):
        out[name] = (float(point[j]), *_percentile(values[:, j], alpha))
        skipped[name] = int(np.count_nonzero(~np.isfinite(values[:, j])))
    if any(skipped.values()):
        logger.warning("bootstrap: resamples skipped (metric undefined): %s", skipped)
    ece_before = None
    if p_uncalibrated is not None:
        ece_before = expected_calibration_error(y, p_uncalibrated, n_bins)
    return BinaryEvaluation(
        n=y.size, positives=int(y.sum()), negatives=int((~y).sum()), threshold=threshold,
        accuracy=out["accuracy"], auc=out["auc"], sensitivity=out["sensitivity"],
        specificity=out["specificity"], f1=out["f1"], confusion=confusion(y, p >= threshold),
        ece=expected_calibration_error(y, p, n_bins), ece_uncalibrated=ece_before,
        n_bins=n_bins, n_boot=n_boot, alpha=alpha,
        n_groups=None if groups is None else int(np.unique(np.asarray(groups)).size),
        skipped=skipped,
    )


def _decimal(x: float, places: int, scale: int, rounding: str) -> str:
    """``x * scale`` to ``places`` decimals. The float is read by its shortest repr, so
    49 / 50 is 0.98 exactly, not 0.97999...; NaN prints as n/a."""
    if not math.isfinite(x):
        return "n/a"
    value = Decimal(repr(float(x))) * scale
    return str(value.quantize(Decimal(1).scaleb(-places), rounding=rounding))


def format_percent(x: float) -> str:
    """A proportion as a percentage with 1 decimal, truncated: 0.97996 -> '97.9%'."""
    text = _decimal(x, 1, 100, ROUND_FLOOR)
    return text if text == "n/a" else f"{text}%"


def format_auc(x: float) -> str:
    """An AUC with 4 decimals, truncated: 0.98769 -> '0.9876'."""
    return _decimal(x, 4, 1, ROUND_FLOOR)


def format_ece(x: float) -> str:
    """An ECE with 4 decimals, rounded up: an error is never understated."""
    return _decimal(x, 4, 1, ROUND_CEILING)


def format_report(
    result: BinaryEvaluation, title: str, labels: tuple[str, str] = ("tumour", "no tumour")
) -> str:
    """Aligned text table of ``evaluate_binary``'s result; ``labels`` = (positive,
    negative) names. Percentages and AUC are floored (1 and 4 decimals), never rounded
    up; ECE, an error, is rounded up at 4 decimals so it is never understated either."""
    pos, neg = labels
    level = format_percent(1.0 - result["alpha"]).replace(".0%", "%")
    lines = [title, "=" * len(title),
             f"n = {result['n']} ({result['positives']} {pos}, {result['negatives']} {neg}),"
             f" threshold p({pos}) >= {result['threshold']:.6g}", "",
             f"{'metric':<12}{'value':>9}   {level} CI"]
    rows = (("sensitivity", result["sensitivity"], format_percent),
            ("specificity", result["specificity"], format_percent),
            ("accuracy", result["accuracy"], format_percent),
            ("F1", result["f1"], format_percent),
            ("ROC AUC", result["auc"], format_auc))
    for label, (point, lo, hi), fmt in rows:
        lines.append(f"{label:<12}{fmt(point):>9}   [{fmt(lo)}, {fmt(hi)}]")
    cm = result["confusion"]
    lines.append(f"{'PPV':<12}{format_percent(cm.ppv):>9}")
    lines.append(f"{'NPV':<12}{format_percent(cm.npv):>9}")
    ece = format_ece(result["ece"])
    if result["ece_uncalibrated"] is not None:
        before = format_ece(result["ece_uncalibrated"])
        lines.append(f"{'ECE':<12}{before:>9}   before temperature scaling")
        lines.append(f"{'ECE':<12}{ece:>9}   after temperature scaling")
    else:
        lines.append(f"{'ECE':<12}{ece:>9}")
    lines += ["", *_confusion_lines(cm, pos, neg), ""]
    unit = "cases" if result["n_groups"] is None else f"{result['n_groups']} groups (cluster)"
    lines.append(f"{result['n_boot']} bootstrap resamples of {unit}, percentile intervals,"
                 f" ECE with {result['n_bins']} bins")
    skipped = {k: v for k, v in result["skipped"].items() if v}
    if skipped:
        lines.append("resamples skipped (metric undefined): "
                     + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    return "\n".join(lines)


def _confusion_lines(cm: ConfusionMatrix, pos: str, neg: str) -> list[str]:
    """The confusion matrix as a 2 x 2 table: rows actual, columns predicted."""
    head = [f"predicted {pos}", f"predicted {neg}"]
    rows = [(f"actual {pos}", cm.tp, cm.fn), (f"actual {neg}", cm.fp, cm.tn)]
    first = max(len(r[0]) for r in rows)
    width = max(len(h) for h in head) + 2
    out = [" " * first + "".join(f"{h:>{width}}" for h in head)]
    out += [f"{name:<{first}}{a:>{width}}{b:>{width}}" for name, a, b in rows]
    return out

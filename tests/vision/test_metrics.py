"""Tests for ``assistant.vision.metrics``: checked against sklearn and brute force."""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from assistant.vision.metrics import (
    BinaryEvaluation,
    ConfusionMatrix,
    bootstrap_ci,
    choose_threshold,
    confusion,
    evaluate_binary,
    expected_calibration_error,
    fit_temperature,
    format_auc,
    format_ece,
    format_percent,
    format_report,
    reliability_bins,
    roc_auc,
    roc_curve,
    softmax_with_temperature,
)


def _two_class(rng: np.random.Generator, n: int) -> npt.NDArray[np.int64]:
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)
    return y


# ---------------------------------------------------------------- confusion


def test_confusion_counts_and_ratios_on_a_hand_example() -> None:
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    pred = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    cm = confusion(y, pred)
    assert cm == ConfusionMatrix(tp=3, fp=1, tn=5, fn=1)
    assert cm.sensitivity == pytest.approx(0.75)
    assert cm.specificity == pytest.approx(5 / 6)
    assert cm.ppv == pytest.approx(0.75)
    assert cm.npv == pytest.approx(5 / 6)
    assert cm.accuracy == pytest.approx(0.8)
    assert cm.f1 == pytest.approx(skm.f1_score(y, pred))
    assert cm.sensitivity == pytest.approx(skm.recall_score(y, pred))


def test_confusion_ratios_are_nan_on_empty_denominators() -> None:
    cm = confusion([0, 0, 0], [0, 0, 0])
    assert (cm.tp, cm.fp, cm.tn, cm.fn) == (0, 0, 3, 0)
    assert math.isnan(cm.sensitivity)
    assert math.isnan(cm.ppv)
    assert math.isnan(cm.f1)
    assert cm.specificity == 1.0 and cm.npv == 1.0
    assert math.isnan(ConfusionMatrix(0, 0, 0, 0).accuracy)
    assert confusion([1, 1], [0, 0]).f1 == 0.0


@pytest.mark.parametrize(
    ("y", "pred"), [([0, 2], [0, 1]), ([0, 1], [0, 1, 1]), ([], []), ([[0, 1]], [[0, 1]])]
)
def test_confusion_rejects_bad_input(y: list[int], pred: list[int]) -> None:
    with pytest.raises(ValueError):
        confusion(y, pred)


# ---------------------------------------------------------------- ROC


@pytest.mark.parametrize("seed", range(30))
def test_roc_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    y = _two_class(rng, n)
    scores = rng.integers(0, int(rng.integers(2, 12)), n) / 10.0  # many ties
    assert roc_auc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40))
def test_roc_auc_matches_sklearn_property(pairs: list[tuple[bool, int]]) -> None:
    y = np.array([a for a, _ in pairs], dtype=int)
    s = np.array([b for _, b in pairs], dtype=float)
    if y.min() == y.max():
        assert math.isnan(roc_auc(y, s))
    else:
        assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_roc_curve_matches_sklearn_without_dropping(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    y = _two_class(rng, n)
    scores = np.round(rng.random(n), int(rng.integers(1, 4)))
    fpr, tpr, thr = roc_curve(y, scores)
    ref_fpr, ref_tpr, ref_thr = skm.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_array_equal(thr[1:], ref_thr[1:])
    assert thr[0] == np.inf and (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert np.all(np.diff(thr) < 0)  # descending, ties collapsed
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, scores))


def test_roc_curve_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_curve([1, 1, 1], [0.1, 0.5, 0.9])


# ---------------------------------------------------------------- calibration


def _brute_force_ece(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    """Guo et al.'s loop: top-label confidence, bins (lower, upper] over [0, 1]."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total = 0.0
    for i in range(n_bins):
        conf, correct = [], []
        for label, prob in zip(y, p, strict=True):
            c = max(prob, 1.0 - prob)
            if edges[i] < c <= edges[i + 1] or (i == 0 and c == 0.0):
                conf.append(c)
                correct.append(float(int(prob > 0.5) == label))
        if conf:
            total += len(conf) / len(y) * abs(np.mean(correct) - np.mean(conf))
    return total


@pytest.mark.parametrize(("seed", "n_bins"), [(0, 15), (1, 10), (2, 7), (3, 1)])
def test_ece_matches_brute_force(seed: int, n_bins: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.random(500)
    p[:40] = rng.integers(0, n_bins + 1, 40) / n_bins  # exactly on bin edges
    p[40:45] = 0.5
    y = (rng.random(500) < p**0.7).astype(int)
    expected = _brute_force_ece(y, p, n_bins)
    assert expected_calibration_error(y, p, n_bins) == pytest.approx(expected, abs=1e-12)


def test_ece_is_small_when_calibrated_and_large_when_overconfident() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    logit = np.log(p / (1 - p))
    overconfident = 1 / (1 + np.exp(-3 * logit))
    assert expected_calibration_error(y, overconfident) > 0.1


def test_reliability_bins_cover_all_cases() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(int)
    bins = reliability_bins(y, p, n_bins=15)
    assert bins.count.sum() == 1000
    np.testing.assert_allclose(bins.lower, np.arange(15) / 15)
    np.testing.assert_allclose(bins.upper, np.arange(1, 16) / 15)
    assert (bins.count[:7] == 0).all()  # top-label confidence is >= 0.5
    assert np.isnan(bins.accuracy[:7]).all() and np.isnan(bins.confidence[:7]).all()
    used = bins.count > 0
    conf, lower, upper = bins.confidence[used], bins.lower[used], bins.upper[used]
    assert ((conf > lower) & (conf <= upper)).all()


def _nll(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    return float(-np.mean(np.log(softmax_with_temperature(logits, t)[np.arange(y.size), y])))


def test_fit_temperature_recovers_an_overconfidence_factor() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 1.5, (20_000, 2))
    p_true = softmax_with_temperature(true_logits, 1.0)
    y = (rng.random(20_000) < p_true[:, 1]).astype(int)
    logits = 3.0 * true_logits
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.1)
    assert _nll(logits, y, t) <= min(_nll(logits, y, t * 1.01), _nll(logits, y, t / 1.01))
    before = expected_calibration_error(y, softmax_with_temperature(logits, 1.0)[:, 1])
    after = expected_calibration_error(y, softmax_with_temperature(logits, t)[:, 1])
    assert after < before / 3


def test_softmax_with_temperature_is_a_stable_softmax() -> None:
    logits = np.array([[1000.0, 1001.0], [0.0, 0.0], [2.0, -1.0]])
    probs = softmax_with_temperature(logits, 2.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[0, 1], 1 / (1 + np.exp(-0.5)))
    with pytest.raises(ValueError):
        softmax_with_temperature(logits, 0.0)


def test_fit_temperature_rejects_bad_labels() -> None:
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1, 2]))


# ---------------------------------------------------------------- threshold


def _sensitivity(y: np.ndarray, p: np.ndarray, t: float) -> float:
    return confusion(y, p >= t).sensitivity


@pytest.mark.parametrize(("seed", "floor"), [(s, f) for s in range(10) for f in (0.98, 0.9, 1.0)])
def test_choose_threshold_is_the_highest_meeting_the_floor(seed: int, floor: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    y = _two_class(rng, n)
    p = np.round(np.clip(0.5 + 0.3 * (y - 0.5) + 0.25 * rng.standard_normal(n), 0, 1), 2)
    t = choose_threshold(y, p, floor)
    assert _sensitivity(y, p, t) >= floor
    assert _sensitivity(y, p, float(np.nextafter(t, np.inf))) < floor
    best = max(c for c in np.unique(p) if _sensitivity(y, p, c) >= floor)  # brute force
    assert t == best


def test_choose_threshold_exact_floor_and_errors() -> None:
    y = np.ones(50, dtype=int)
    p = np.linspace(0.01, 0.99, 50)
    assert choose_threshold(y, p, 0.98) == p[1]  # 49 of 50 is exactly 98%
    with pytest.raises(ValueError, match="positive"):
        choose_threshold(np.zeros(5, dtype=int), np.linspace(0, 1, 5))
    with pytest.raises(ValueError):
        choose_threshold(y, p, 0.0)


# ---------------------------------------------------------------- bootstrap


def _mean_label(y: np.ndarray, _: np.ndarray) -> float:
    return float(np.mean(y))


def test_bootstrap_width_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.3).astype(int)
    point, lo, hi = bootstrap_ci(_mean_label, y, np.zeros(400), n_boot=2000, seed=0)
    assert lo <= point <= hi
    assert point == pytest.approx(y.mean())
    normal = 2 * 1.959964 * math.sqrt(point * (1 - point) / y.size)
    assert hi - lo == pytest.approx(normal, rel=0.25)


def test_cluster_bootstrap_is_wider_with_duplicates_and_deterministic() -> None:
    rng = np.random.default_rng(2)
    base = (rng.random(100) < 0.5).astype(int)
    y, groups = np.repeat(base, 5), np.repeat(np.arange(100), 5)  # 5 exact copies each
    scores = np.zeros(y.size)
    _, lo, hi = bootstrap_ci(_mean_label, y, scores, n_boot=1000)
    clustered = bootstrap_ci(_mean_label, y, scores, groups=groups, n_boot=1000)
    assert clustered[2] - clustered[1] > 1.6 * (hi - lo)  # about sqrt(5) = 2.2 times
    assert clustered == bootstrap_ci(_mean_label, y, scores, groups=groups, n_boot=1000)
    assert clustered != bootstrap_ci(_mean_label, y, scores, groups=groups, n_boot=1000, seed=1)


def test_bootstrap_skips_undefined_resamples(caplog: pytest.LogCaptureFixture) -> None:
    y, scores = np.array([0, 1, 1, 1, 1, 1]), np.array([0.1, 0.2, 0.6, 0.7, 0.8, 0.9])
    with caplog.at_level(logging.WARNING, logger="assistant.vision.metrics"):
        point, lo, hi = bootstrap_ci(roc_auc, y, scores, n_boot=300)
    assert point == 1.0 and lo == hi == 1.0
    assert "resamples skipped" in caplog.text


# ---------------------------------------------------------------- evaluation and report


def _test_set(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, probabilities, groups) of 400 cases in 150 groups."""
    rng = np.random.default_rng(seed)
    y = _two_class(rng, 400)
    p = np.clip(0.5 + 0.4 * (y - 0.5) + 0.2 * rng.standard_normal(400), 0, 1)
    return y, p, rng.integers(0, 150, 400)


def _evaluation() -> BinaryEvaluation:
    y, p, groups = _test_set()
    return evaluate_binary(y, p, 0.45, groups=groups, n_boot=300, p_uncalibrated=p**2)


def test_evaluate_binary_bundles_consistent_metrics() -> None:
    y, p, groups = _test_set()
    result = _evaluation()
    cm = confusion(y, p >= 0.45)
    assert result["confusion"] == cm
    assert (result["n"], result["positives"], result["negatives"]) == (400, y.sum(), 400 - y.sum())
    assert result["sensitivity"][0] == cm.sensitivity and result["auc"][0] == roc_auc(y, p)
    for point, lo, hi in (result["accuracy"], result["auc"], result["sensitivity"],
                          result["specificity"], result["f1"]):
        assert lo <= point <= hi
    sens = bootstrap_ci(
        lambda a, b: confusion(a, b >= 0.45).sensitivity, y, p, groups=groups, n_boot=300
    )
    assert result["sensitivity"] == pytest.approx(sens)  # the same resamples
    assert result["ece"] == expected_calibration_error(y, p)
    assert result["ece_uncalibrated"] == expected_calibration_error(y, p**2)


def test_formatting_never_rounds_up() -> None:
    assert format_percent(0.97996) == "97.9%"
    assert format_percent(49 / 50) == "98.0%"  # 0.98 read by its repr, not 0.9799999...
    assert format_percent(0.99999) == "99.9%"
    assert format_percent(float("nan")) == "n/a"
    assert format_auc(0.99999) == "0.9999"
    assert format_ece(0.02) == "0.0200" and format_ece(0.0200001) == "0.0201"


def test_format_report_truncates_and_lays_out_the_confusion_matrix() -> None:
    result = _evaluation()
    result["sensitivity"] = (0.97996, 0.95, 0.999999)
    result["confusion"] = ConfusionMatrix(tp=101, fp=7, tn=203, fn=3)
    text = format_report(result, "Test split", labels=("tumour", "no tumour"))
    sens_line = next(line for line in text.splitlines() if line.startswith("sensitivity"))
    assert "97.9%" in sens_line and "98.0%" not in sens_line and "[95.0%, 99.9%]" in sens_line
    assert "Test split" in text and "before temperature scaling" in text
    lines = text.splitlines()
    header = next(line for line in lines if "predicted tumour" in line)
    row_pos = next(line for line in lines if line.startswith("actual tumour"))
    row_neg = next(line for line in lines if line.startswith("actual no tumour"))
    assert header.index("predicted tumour") < header.index("predicted no tumour")
    assert row_pos.split()[-2:] == ["101", "3"] and row_neg.split()[-2:] == ["7", "203"]
    assert len(row_pos) == len(row_neg) == len(header)  # aligned

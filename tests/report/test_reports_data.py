"""Reports drafted from the released vision model on real Br35H test-fold images."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from assistant.imaging import read_image
from assistant.pipeline import Analysis, Pipeline
from assistant.report import SOURCES, Report, Sentence, check_report, frame_geometry
from assistant.report.structured import side_words

pytestmark = pytest.mark.data


def _hot_share_on_side(heat: np.ndarray, mask: np.ndarray, side: str) -> float:
    """From the raw heat grid alone: the share of the hot cells' heat (>= half the peak) on
    ``side`` of the head's midline (``mask`` over the model input)."""
    g, size = heat.shape[0], mask.shape[0]
    cols = np.flatnonzero(mask.any(axis=0))
    midline = (cols[0] + cols[-1] + 1) / 2
    centres = (np.arange(g) + 0.5) * size / g  # x of each grid column's centre
    hot = np.where(heat >= 0.5 * heat.max(), heat, 0.0)
    left = hot[:, centres < midline].sum() / hot.sum()
    return float(left if side == "image left" else 1.0 - left)


def _red_share_left(png: bytes, midline: float) -> float:
    """Of the overlay's reddest pixels (the colour map's hot end: red minus blue at least
    half its maximum), the share of their redness left of ``midline`` (0-1 of the width)."""
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None, "the overlay is not a PNG"
    redness = bgr[..., 2].astype(float) - bgr[..., 0].astype(float)
    hot = np.where(redness >= 0.5 * redness.max(), redness, 0.0)
    xs = (np.arange(hot.shape[1]) + 0.5) / hot.shape[1]
    return float(hot[:, xs < midline].sum() / hot.sum())


@pytest.fixture(scope="module")
def tumour_calls(released: Pipeline, test_fold: list[tuple[Path, int]]) -> list[
        tuple[Path, Analysis]]:
    paths = [p for p, label in test_fold if label == 1][::20]
    return list(zip(paths, released.analyze_many(paths), strict=True))


def test_tumour_reports_say_tumour_where_the_heat_is(released: Pipeline, tumour_calls: list[
        tuple[Path, Analysis]]) -> None:
    sided = 0
    for path, analysis in tumour_calls:
        d, report, loc = analysis.diagnosis, analysis.report, analysis.location
        if d.label != "tumour":
            continue  # a missed tumour: its report must say no tumour (checked below)
        assert "Tumour suggested" in report.impression, path
        assert check_report(report, d).ok, (path, check_report(report, d).problems)
        assert loc is not None, path
        assert side_words(loc.side) in report.findings, path
        if loc.side == "across the midline":
            continue
        sided += 1
        image = read_image(path)
        geometry = frame_geometry(image.pixels, released.vision.bundle.preprocess)
        assert d.heat is not None
        assert _hot_share_on_side(d.heat, geometry.head_on_input(), loc.side) > 0.5, path
        # The overlay returned to the user shows the heat on the same side of the head.
        cols = np.flatnonzero(geometry.head.any(axis=0))
        midline = (cols[0] + cols[-1] + 1) / 2 / geometry.width
        assert analysis.heatmap_png is not None
        left = _red_share_left(analysis.heatmap_png, midline)
        assert (left if loc.side == "image left" else 1.0 - left) > 0.5, (path, left)
    assert sided >= 8


def test_every_report_of_a_spread_of_the_test_fold_agrees_with_its_diagnosis(
        released: Pipeline, test_fold: list[tuple[Path, int]]) -> None:
    paths = [p for p, _ in test_fold[::15]]
    analyses = released.analyze_many(paths)
    assert {a.diagnosis.label for a in analyses} == {"tumour", "no tumour"}
    for path, analysis in zip(paths, analyses, strict=True):
        verdict = check_report(analysis.report, analysis.diagnosis)
        assert verdict.ok, (path, verdict.problems)
        assert all(s.sources and set(s.sources) <= set(SOURCES)
                   for s in analysis.report.sentences)
        if analysis.diagnosis.label == "no tumour":
            assert analysis.report.impression.startswith("No tumour suggested"), path


@pytest.mark.slow
def test_no_report_on_the_whole_test_fold_contradicts_its_diagnosis(
        released: Pipeline, test_fold: list[tuple[Path, int]]) -> None:
    assert len(test_fold) == 444
    contradicting = []
    for first in range(0, len(test_fold), 64):
        paths = [p for p, _ in test_fold[first:first + 64]]
        for path, analysis in zip(paths, released.analyze_many(paths), strict=True):
            if not check_report(analysis.report, analysis.diagnosis).ok:
                contradicting.append(path.name)
    assert contradicting == []


def test_a_contradicting_real_report_is_caught(tumour_calls: list[tuple[Path, Analysis]],
                                               ) -> None:
    analysis = next(a for _, a in tumour_calls if a.diagnosis.label == "tumour")
    report = analysis.report
    flipped = Report(tuple(Sentence("impression", "No tumour is seen on this slice.",
                                    s.sources) if s.section == "impression" else s
                           for s in report.sentences),
                     report.drafter, report.drafter_version, report.model, report.model_sha256)
    verdict = check_report(flipped, analysis.diagnosis)
    assert not verdict.ok and verdict.impression == "negated"
    # A real no-tumour report filed under a tumour diagnosis is caught too.
    negative = Report(tuple(Sentence(s.section, s.text.replace(
        "showing a tumour", "showing no tumour").replace("Tumour suggested", "No tumour "
                                                         "suggested"), s.sources)
        for s in report.sentences), report.drafter, report.drafter_version, report.model,
        report.model_sha256)
    assert not check_report(negative, analysis.diagnosis).ok


def test_a_photograph_gets_no_diagnosis(released: Pipeline, photo_png: bytes) -> None:
    analysis = released.analyze(photo_png)
    d = analysis.diagnosis
    assert not d.in_scope and d.label is None and d.probability is None and d.scope_reason
    assert analysis.heatmap_png is None and analysis.location is None
    report = analysis.report
    assert report.findings.startswith("No diagnosis is given:")
    assert "tumour" not in f"{report.findings} {report.impression}".lower()
    assert check_report(report, d).ok and report.draft
    assert analysis.citations.hits == () and "no diagnosis" in str(analysis.citations.note)

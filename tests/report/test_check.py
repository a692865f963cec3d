"""The contradiction checker reads negation, and it can fail."""

import pytest

from assistant.report import Report, Sentence, check_report, text_stance
from assistant.vision.infer import Diagnosis

TUMOUR = Diagnosis(True, None, "tumour", 0.93, 0.25, 10.0)
NO_TUMOUR = Diagnosis(True, None, "no tumour", 0.03, 0.25, 10.0)
REFUSED = Diagnosis(False, "the image is blank or nearly constant", None, None, 0.25, None)


@pytest.mark.parametrize(("text", "stance"), [
    ("Tumour suggested by the model on this slice.", "affirmed"),
    ("A mass is present in the image left side.", "affirmed"),
    ("No tumour suggested by the model on this slice.", "negated"),
    ("There is no evidence of a mass.", "negated"),
    ("The slice is negative for tumour.", "negated"),
    ("A tumour is not seen.", "negated"),
    ("The lesion was ruled out.", "negated"),
    ("A tumour cannot be excluded.", "affirmed"),
    ("The model classifies the slice as showing no tumour: calibrated probability of "
     "tumour 0.03, below the operating threshold 0.25.", "negated"),
    ("Calibrated probability of tumour 0.40.", "none"),
    ("No diagnosis is given: the image is blank.", "none"),
    ("Tumour suggested. No tumour is seen.", "mixed"),
    ("Nothing abnormal; notably a tumour is present.", "affirmed"),  # "nothing" is no "no"
])
def test_text_stance(text: str, stance: str) -> None:
    assert text_stance(text) == stance


def _report(findings: str, impression: str) -> Report:
    return Report((Sentence("findings", findings, ("diagnosis.label",)),
                   Sentence("impression", impression, ("diagnosis.label",))),
                  "test-drafter", "0", "vision-test", "ab" * 32)


def test_a_consistent_report_passes() -> None:
    verdict = check_report(_report("The model classifies the slice as showing a tumour: "
                                   "calibrated probability 0.93.",
                                   "Tumour suggested by the model (calibrated probability "
                                   "0.93)."), TUMOUR)
    assert verdict.ok, verdict.problems


@pytest.mark.parametrize(("findings", "impression", "diagnosis", "problem"), [
    # A deliberately contradicting impression under a tumour diagnosis.
    ("The model classifies the slice as showing a tumour.", "No tumour is seen.", TUMOUR,
     "impression reads negated"),
    # The findings contradict, the impression agrees: the whole reads mixed.
    ("There is no evidence of a mass.", "Tumour suggested by the model.", TUMOUR,
     "read mixed"),
    # A tumour asserted under a no-tumour diagnosis.
    ("A tumour is present on the image left side.", "A tumour is present.", NO_TUMOUR,
     "reads affirmed"),
    # The diagnosis is not stated at all.
    ("The heatmap's hottest area is central.", "For clinician review.", TUMOUR, "reads none"),
    # A refused image must not be given a diagnosis either way.
    ("No diagnosis is given.", "No tumour suggested.", REFUSED, "reads negated"),
    # The right words with the wrong number.
    ("Showing a tumour: calibrated probability 0.51.", "Tumour suggested.", TUMOUR,
     "differ from"),
    ("Showing no tumour: calibrated probability of tumour >0.99.", "No tumour suggested.",
     NO_TUMOUR, "differ from"),
])
def test_contradicting_reports_are_caught(findings: str, impression: str,
                                          diagnosis: Diagnosis, problem: str) -> None:
    verdict = check_report(_report(findings, impression), diagnosis)
    assert not verdict.ok
    assert any(problem in p for p in verdict.problems), verdict.problems

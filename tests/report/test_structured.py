"""The structured report: every sentence sourced, the diagnosis stated and never
contradicted, a draft that names its drafter, and no diagnosis for a refused image."""

import dataclasses

import pytest

from assistant.imaging import ImageMeta
from assistant.report import (
    DRAFT_NOTICE,
    DRAFTER,
    SOURCES,
    Context,
    Evidence,
    HeatLocation,
    ImageQuality,
    ModelInfo,
    Report,
    Sentence,
    check_report,
    draft_report,
)
from assistant.vision.infer import Diagnosis

META = ImageMeta(format="jpeg", width=240, height=300, channels=1, bit_depth=8)
QUALITY = ImageQuality(width=240, height=300, input_size=128, upscaled=False, colour=False,
                       dynamic_range=0.9, low_contrast=False, head_fraction=0.8,
                       small_head=False, cut_edges=())
LEFT_UPPER = HeatLocation(side="image left", side_share=0.9, third="upper",
                          depth="peripheral", radius=0.7, extent=0.04, share_on_head=0.9)


def _evidence(model_info: ModelInfo, diagnosis: Diagnosis, **changes: object) -> Evidence:
    base = Evidence(diagnosis, model_info, QUALITY, LEFT_UPPER, META,
                    Context.make("headache", 54, "female"))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _all_sourced(report: Report) -> None:
    assert report.sentences
    for sentence in report.sentences:
        assert sentence.sources and set(sentence.sources) <= set(SOURCES), sentence
        assert sentence.text in report.text


def test_tumour_report(model_info: ModelInfo) -> None:
    diagnosis = Diagnosis(True, None, "tumour", 0.874, 0.25, 12.0)
    report = draft_report(_evidence(model_info, diagnosis))
    _all_sourced(report)
    assert check_report(report, diagnosis).ok
    assert "Tumour suggested" in report.impression and "0.87" in report.impression
    assert "image left side of the head, in its upper third, peripheral" in report.findings
    assert report.draft and report.text.startswith(DRAFT_NOTICE)
    assert report.drafter == DRAFTER and report.model == "vision-test"
    assert f"{DRAFTER} {report.drafter_version}" in report.text and "vision-test" in report.text
    assert '"headache"' in report.technique and "age 54 years and sex female" in report.technique
    for heading in ("TECHNIQUE:", "FINDINGS:", "IMPRESSION:", "LIMITATIONS:"):
        assert heading in report.text
    data = report.to_dict()
    assert data["drafter"]["model_sha256"] == "ab" * 32 and data["draft"] is True
    assert {s["section"] for s in data["sentences"]} == {"notice", "technique", "findings",
                                                       "impression", "limitations"}


def test_a_frame_of_a_multi_frame_dicom_is_named(model_info: ModelInfo) -> None:
    """The report had said "One 2-D image" of a 2-frame DICOM, its second frame read."""
    diagnosis = Diagnosis(True, None, "tumour", 0.874, 0.25, 12.0)
    meta = dataclasses.replace(META, format="dicom", modality="MR", frame_count=2,
                               frame_index=1)
    report = draft_report(_evidence(model_info, diagnosis, meta=meta))
    assert "DICOM modality MR; frame 2 of 2 read)" in report.technique
    assert "; frame" not in draft_report(_evidence(model_info, diagnosis)).technique


def test_sides_of_an_image_turned_by_its_exif_orientation(model_info: ModelInfo) -> None:
    """A mirrored phone JPEG is read as displayed: its sides are not those "as stored"."""
    diagnosis = Diagnosis(True, None, "tumour", 0.874, 0.25, 12.0)
    turned = draft_report(_evidence(model_info, diagnosis,
                                    meta=dataclasses.replace(META, orientation=2)))
    assert "sides of the image as displayed (its EXIF orientation applied)" in turned.limitations
    assert "sides of the image as stored" in draft_report(
        _evidence(model_info, diagnosis)).limitations


def test_no_tumour_report(model_info: ModelInfo) -> None:
    diagnosis = Diagnosis(True, None, "no tumour", 0.0004, 0.25, 12.0)
    report = draft_report(_evidence(model_info, diagnosis))
    _all_sourced(report)
    assert check_report(report, diagnosis).ok
    assert report.impression.startswith("No tumour suggested") and "<0.01" in report.impression
    assert "not a finding" in report.findings


def test_a_report_says_what_the_model_cannot_name(model_info: ModelInfo) -> None:
    """A clinician asking "Is it a glioma?" or "How big is it?" reads, from the checkpoint's
    labels, that the model names no type or grade and measures no size."""
    report = draft_report(_evidence(model_info, Diagnosis(True, None, "tumour", 0.9, 0.25, 1.0)))
    (said,) = [s for s in report.sentences if "model.labels" in s.sources]
    assert said.section == "limitations"
    assert said.text == ('The model\'s only labels are "no tumour" and "tumour": it names no '
                         "type or grade and measures no size.")
    out = draft_report(_evidence(model_info, Diagnosis(False, "unlike the training images",
                                                       None, None, 0.25, None), location=None))
    assert not [s for s in out.sentences if "model.labels" in s.sources]  # nothing to name


@pytest.mark.parametrize(("label", "p", "note"), [
    ("tumour", 0.31, "below 0.5"),  # called at the deliberately low threshold
    ("no tumour", 0.2, "within a factor of two"),  # just under the threshold
])
def test_calls_near_the_threshold_say_so(model_info: ModelInfo, label: str, p: float,
                                         note: str) -> None:
    diagnosis = Diagnosis(True, None, label, p, 0.25, 12.0)
    report = draft_report(_evidence(model_info, diagnosis))
    assert note in report.impression and check_report(report, diagnosis).ok


def test_out_of_scope_report_gives_no_diagnosis(model_info: ModelInfo) -> None:
    diagnosis = Diagnosis(False, "the image is blank or nearly constant", None, None, 0.25,
                          None)
    report = draft_report(_evidence(model_info, diagnosis, location=None))
    _all_sourced(report)
    assert check_report(report, diagnosis).ok
    assert "No diagnosis is given: the image is blank or nearly constant." in report.findings
    assert report.impression.startswith("Not assessed")
    assert "probability" not in report.text and "heatmap" not in report.text.lower()
    assert "head bounding box" not in report.technique  # no head claimed on a non-head image


def test_quality_problems_become_limitations(model_info: ModelInfo) -> None:
    poor = dataclasses.replace(QUALITY, width=90, height=100, upscaled=True, colour=True,
                               low_contrast=True, dynamic_range=0.12, cut_edges=("top", "left"))
    diagnosis = Diagnosis(True, None, "tumour", 0.9, 0.25, 12.0)
    limits = draft_report(_evidence(model_info, diagnosis, quality=poor)).limitations
    assert "enlarged to 128 pixels" in limits and "0.12 of the display range" in limits
    assert "top and left edges" in limits and "colour samples" in limits


def test_missing_heat_location_is_said_not_guessed(model_info: ModelInfo) -> None:
    diagnosis = Diagnosis(True, None, "tumour", 0.9, 0.25, 12.0)
    report = draft_report(_evidence(model_info, diagnosis, location=None))
    assert "could not be placed on the head" in report.findings
    assert "image left" not in report.findings and check_report(report, diagnosis).ok


def test_a_sentence_needs_a_known_source() -> None:
    with pytest.raises(ValueError, match="without a source"):
        Sentence("findings", "A tumour.", ())
    with pytest.raises(ValueError, match="unknown sources"):
        Sentence("findings", "A tumour.", ("my.intuition",))


def test_a_model_with_other_labels_is_refused(model_info: ModelInfo) -> None:
    other = dataclasses.replace(model_info, labels=("normal", "pneumonia"))
    with pytest.raises(ValueError, match="labels"):
        draft_report(_evidence(other, Diagnosis(True, None, "pneumonia", 0.9, 0.5, 1.0)))

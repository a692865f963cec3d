"""The FHIR R4B DiagnosticReport of real analyses (release model, real Br35H images): an
in-scope study and an out-of-scope one, validated by the fhir.resources models."""

import base64
import io
from datetime import UTC, datetime

import cv2
import numpy as np
import pydicom
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from assistant.config import Settings
from assistant.fhir import DEVICE_ID, OBSERVATION_ID, diagnostic_report, diagnostic_report_json
from assistant.pipeline import Analysis, Pipeline
from assistant.report import Context
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest

pytestmark = pytest.mark.data

ISSUED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.from_settings(Settings(), citations=False)


@pytest.fixture(scope="module")
def tumour(pipeline: Pipeline) -> Analysis:
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD]
    path = Settings().data_dir / next(r.path for r in rows if r.label == 1)
    return pipeline.analyze(path.read_bytes(), Context.make("headache", 61, "male"))


@pytest.fixture(scope="module")
def blank(pipeline: Pipeline) -> Analysis:
    ok, png = cv2.imencode(".png", np.zeros((64, 64), np.uint8))
    assert ok
    return pipeline.analyze(png.tobytes())


def _contained(raw: dict[str, object], kind: str) -> dict[str, object]:
    contained = raw["contained"]
    assert isinstance(contained, list)
    return next(r for r in contained if r["resourceType"] == kind)


def test_in_scope_study(tumour: Analysis) -> None:
    report = diagnostic_report(tumour, ISSUED)
    assert isinstance(report, DiagnosticReport)
    assert report.status == "preliminary" and report.subject is None  # no patient data
    assert report.id == tumour.study_id
    assert report.code.coding[0].code == "18748-4"
    assert report.conclusion is not None
    assert report.conclusion.startswith("Draft for a clinician")
    assert tumour.report.impression in report.conclusion
    assert [c.text for c in report.conclusionCode or []] == ["tumour"]
    text, png = report.presentedForm or []
    assert text.data.decode() == tumour.report.text and text.contentType.startswith("text/")
    assert png.contentType == "image/png" and png.data == tumour.heatmap_png
    raw = diagnostic_report_json(tumour, ISSUED)
    assert raw["issued"] == "2026-01-02T03:04:05Z"
    assert raw["result"] == [{"reference": f"#{OBSERVATION_ID}",
                              "display": "diagnosis probability"}]
    observation = Observation.model_validate(_contained(raw, "Observation"))
    assert observation.status == "preliminary"
    assert observation.valueQuantity is not None
    assert float(observation.valueQuantity.value) == pytest.approx(
        tumour.diagnosis.probability, abs=1e-6)
    assert observation.valueQuantity.code == "1"
    assert observation.interpretation is not None
    assert "at or above the operating threshold 0.25" in str(observation.interpretation[0].text)
    assert observation.device is not None and observation.device.reference == f"#{DEVICE_ID}"
    device = _contained(raw, "Device")
    assert {"type": {"text": "weights sha256"},
            "value": tumour.models[0].sha256} in device["version"]  # type: ignore[operator]
    # The JSON is what the models accept back, and base64 where FHIR says so.
    assert DiagnosticReport.model_validate(raw).presentedForm is not None
    assert base64.b64decode(raw["presentedForm"][1]["data"]) == tumour.heatmap_png  # type: ignore[index]


def test_out_of_scope_study(blank: Analysis) -> None:
    assert not blank.diagnosis.in_scope
    raw = diagnostic_report_json(blank, ISSUED)
    report = DiagnosticReport.model_validate(raw)
    assert report.status == "preliminary" and report.conclusionCode is None
    assert [f.contentType for f in report.presentedForm or []] == ["text/plain; charset=utf-8"]
    assert "Not assessed" in str(report.conclusion)
    observation = Observation.model_validate(_contained(raw, "Observation"))
    assert observation.valueQuantity is None and observation.dataAbsentReason is not None
    assert observation.dataAbsentReason.coding[0].code == "not-performed"
    assert "blank" in str(observation.dataAbsentReason.text)
    assert raw["result"][0]["display"] == "no diagnosis"  # type: ignore[index]


def test_the_identifiers_link_the_image_and_its_dicom_study(pipeline: Pipeline,
                                                             tumour: Analysis) -> None:
    """The JSON form gave the image's sha256 and the DICOM study's keyed UID hash; the FHIR
    form had only the study id, so a FHIR consumer could not tie the report to either."""
    from assistant.fhir import IMAGE_SYSTEM, STUDY_SYSTEM, STUDY_UID_SYSTEM
    from tests.encodings import dicom, grey_levels

    ids = {i["system"]: i["value"] for i in diagnostic_report_json(tumour, ISSUED)["identifier"]}
    assert ids == {STUDY_SYSTEM: tumour.study_id, IMAGE_SYSTEM: tumour.image_sha256}
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD]
    path = Settings().data_dir / rows[0].path
    ds = pydicom.dcmread(io.BytesIO(dicom(grey_levels(path.read_bytes()).astype(np.uint16)
                                          * 16)))
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    out = io.BytesIO()
    ds.save_as(out)
    wrapped = pipeline.analyze(out.getvalue())
    assert wrapped.study_uid_hash
    ids = {i["system"]: i["value"] for i in diagnostic_report_json(wrapped)["identifier"]}
    assert ids[STUDY_UID_SYSTEM] == wrapped.study_uid_hash


def test_a_study_id_that_is_no_fhir_id_stays_an_identifier(pipeline: Pipeline) -> None:
    _, png = cv2.imencode(".png", np.zeros((64, 64), np.uint8))
    analysis = pipeline.analyze(png.tobytes(), study_id="study #1 (ward 3)")
    raw = diagnostic_report_json(analysis, ISSUED)
    assert "id" not in raw
    assert raw["identifier"][0]["value"] == "study #1 (ward 3)"  # type: ignore[index]

"""An analysis as a FHIR R4B DiagnosticReport (``/v1/analyze?format=fhir``); no web imports.

The report is ``preliminary`` (a draft for a clinician, never final) and names no patient
(the assistant keeps no patient data). It holds:

- ``conclusion``: the draft notice and the report's impression; ``conclusionCode`` (text
  only) the diagnosis label when one is given;
- ``presentedForm``: the report text (``text/plain``, base64) and, for an in-scope image,
  the heatmap overlay (``image/png``);
- ``result``: a contained Observation of the calibrated probability of the positive label
  (UCUM unit ``1``), interpreted against the stored threshold; for an out-of-scope image
  the Observation has no value, ``dataAbsentReason`` ``not-performed`` and the reason;
- a contained Device for the vision model (name, release, weights sha256), the
  Observation's ``device``;
- ``identifier``: the study id, the image's sha256 and, for a DICOM study, the keyed hash
  of its StudyInstanceUID, as the JSON form gives them.

Every resource is built through the ``fhir.resources.R4B`` models, so what comes out has
passed their validation. Codes are only ones whose meaning is certain (LOINC 18748-4
"Diagnostic imaging study", HL7 v2-0074 ``RAD``, observation-category ``imaging``,
data-absent-reason ``not-performed``); everything else is text.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

if TYPE_CHECKING:
    from assistant.pipeline import Analysis

FHIR_JSON = "application/fhir+json"
STUDY_SYSTEM = "urn:medical-imaging-assistant:study-id"
# The JSON form's links to the image and its DICOM study, so that a FHIR consumer can tie
# the report to them (the keyed hash names the StudyInstanceUID without revealing it).
IMAGE_SYSTEM = "urn:medical-imaging-assistant:image-sha256"
STUDY_UID_SYSTEM = "urn:medical-imaging-assistant:study-uid-hash"
DEVICE_ID = "vision-model"
OBSERVATION_ID = "diagnosis-probability"
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

_RADIOLOGY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                          "code": "RAD", "display": "Radiology"}]}
_IMAGING = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "imaging", "display": "Imaging"}]}
_REPORT_CODE = {"coding": [{"system": "http://loinc.org", "code": "18748-4",
                            "display": "Diagnostic imaging study"}],
                "text": "Software-drafted image report (brain MRI tumour classifier)"}
_NOT_PERFORMED = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _device(vision: dict[str, Any]) -> Device:
    versions: list[dict[str, Any]] = []
    if vision.get("version"):
        versions.append({"type": {"text": "release"}, "value": vision["version"]})
    if vision.get("sha256"):
        versions.append({"type": {"text": "weights sha256"}, "value": vision["sha256"]})
    return Device.model_validate({
        "resourceType": "Device", "id": DEVICE_ID, "status": "active",
        "deviceName": [{"name": vision["name"], "type": "model-name"}],
        "type": {"text": "software: image classification model"},
        "version": versions or None,
    })


def _observation(analysis: dict[str, Any], issued: str) -> Observation:
    d = analysis["diagnosis"]
    positive = d["positive_label"]
    probability, threshold = d["probability"], d["threshold"]
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": OBSERVATION_ID, "status": "preliminary",
        "category": [_IMAGING],
        "code": {"text": f"Calibrated probability of '{positive}' from the vision model"},
        "issued": issued, "device": {"reference": f"#{DEVICE_ID}"},
    }
    if analysis["in_scope"] and probability is not None:
        side = "at or above" if probability >= threshold else "below"
        obs["valueQuantity"] = {"value": round(probability, 6), "unit": "probability",
                                "system": "http://unitsofmeasure.org", "code": "1"}
        obs["interpretation"] = [{"text": f"{d['label']}: {side} the operating threshold "
                                          f"{threshold:g}"}]
    else:
        reason = analysis["scope_reason"] or "the image is out of scope"
        obs["dataAbsentReason"] = {
            "coding": [{"system": _NOT_PERFORMED, "code": "not-performed",
                        "display": "Not Performed"}],
            "text": f"no diagnosis: {reason}"}
    return Observation.model_validate(obs)


def _presented_form(analysis: dict[str, Any], issued: str) -> list[dict[str, Any]]:
    forms: list[dict[str, Any]] = [{
        "contentType": "text/plain; charset=utf-8", "language": "en",
        "data": _b64(analysis["report"]["text"].encode("utf-8")),
        "title": "Draft report (for a clinician to verify)", "creation": issued}]
    heatmap = analysis.get("heatmap")
    if heatmap is not None and heatmap.get("png_base64"):
        forms.append({"contentType": "image/png", "data": heatmap["png_base64"],
                      "title": f"Heatmap ({heatmap['method']}) over the image",
                      "creation": issued})
    return forms


def diagnostic_report(analysis: Analysis, issued: datetime | None = None) -> DiagnosticReport:
    """``analysis`` as a validated FHIR R4B DiagnosticReport (status ``preliminary``)."""
    return diagnostic_report_from_dict(analysis.to_dict(), issued)


def diagnostic_report_from_dict(analysis: dict[str, Any], issued: datetime | None = None
                                ) -> DiagnosticReport:
    """The same from ``Analysis.to_dict()`` (as batch drafting stores it)."""
    when = (issued or datetime.now(UTC)).isoformat(timespec="seconds")
    vision = next(m for m in analysis["models"] if m["role"] == "vision")
    report, d, sid = analysis["report"], analysis["diagnosis"], analysis["study_id"]
    notice = " ".join(s["text"] for s in report["sentences"] if s["section"] == "notice")
    in_scope = analysis["in_scope"]
    raw: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": sid if _FHIR_ID.fullmatch(sid) else None,
        "language": "en",
        "contained": [_device(vision), _observation(analysis, when)],
        "identifier": _identifiers(analysis),
        "status": "preliminary", "category": [_RADIOLOGY], "code": _REPORT_CODE,
        "issued": when,
        "result": [{"reference": f"#{OBSERVATION_ID}",
                    "display": "diagnosis probability" if in_scope else "no diagnosis"}],
        "conclusion": " ".join(p for p in (notice, report["impression"]) if p),
        "conclusionCode": [{"text": d["label"]}] if in_scope and d["label"] else None,
        "presentedForm": _presented_form(analysis, when),
    }
    return DiagnosticReport.model_validate({k: v for k, v in raw.items() if v is not None})


def _identifiers(analysis: dict[str, Any]) -> list[dict[str, str]]:
    """The study id, the image's sha256 and, for a DICOM study, its keyed UID hash."""
    out = [{"system": STUDY_SYSTEM, "value": analysis["study_id"]}]
    for system, key in ((IMAGE_SYSTEM, "image_sha256"), (STUDY_UID_SYSTEM, "study_uid_hash")):
        if analysis.get(key):
            out.append({"system": system, "value": str(analysis[key])})
    return out


def diagnostic_report_json(analysis: Analysis | dict[str, Any], issued: datetime | None = None
                           ) -> dict[str, Any]:
    """The DiagnosticReport as FHIR JSON (a plain dict, empty elements left out), from an
    analysis or its ``to_dict()``."""
    resource = diagnostic_report_from_dict(
        analysis if isinstance(analysis, dict) else analysis.to_dict(), issued)
    out: dict[str, Any] = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
    return out

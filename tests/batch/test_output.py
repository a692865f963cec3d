"""Batch output from stored studies: a JSON line per study naming its source, and a
FHIR R4B Bundle (DiagnosticReports and OperationOutcomes) the fhir.resources models
accept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from fhir.resources.R4B.bundle import Bundle

from assistant.batch import output
from assistant.batch.store import StudyRecord
from assistant.fhir import STUDY_SYSTEM
from assistant.pipeline import Pipeline
from assistant.report import Context

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def rows(pipeline: Pipeline, br35h_paths: list[Path]) -> list[output.Drafted]:
    tumour = pipeline.analyze(br35h_paths[0], Context("headache", 61, "male"), "s1")
    _, blank_png = cv2.imencode(".png", np.zeros((64, 64), np.uint8))
    blank = pipeline.analyze(blank_png.tobytes(), study_id="s1")  # same id: two files
    return [
        output.Drafted(0, "a/tumour.jpg", None, StudyRecord(
            "k1", tumour.image_sha256, "done", True, json.dumps(tumour.to_dict()))),
        output.Drafted(1, "blank.png", None, StudyRecord(
            "k2", blank.image_sha256, "done", False, json.dumps(blank.to_dict()))),
        output.Drafted(2, "bad.jpg", "unsupported file format (text)", StudyRecord(
            "k3", "ab" * 32, "failed", error="unsupported file format (text)")),
        output.Drafted(3, "gone.jpg", "no such file", None),
    ]


def test_json_lines(rows: list[output.Drafted], tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out.jsonl"
    output.write(out, rows, "jsonl")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(d["source"], d["status"]) for d in lines] == [
        ("a/tumour.jpg", "done"), ("blank.png", "done"), ("bad.jpg", "failed"),
        ("gone.jpg", "failed")]
    tumour, blank, bad, gone = lines
    assert tumour["error"] is None and tumour["diagnosis"]["label"] == "tumour"
    assert tumour["context"] == {"indication": "headache", "age": 61, "sex": "male"}
    assert blank["in_scope"] is False
    assert bad == {"source": "bad.jpg", "status": "failed",
                   "error": "unsupported file format (text)", "image_sha256": "ab" * 32}
    assert gone["image_sha256"] is None and gone["error"] == "no such file"
    assert not list(out.parent.glob(".*tmp"))  # written whole, then renamed


def test_fhir_bundle(rows: list[output.Drafted], tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    output.write(out, rows, "fhir")
    raw = json.loads(out.read_text())
    bundle = Bundle.model_validate(raw)
    assert bundle.type == "collection" and bundle.entry is not None
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds == ["DiagnosticReport", "DiagnosticReport", "OperationOutcome",
                     "OperationOutcome"]
    full_urls = [e.fullUrl for e in bundle.entry]
    assert len(set(full_urls)) == 4  # unique although both reports are study "s1"
    first = raw["entry"][0]["resource"]
    assert first["status"] == "preliminary" and "subject" not in first
    assert {"system": output.SOURCE_SYSTEM, "value": "a/tumour.jpg"} in first["identifier"]
    assert {"system": STUDY_SYSTEM, "value": "s1"} in first["identifier"]
    assert [f["contentType"] for f in first["presentedForm"]] == [
        "text/plain; charset=utf-8", "image/png"]
    outcome = raw["entry"][3]["resource"]
    assert outcome["issue"][0]["diagnostics"] == "gone.jpg: no such file"


def test_an_empty_bundle_is_valid(tmp_path: Path) -> None:
    output.write(tmp_path / "empty.json", [], "fhir")
    bundle = Bundle.model_validate_json((tmp_path / "empty.json").read_text())
    assert bundle.entry is None
    output.write(tmp_path / "empty.jsonl", [], "jsonl")
    assert (tmp_path / "empty.jsonl").read_text() == ""


def test_issued_is_the_bundle_timestamp(rows: list[output.Drafted]) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    text = "".join(output.fhir_chunks(rows[:1], when))
    raw = json.loads(text)
    assert raw["timestamp"] == "2026-01-02T03:04:05+00:00"
    assert raw["entry"][0]["resource"]["issued"] == "2026-01-02T03:04:05Z"

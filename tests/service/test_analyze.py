"""POST /v1/analyze over HTTP against the running service: real Br35H images, the release
model, the FHIR form, every error status, micro-batched concurrent requests and metrics."""

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import httpx
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import UPLOAD_LIMIT
from tests.service.test_http import _png_claiming

pytestmark = [pytest.mark.data, pytest.mark.slow]

Br35h = Callable[[int], Path]


def _analyze(server: str, content: bytes, name: str = "scan.jpg",
             data: dict[str, str] | None = None, params: dict[str, str] | None = None,
             ) -> httpx.Response:
    return httpx.post(f"{server}/v1/analyze", files={"file": (name, content)}, data=data,
                      params=params, timeout=60)


def _error(response: httpx.Response, status: int, kind: str, words: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind
    assert words.lower() in error["message"].lower()


def test_tumour_jpeg_with_context(server: str, br35h: Br35h) -> None:
    data = br35h(1).read_bytes()
    response = _analyze(server, data, data={"indication": "headache", "age": "61",
                                            "sex": "Male"})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["image_sha256"] == hashlib.sha256(data).hexdigest()
    assert out["in_scope"] is True and out["diagnosis"]["label"] == "tumour"
    assert out["diagnosis"]["probability"] >= out["diagnosis"]["threshold"]
    assert out["context"] == {"indication": "headache", "age": 61, "sex": "male"}
    assert out["draft"] is True and out["report"]["text"].startswith(out["notice"])
    png = base64.b64decode(out["heatmap"]["png_base64"])
    assert png.startswith(b"\x89PNG")
    # No index in this server: no citations, and the note says why.
    assert out["citations"] == [] and "assistant index build" in out["citations_note"]


def test_png_with_json_context(server: str, br35h: Br35h) -> None:
    pixels = cv2.imread(str(br35h(0)), cv2.IMREAD_GRAYSCALE)
    ok, png = cv2.imencode(".png", pixels)
    assert ok
    response = _analyze(server, png.tobytes(), "scan.png",
                        data={"context": json.dumps({"age": 7, "sex": "female"})})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["image"]["format"] == "png" and out["in_scope"] is True
    assert out["diagnosis"]["label"] == "no tumour"
    assert out["context"] == {"indication": None, "age": 7, "sex": "female"}


def test_dicom_ct_is_out_of_scope(server: str, dicom_path: Callable[[str], Path]) -> None:
    response = _analyze(server, dicom_path("CT_small.dcm").read_bytes(), "ct.dcm")
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["in_scope"] is False and out["diagnosis"]["label"] is None
    assert "modality CT" in out["scope_reason"] and out["heatmap"] is None


def test_fhir_diagnostic_report(server: str, br35h: Br35h) -> None:
    data = br35h(1).read_bytes()
    response = _analyze(server, data, params={"format": "fhir"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    raw = response.json()
    report = DiagnosticReport.model_validate(raw)  # valid R4B
    assert report.status == "preliminary"
    assert report.conclusion and "clinician" in report.conclusion
    forms = {form.contentType.split(";")[0]: form for form in report.presentedForm or []}
    assert forms["text/plain"].data.decode().startswith("Draft")
    assert forms["image/png"].data.startswith(b"\x89PNG")
    observation = next(r for r in raw["contained"] if r["resourceType"] == "Observation")
    probability = _analyze(server, data).json()["diagnosis"]["probability"]
    assert observation["valueQuantity"]["value"] == pytest.approx(probability, abs=1e-6)
    assert raw["result"][0]["reference"] == f"#{observation['id']}"


@pytest.mark.parametrize(("fields", "words"), [
    ({"age": "200"}, "between 0 and 130"),
    ({"age": "old"}, "whole number"),
    ({"sex": "x"}, "sex must be one of"),
    ({"context": "{not json"}, "not valid JSON"),
    ({"context": "[1, 2]"}, "JSON object"),
    ({"context": '{"weight": 3}'}, "unknown keys"),
    ({"context": '{"age": 3}', "sex": "female"}, "not both"),
])
def test_bad_context_is_422(server: str, br35h: Br35h, fields: dict[str, str],
                            words: str) -> None:
    _error(_analyze(server, br35h(1).read_bytes(), data=fields), 422, "invalid_context", words)


def test_bad_inputs_map_to_their_status(server: str, dicom_path: Callable[[str], Path]
                                        ) -> None:
    _error(_analyze(server, b"not an image at all\n" * 20, "scan.jpg"), 415,
           "unsupported_format", "supported")
    ct = dicom_path("CT_small.dcm").read_bytes()
    _error(_analyze(server, ct[: len(ct) * 6 // 10], "ct.dcm"), 422, "unreadable_image")
    _error(_analyze(server, dicom_path("test-SR.dcm").read_bytes(), "sr.dcm"), 422,
           "no_pixel_data", "pixel data")
    _error(_analyze(server, _png_claiming(100_000, 100_000), "bomb.png"), 413, "too_large",
           "pixels")
    _error(_analyze(server, b"\xff\xd8\xff" + b"\0" * (UPLOAD_LIMIT + 70_000)), 413,
           "too_large")
    _error(httpx.post(f"{server}/v1/analyze", data={"age": "3"}), 422, "invalid_request",
           "file")
    # a multipart body cut short in its file part: the part is not there, and the message
    # says why it may not be (it said only "Field required")
    head = dicom_path("CT_small.dcm").read_bytes()[:2000]
    body = (b"--BND\r\nContent-Disposition: form-data; name=\"file\"; filename=\"ct.dcm\"\r\n"
            b"Content-Type: application/dicom\r\n\r\n" + head)
    _error(httpx.post(f"{server}/v1/analyze", content=body,
                      headers={"Content-Type": "multipart/form-data; boundary=BND"}),
           422, "invalid_request", "cut short before its closing boundary")
    _error(_analyze(server, ct, params={"format": "xml"}), 422, "invalid_request", "format")
    # two images, or two ages: the last had been used, silently
    two = httpx.post(f"{server}/v1/analyze", files=[("file", ("a.dcm", ct)),
                                                    ("file", ("b.dcm", ct))], timeout=60)
    _error(two, 422, "invalid_request", "given more than once: file (2 times)")
    _error(_analyze(server, ct, "ct.dcm", data={"age": ["45", "46"]}), 422,
           "invalid_request", "age (2 times)")
    _error(httpx.get(f"{server}/v1/analyze"), 405, "method_not_allowed")
    # a misspelt field had been dropped without a word; format twice, the last had won
    _error(_analyze(server, ct, "ct.dcm", data={"indicaton": "headache"}), 422,
           "invalid_request", "unknown form field(s): 'indicaton'")
    _error(_analyze(server, ct, "ct.dcm", params={"format": ["fhir", "json"]}), 422,
           "invalid_request", "format (2 times)")
    # a multipart body whose framing cannot be parsed is unreadable input: 422, as
    # /v1/batches answers it (Starlette's 400 before)
    for ctype in ("multipart/form-data", "multipart/form-data; boundary=XYZ"):
        _error(httpx.post(f"{server}/v1/analyze", content=ct, timeout=60,
                          headers={"Content-Type": ctype}),
               422, "invalid_request", "multipart body could not be read")
    # over the multipart parser's own limits: too large, not unreadable
    _error(_analyze(server, ct, "ct.dcm", data={f"f{i}": "x" for i in range(1001)}), 413,
           "too_large", "too many fields")


def test_concurrent_requests_each_get_their_own_answer(server: str, br35h: Br35h,
                                                       dicom_path: Callable[[str], Path],
                                                       ) -> None:
    """Eight at once share batches; a bad image in a batch fails only its own request."""
    good = [br35h(1).read_bytes(), br35h(0).read_bytes()] * 3
    uploads = [*good, b"plain text, not an image\n" * 8,
               dicom_path("CT_small.dcm").read_bytes()]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(
                client.post(f"{server}/v1/analyze", files={"file": ("f", content)})
                for content in uploads))

    responses = asyncio.run(send_all())
    for content, response in zip(uploads[:6], responses[:6], strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["image_sha256"] == hashlib.sha256(content).hexdigest()
    assert [r.json()["diagnosis"]["label"] for r in responses[:2]] == ["tumour", "no tumour"]
    assert responses[6].status_code == 415
    assert responses[7].status_code == 200 and responses[7].json()["in_scope"] is False
    assert len({r.json()["study_id"] for r in responses if r.status_code == 200}) == 7


def _samples(server: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_move_with_requests(server: str, br35h: Br35h) -> None:
    def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
              **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    before = _samples(server)
    assert _analyze(server, br35h(1).read_bytes()).status_code == 200
    assert _analyze(server, b"nothing to see here\n" * 9).status_code == 415
    assert httpx.get(f"{server}/v1/nope").status_code == 404
    after = _samples(server)

    def moved(name: str, by: float = 1.0, **labels: str) -> bool:
        return value(after, name, **labels) - value(before, name, **labels) == by

    route = {"method": "POST", "route": "/v1/analyze"}
    assert moved("assistant_http_requests_total", **route, status="200")
    assert moved("assistant_http_requests_total", **route, status="415")
    assert moved("assistant_http_request_duration_seconds_count", **route, status="200")
    assert moved("assistant_http_requests_total", method="GET", route="unrouted",
                 status="404")
    assert moved("assistant_analyses_total", outcome="in_scope")
    assert moved("assistant_analyses_total", outcome="rejected")
    runs = value(after, "assistant_model_inference_seconds_count", task="analyze")
    assert runs - value(before, "assistant_model_inference_seconds_count", task="analyze") >= 1
    assert value(after, "assistant_model_inference_seconds_sum", task="analyze") > 0

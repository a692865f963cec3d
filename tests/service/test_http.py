"""The running service over HTTP: health, readiness, image upload and error mapping."""

import struct
import zlib
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from tests.service.conftest import UPLOAD_LIMIT


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _upload(server: str, content: bytes, name: str = "image.png",
            content_type: str = "application/octet-stream") -> httpx.Response:
    return httpx.post(f"{server}/v1/images/inspect",
                      files={"file": (name, content, content_type)}, timeout=30)


def _assert_error(response: httpx.Response, status: int, kind: str, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["type"] == kind
    assert words.lower() in body["error"]["message"].lower()


def test_health_and_readiness(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "alive"}
    ready = httpx.get(f"{server}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_head_is_answered_wherever_get_is(server: str) -> None:
    """Uptime monitors send HEAD: it had been a 405 on every route."""
    for path in ("/healthz", "/readyz", "/metrics", "/", "/v1/search?q=glioma"):
        got, head = httpx.get(f"{server}{path}"), httpx.head(f"{server}{path}")
        assert head.status_code == got.status_code, path
        assert head.content == b"" and head.headers["content-type"] == got.headers[
            "content-type"], path
    assert httpx.head(f"{server}/v1/analyze").status_code == 405  # POST only


def test_png_upload_is_described(server: str) -> None:
    img = np.zeros((40, 60), np.uint8)
    img[10:30, 20:40] = 255
    ok, png = cv2.imencode(".png", img)
    assert ok
    response = _upload(server, png.tobytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["format"], body["width"], body["height"], body["channels"]) == ("png", 60, 40, 1)
    assert body["mean"] == pytest.approx(400 / 2400, abs=1e-6)
    assert "clinician" in body["notice"]


def test_dicom_upload_has_no_patient_data(server: str, dicom_path: object) -> None:
    import pydicom

    path = dicom_path("CT_small.dcm")  # type: ignore[operator]
    assert isinstance(path, Path)
    ds = pydicom.dcmread(path)
    response = _upload(server, path.read_bytes(), "ct.dcm")
    assert response.status_code == 200, response.text
    assert response.json()["modality"] == "CT"
    for value in (str(ds.PatientName), str(ds.PatientID)):
        assert value and value not in response.text


def test_text_renamed_png_is_415(server: str) -> None:
    _assert_error(_upload(server, b"hello, this is not an image\n" * 10, "scan.png", "image/png"),
                  415, "unsupported_format", "supported")


def test_zero_bytes_is_an_error_not_a_crash(server: str) -> None:
    response = _upload(server, b"")
    assert response.status_code in (415, 422), response.text
    assert "error" in response.json()


def test_truncated_dicom_is_422(server: str, dicom_path: object) -> None:
    data = dicom_path("CT_small.dcm").read_bytes()  # type: ignore[operator]
    _assert_error(_upload(server, data[: len(data) * 6 // 10], "ct.dcm"), 422,
                  "unreadable_image", "")


def test_dicom_without_pixels_is_422(server: str, dicom_path: object) -> None:
    data = dicom_path("test-SR.dcm").read_bytes()  # type: ignore[operator]
    _assert_error(_upload(server, data, "sr.dcm"), 422, "no_pixel_data", "pixel data")


def test_pixel_bomb_is_413(server: str) -> None:
    _assert_error(_upload(server, _png_claiming(100_000, 100_000)), 413, "too_large", "pixels")


def test_body_over_the_limit_is_413(server: str) -> None:
    response = _upload(server, b"\x89PNG\r\n\x1a\n" + b"\0" * (UPLOAD_LIMIT + 70_000))
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "too_large"


def test_missing_file_field_is_422_with_a_message(server: str) -> None:
    response = httpx.post(f"{server}/v1/images/inspect", data={"nothing": "here"})
    _assert_error(response, 422, "invalid_request", "file")


def test_unknown_route_is_json_404(server: str) -> None:
    _assert_error(httpx.get(f"{server}/v1/nope"), 404, "not_found", "not found")


def test_chunked_body_over_the_limit_is_413(server: str) -> None:
    def chunks() -> object:
        # A well-formed multipart head, then a file part that never ends in time.
        yield (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
               b"Content-Type: application/octet-stream\r\n\r\n")
        for _ in range(40):
            yield b"\0" * 10_000

    response = httpx.post(f"{server}/v1/images/inspect", content=chunks(),  # type: ignore[arg-type]
                          headers={"content-type": "multipart/form-data; boundary=x"}, timeout=30)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "too_large"

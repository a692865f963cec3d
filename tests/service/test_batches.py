"""/v1/batches over HTTP against the running service (uvicorn in a subprocess, the release
model, real Br35H images): zip uploads, allowed and refused server folders, progress,
results as JSON lines, a JSON list and a FHIR Bundle, every refusal's status, and a job
that survives the service being killed (kill -9) in the middle of it."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle

from tests.conftest import MakeFolder
from tests.service.conftest import PROCESSES, run_server

pytestmark = [pytest.mark.data, pytest.mark.slow]

JOB_TIMEOUT_S = 180
MAX_ZIP_BYTES, MAX_UNPACKED, MAX_MEMBERS, MAX_FILES = 2_000_000, 5_000_000, 50, 45


def _env(folder: Path) -> dict[str, str]:
    return {"ASSISTANT_INDEX_DIR": str(folder / "no-index"),
            "ASSISTANT_SERVICE__REQUIRE_INDEX": "false",
            "ASSISTANT_BATCH__DB_PATH": str(folder / "batches.sqlite3"),
            "ASSISTANT_BATCH__UPLOAD_DIR": str(folder / "uploads"),
            "ASSISTANT_BATCH__ALLOWED_ROOTS": json.dumps([str(folder / "allowed")]),
            "ASSISTANT_BATCH__MAX_ZIP_BYTES": str(MAX_ZIP_BYTES),
            "ASSISTANT_BATCH__MAX_ZIP_UNCOMPRESSED_BYTES": str(MAX_UNPACKED),
            "ASSISTANT_BATCH__MAX_ZIP_MEMBERS": str(MAX_MEMBERS),
            "ASSISTANT_BATCH__MAX_FILES": str(MAX_FILES),
            "ASSISTANT_BATCH__BATCH_SIZE": "4"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, make_folder: MakeFolder) -> Path:
    root = tmp_path_factory.mktemp("batches")
    make_folder(root / "allowed" / "studies", 6)
    make_folder(root / "outside", 2)
    (root / "allowed" / "escape").symlink_to(root / "outside", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[str]:
    with run_server(folder, _env(folder)) as base:
        yield base


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _studies(paths: list[Path]) -> dict[str, bytes]:
    return {f"scans/{p.name}": p.read_bytes() for p in paths}


def _wait_done(server: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        progress = httpx.get(f"{server}/v1/batches/{job_id}", timeout=10)
        assert progress.status_code == 200, progress.text
        body: dict[str, Any] = progress.json()
        if body["state"] in ("done", "failed"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def _results(server: str, job_id: str, fmt: str = "jsonl") -> httpx.Response:
    return httpx.get(f"{server}/v1/batches/{job_id}/results", params={"format": fmt},
                     timeout=60)


def _error(response: httpx.Response, status: int, kind: str, words: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind and words.lower() in error["message"].lower()


def test_zip_upload_progress_and_results(server: str, folder: Path,
                                         br35h_paths: list[Path]) -> None:
    entries = {**_studies(br35h_paths[:7]), "scans/bad.jpg": b"\xff\xd8\xff broken",
               "notes.txt": b"not a study", "__MACOSX/scans/._x.jpg": b"junk"}
    response = httpx.post(f"{server}/v1/batches",
                          files={"file": ("studies.zip", _zip(entries), "application/zip")},
                          timeout=60)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/batches/{job['id']}"
    assert job["total"] == 8 and job["origin"] == "upload"
    done = _wait_done(server, job["id"])
    assert done["state"] == "done"
    assert {k: done[k] for k in ("total", "pending", "done", "skipped", "failed")} == {
        "total": 8, "pending": 0, "done": 7, "skipped": 0, "failed": 1}
    lines = [json.loads(x) for x in _results(server, job["id"]).text.splitlines()]
    assert [x["source"] for x in lines] == sorted(e for e in entries if e.startswith("scans/"))
    assert lines[0]["source"] == "scans/bad.jpg" and lines[0]["status"] == "failed"
    assert all(x["status"] == "done" and x["draft"] is True for x in lines[1:])
    listed = _results(server, job["id"], "json")
    assert listed.headers["x-batch-state"] == "done"
    assert [x["source"] for x in listed.json()] == [x["source"] for x in lines]
    bundle = _results(server, job["id"], "fhir")
    assert bundle.headers["content-type"].startswith("application/fhir+json")
    entry = Bundle.model_validate(bundle.json()).entry
    assert entry is not None and len(entry) == 8
    assert not (folder / "uploads" / job["id"]).exists()  # unpacked files removed


def test_raw_zip_body(server: str, br35h_paths: list[Path]) -> None:
    response = httpx.post(f"{server}/v1/batches", content=_zip(_studies(br35h_paths[7:9])),
                          headers={"content-type": "application/zip"}, timeout=60)
    assert response.status_code == 202, response.text
    assert _wait_done(server, response.json()["id"])["done"] == 2


def test_allowed_folder_then_again_from_the_store(server: str, folder: Path) -> None:
    body = {"folder": str(folder / "allowed")}
    first = httpx.post(f"{server}/v1/batches", json=body, timeout=60)
    assert first.status_code == 202, first.text
    done = _wait_done(server, first.json()["id"])
    # 6 studies; the 2 behind the link to a folder outside are not followed.
    assert (done["total"], done["done"] + done["skipped"], done["failed"]) == (6, 6, 0)
    second = httpx.post(f"{server}/v1/batches", json=body, timeout=60)
    again = _wait_done(server, second.json()["id"])
    assert (again["done"], again["skipped"]) == (0, 6)
    sources = [json.loads(x)["source"] for x in
               _results(server, second.json()["id"]).text.splitlines()]
    assert len(sources) == 6 and all(s.startswith("studies/") for s in sources)


@pytest.mark.parametrize(("body", "status", "kind", "words"), [
    ({"folder": "/etc"}, 403, "forbidden", "outside"),
    ({"folder": "ESCAPE"}, 403, "forbidden", "outside"),
    ({"folder": "relative/path"}, 422, "invalid_batch", "absolute"),
    ({"folder": "MISSING"}, 422, "invalid_batch", "does not exist"),
    ({"folder": "/x", "extra": 1}, 422, "invalid_batch", "extra"),
    ({"path": "/x"}, 422, "invalid_batch", "folder"),
])
def test_folders_refused(server: str, folder: Path, body: dict[str, Any], status: int,
                         kind: str, words: str) -> None:
    named = {"ESCAPE": str(folder / "allowed" / "escape"),
             "MISSING": str(folder / "allowed" / "missing")}
    body = {k: named.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    _error(httpx.post(f"{server}/v1/batches", json=body, timeout=30), status, kind, words)


def test_bad_uploads_get_clear_statuses(server: str, br35h_paths: list[Path]) -> None:
    def post(content: bytes, ctype: str = "application/zip") -> httpx.Response:
        return httpx.post(f"{server}/v1/batches", content=content,
                          headers={"content-type": ctype}, timeout=60)

    image = br35h_paths[0].read_bytes()
    _error(post(image), 415, "unsupported_format", "not a zip")
    _error(post(b"PK\x03\x04 truncated"), 422, "invalid_batch", "cannot be read")
    _error(post(_zip({"notes.txt": b"x"})), 422, "invalid_batch", "no PNG, JPEG or DICOM")
    _error(post(_zip({"bomb.png": b"\x00" * (MAX_UNPACKED + 1)})), 413, "too_large", "unpacks")
    _error(post(_zip({f"{i}.jpg": image for i in range(MAX_MEMBERS + 1)})), 413, "too_large",
           "entries")
    _error(post(_zip({f"{i}.jpg": image for i in range(MAX_FILES + 1)})), 413, "too_large",
           "studies")
    _error(post(os.urandom(MAX_ZIP_BYTES + 100_000)), 413, "too_large", "limit")
    _error(post(b"x", "text/plain"), 415, "unsupported_format", "zip")
    _error(httpx.post(f"{server}/v1/batches", files={"other": ("a.zip", b"PK")}, timeout=30),
           422, "invalid_batch", "'file'")
    _error(post(b"{not json", "application/json"), 422, "invalid_batch", "folder")
    # a byte-order mark before the JSON is read past (it had been "Invalid JSON"): the
    # folder is then refused for what it is, not for the mark
    _error(post(b'\xef\xbb\xbf{"folder": "/nowhere/at/all"}', "application/json"), 403,
           "forbidden")
    # malformed multipart: Starlette's 400s ("Too many files", "Missing boundary"), now 422s
    # that say what was wrong, as /v1/analyze answers them
    small = _zip(_studies(br35h_paths[:1]))
    _error(httpx.post(f"{server}/v1/batches", files=[("file", ("a.zip", small)),
                                                     ("file", ("b.zip", small))], timeout=30),
           422, "invalid_batch", "file (2 times)")
    _error(post(b"--x\r\n", "multipart/form-data"), 422, "invalid_batch", "boundary")
    cut = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n'
           b"Content-Type: application/zip\r\n\r\n" + small[:100])
    _error(post(cut, "multipart/form-data; boundary=B"), 422, "invalid_batch",
           "none came complete")
    for path in ("/v1/batches/0123456789abcdef0123456789abcdef", "/v1/batches/..%2Fx",
                 "/v1/batches/nope/results"):
        _error(httpx.get(f"{server}{path}", timeout=10), 404, "not_found")


def _stored(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM studies WHERE status = 'done'")
                   .fetchone()[0])


def test_a_job_survives_kill_9_of_the_service(tmp_path: Path,
                                              br35h_paths: list[Path]) -> None:
    n = 30
    entries = _studies(br35h_paths[:n])
    with run_server(tmp_path, _env(tmp_path)) as first:
        response = httpx.post(f"{first}/v1/batches", files={"file": ("s.zip", _zip(entries))},
                              timeout=60)
        assert response.status_code == 202, response.text
        PROCESSES[first].send_signal(signal.SIGKILL)
        PROCESSES[first].wait(timeout=30)
    job_id = response.json()["id"]
    before = _stored(tmp_path / "batches.sqlite3")
    assert before < n, "the job finished before the service was killed"
    leftover = tmp_path / "uploads" / ("f" * 32)  # as if killed while unpacking
    leftover.mkdir()
    with run_server(tmp_path, _env(tmp_path)) as second:
        assert not leftover.exists()
        done = _wait_done(second, job_id)
        assert done["state"] == "done" and done["total"] == n and done["failed"] == 0
        assert done["done"] + done["skipped"] == n
        sources = [json.loads(x)["source"] for x in _results(second, job_id).text.splitlines()]
    assert sorted(sources) == sorted(entries) and len(sources) == len(set(sources)) == n
    assert _stored(tmp_path / "batches.sqlite3") == n
    assert not (tmp_path / "uploads" / job_id).exists()

"""Patient data from DICOM headers never leaves the reader: DICOMs carrying distinctive fake
PHI go through every path that reads an image (``/v1/analyze`` as JSON and FHIR,
``/v1/images/inspect``, chat with an image, ``/v1/batches``, ``assistant analyze`` and
``assistant draft``), and then every response, the service's log, the audit log and every
file the service and the commands wrote (SQLite stores with their WAL files included) are
searched for those strings: none may appear. Stored studies carry the keyed hash of the
StudyInstanceUID instead."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.conftest import data_dir
from tests.service.conftest import run_server

STUDY_UID = "1.2.826.0.1.3680043.8.498.77771234567890"
PHI = {
    "PatientName": "Zorblaxova^Quentina^Mirabel",
    "PatientID": "PHI-ID-7734921",
    "PatientBirthDate": "19230417",
    "PatientAddress": "42 Wallabyish Way",
    "InstitutionName": "Xylophant General Hospital",
    "ReferringPhysicianName": "Drqwertyson^Fizzbin",
    "AccessionNumber": "ACC99887766",
    "StudyID": "STUDYZ42Q",
    "StudyDescription": "Quentina follow-up scan",
    "ImageComments": "scanned for Zorblaxova",
    "OtherPatientIDs": "OTHERID55321",
    "StudyInstanceUID": STUDY_UID,
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.77779999111",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.77778888222",
}
PRIVATE = "QZPRIVATEVALUE123"
NEEDLES = sorted({*(v for k, v in PHI.items() if k != "PatientName"), "Zorblaxova",
                  "Quentina", "Mirabel", "Wallabyish", "Xylophant", "Drqwertyson",
                  "Fizzbin", "1923-04-17", PRIVATE, "77771234567890"})
SOURCES = ("MR_small.dcm", "CT_small.dcm", "MR_small_jp2klossless.dcm")


def with_phi(source: Path) -> bytes:
    ds = pydicom.dcmread(source)
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = PHI["SOPInstanceUID"]
    block = ds.private_block(0x0011, "QZ PRIVATE", create=True)
    block.add_new(0x10, "LO", PRIVATE)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def found(blob: bytes | str) -> list[str]:
    text = blob if isinstance(blob, str) else blob.decode("utf-8", "replace")
    lowered = text.lower()
    return [needle for needle in NEEDLES if needle.lower() in lowered]


@pytest.fixture(scope="module")
def phi_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("phi-dicoms")
    paths = []
    for name in SOURCES:
        path = folder / name  # file names carry no PHI: the headers do
        path.write_bytes(with_phi(data_dir() / "dicom" / name))
        paths.append(path)
    assert all(PHI["PatientID"].encode() in p.read_bytes() for p in paths)
    return paths


@pytest.fixture(scope="module")
def phi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("phi-server")
    env = {"ASSISTANT_INDEX_DIR": str(folder / "no-index"),
           "ASSISTANT_SERVICE__REQUIRE_INDEX": "false",
           "ASSISTANT_BATCH__DB_PATH": str(folder / "batches.sqlite3"),
           "ASSISTANT_BATCH__UPLOAD_DIR": str(folder / "batch-uploads"),
           "ASSISTANT_LOG_LEVEL": "DEBUG"}
    with run_server(folder, env) as base:
        yield base, folder


def _chat(base: str, data: bytes) -> httpx.Response:
    url = "data:application/dicom;base64," + base64.b64encode(data).decode()
    body = {"model": "medical-imaging-assistant", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Is there a tumour in this study?"},
        {"type": "image_url", "image_url": {"url": url}}]}]}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)


def _batch(base: str, paths: list[Path]) -> list[httpx.Response]:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths:
            zf.writestr(path.name, path.read_bytes())
    created = httpx.post(f"{base}/v1/batches", files={"file": ("studies.zip",
                                                                archive.getvalue())})
    assert created.status_code == 202, created.text
    job = created.json()["id"] if "id" in created.json() else created.json()["job_id"]
    deadline = time.monotonic() + 120
    while httpx.get(f"{base}/v1/batches/{job}").json()["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, "the batch did not finish"
        time.sleep(0.3)
    return [created, *(httpx.get(f"{base}/v1/batches/{job}/results", params={"format": f})
                       for f in ("jsonl", "fhir"))]


@pytest.mark.slow
def test_no_phi_anywhere(phi_server: tuple[str, Path], phi_files: list[Path],
                         tmp_path: Path) -> None:
    base, folder = phi_server
    responses: list[httpx.Response] = []
    hashes = set()
    for path in phi_files:
        data = path.read_bytes()
        upload = {"file": (path.name, data, "application/dicom")}
        analysed = httpx.post(f"{base}/v1/analyze", files=upload, timeout=120)
        assert analysed.status_code == 200, analysed.text
        hashes.add(analysed.json()["study_uid_hash"])
        responses += [analysed,
                      httpx.post(f"{base}/v1/analyze", params={"format": "fhir"},
                                 files=upload, timeout=120),
                      httpx.post(f"{base}/v1/images/inspect", files=upload),
                      _chat(base, data)]
    responses += _batch(base, phi_files)
    # a query a clinician typed is free text: the service's log keeps the route, not it
    httpx.get(f"{base}/v1/search", params={"q": f"{PHI['PatientID']} glioma"}, timeout=60)
    assert all(r.status_code in (200, 202) for r in responses), [
        (r.url, r.status_code) for r in responses if r.status_code not in (200, 202)]
    # One study UID in all three files: one keyed hash, not the UID.
    assert len(hashes) == 1 and next(iter(hashes)).startswith("hmac-sha256:")

    commands = _run_commands(phi_files, folder, tmp_path)
    leaks = {str(r.url): found(r.text) for r in responses if found(r.text)}
    leaks |= {name: found(text) for name, text in commands.items() if found(text)}
    written = [p for root in (folder, tmp_path) for p in root.rglob("*")
               if p.is_file() and "phi-dicoms" not in str(p)]
    assert any(p.name.startswith("chat.sqlite3") for p in written)
    assert any(p.name.startswith("batches.sqlite3") for p in written)
    leaks |= {str(p): found(p.read_bytes()) for p in written if found(p.read_bytes())}
    assert not leaks, f"PHI found: {leaks}"
    audit = [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()]
    assert {r["study_uid_hash"] for r in audit if r["action"] == "analyze"} == hashes
    assert all(r["models"] for r in audit if r["action"] == "analyze")


def _run_commands(paths: list[Path], folder: Path, tmp_path: Path) -> dict[str, str]:
    """``assistant analyze`` and ``assistant draft`` on the same files: their stdout and
    stderr (the files they write are under ``tmp_path``)."""
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(data_dir()),
           "ASSISTANT_INDEX_DIR": str(tmp_path / "no-index"),
           "ASSISTANT_BATCH__DB_PATH": str(tmp_path / "batches.sqlite3"),
           "ASSISTANT_SECURITY__STUDY_HASH_KEY_FILE": str(folder / "study-hash.key"),
           "ASSISTANT_LOG_LEVEL": "DEBUG", "HF_HUB_OFFLINE": "1"}
    runs = {"analyze": [sys.executable, "-m", "assistant", "analyze", str(paths[0])]}
    for fmt in ("jsonl", "fhir"):
        runs[f"draft-{fmt}"] = [sys.executable, "-m", "assistant", "draft",
                                str(paths[0].parent), "--out", str(tmp_path / f"out.{fmt}"),
                                "--format", fmt, "--quiet"]
    out = {}
    for name, command in runs.items():
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        out[name] = done.stdout + done.stderr
    analysed = json.loads(out["analyze"][out["analyze"].index("{"):out["analyze"].rindex("}")
                                         + 1])
    assert analysed["study_uid_hash"].startswith("hmac-sha256:")
    return out


def test_reader_returns_a_deidentified_dataset(phi_files: list[Path]) -> None:
    from assistant.config import Limits
    from assistant.imaging import _dicom, read_image

    for path in phi_files:
        data = path.read_bytes()
        frame = _dicom.read_frame(data, Limits())
        assert frame.study_uid == STUDY_UID
        dumped = str(frame.dataset) + str(frame.dataset.file_meta)
        assert not found(dumped), found(dumped)
        assert "DICOGNITO" in str(frame.dataset.get("DeidentificationMethod"))
        original = read_image(data_dir() / "dicom" / path.name)
        assert (read_image(data).pixels == original.pixels).all()  # pixels untouched
        assert isinstance(frame.dataset, Dataset)

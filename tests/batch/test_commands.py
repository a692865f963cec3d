"""``assistant draft`` run as a user runs it (a subprocess, the release model, real Br35H
images): a folder to JSON lines, a CSV manifest with context to a FHIR Bundle, and after
``kill -9`` in the middle of a batch, the same command again: nothing lost, nothing twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from tests.conftest import MakeFolder

pytestmark = [pytest.mark.data, pytest.mark.slow]

TIMEOUT_S = 300


def _draft(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assistant", "draft", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_to_json_lines(tmp_path: Path, make_folder: MakeFolder,
                              cli_env: dict[str, str]) -> None:
    copies = make_folder(tmp_path / "in", 10)
    (tmp_path / "in" / "sub" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "in" / "README.txt").write_text("not a study")
    out, db = tmp_path / "out.jsonl", tmp_path / "batch.sqlite3"
    result = _draft(cli_env, tmp_path / "in", "--out", out, "--db", db, "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    assert ("11 studies: 10 drafted, 0 skipped (drafted before, or a copy of another file), "
            "1 failed" in result.stdout)
    assert "1 other files left out" in result.stdout
    assert "study/s" in result.stderr and "11/11" in result.stderr  # the progress bar
    lines = _lines(out)
    expected = sorted([p.relative_to(tmp_path / "in").as_posix() for p in copies]
                      + ["sub/bad.png"])
    assert [line["source"] for line in lines] == expected
    by_source = {line["source"]: line for line in lines}
    bad = by_source.pop("sub/bad.png")
    assert bad["status"] == "failed" and "PNG" in str(bad["error"])
    for line in by_source.values():
        assert line["status"] == "done" and line["error"] is None
        assert line["draft"] is True and line["diagnosis"]["label"] in ("tumour", "no tumour")  # type: ignore[index]
        assert "citations_note" in line
    again = _draft(cli_env, tmp_path / "in", "--out", out, "--db", db)
    assert again.returncode == 0, again.stderr
    assert "0 drafted, 10 skipped" in again.stdout and "1 failed" in again.stdout
    assert [line["source"] for line in _lines(out)] == expected


def test_manifest_to_fhir_bundle(tmp_path: Path, make_folder: MakeFolder,
                                 cli_env: dict[str, str]) -> None:
    a, b = make_folder(tmp_path / "imgs", 2)
    manifest = tmp_path / "lists" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,indication,age,sex\n"
                        f"../imgs/{a.name},headache,61,male\n"
                        f"{b},,,\n"
                        "../imgs/missing.jpg,,,\n"
                        f"../imgs/{a.name},,200,\n")
    out = tmp_path / "bundle.json"
    result = _draft(cli_env, manifest, "--out", out, "--format", "fhir", "-q")
    assert result.returncode == 0, result.stderr
    assert "4 studies: 2 drafted, 0 skipped" in result.stdout and "2 failed" in result.stdout
    raw = json.loads(out.read_text())
    bundle = Bundle.model_validate(raw)
    assert bundle.entry is not None and len(bundle.entry) == 4
    first = raw["entry"][0]["resource"]
    assert first["resourceType"] == "DiagnosticReport"
    assert {"system": "urn:medical-imaging-assistant:source-file",
            "value": f"../imgs/{a.name}"} in first["identifier"]
    assert [e["resource"]["resourceType"] for e in raw["entry"][2:]] == [
        "OperationOutcome", "OperationOutcome"]
    assert "no such file" in raw["entry"][2]["resource"]["issue"][0]["diagnostics"]
    assert "age" in raw["entry"][3]["resource"]["issue"][0]["diagnostics"]
    assert Path(cli_env["ASSISTANT_BATCH__DB_PATH"]).is_file()  # the default store


def _stored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM studies WHERE status = 'done'")
                       .fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


def test_kill_9_mid_batch_then_rerun_loses_nothing_and_repeats_nothing(
        tmp_path: Path, make_folder: MakeFolder, cli_env: dict[str, str]) -> None:
    n = 40
    copies = make_folder(tmp_path / "in", n)
    out, db = tmp_path / "out.jsonl", tmp_path / "batch.sqlite3"
    args = [sys.executable, "-m", "assistant", "draft", str(tmp_path / "in"), "--out",
            str(out), "--db", str(db), "--batch-size", "2", "--workers", "1", "-q"]
    proc = subprocess.Popen(args, env=cli_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT_S
    while _stored(db) < 6:
        assert proc.poll() is None, "the batch ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    before = _stored(db)
    assert 6 <= before < n, "killed in the middle"
    assert not out.exists()  # the output is written at the end, whole

    result = _draft(cli_env, tmp_path / "in", "--out", out, "--db", db, "-q")
    assert result.returncode == 0, result.stderr
    assert f"{n} studies: {n - before} drafted, {before} skipped" in result.stdout
    sources = [line["source"] for line in _lines(out)]
    expected = sorted(p.relative_to(tmp_path / "in").as_posix() for p in copies)
    assert sorted(sources) == expected  # none lost
    assert len(sources) == len(set(sources)) == n  # none twice
    assert _stored(db) == n
    assert all(line["status"] == "done" for line in _lines(out))


def test_an_output_that_cannot_be_written_is_refused_first(tmp_path: Path) -> None:
    from assistant.batch.commands import DraftOptions, run_draft
    from assistant.batch.errors import BatchInputError
    from assistant.config import Settings

    (tmp_path / "in").mkdir()
    (tmp_path / "file").write_text("x")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n")
    (tmp_path / "store.db").write_bytes(b"")  # an existing store, named as the output too
    read_only = tmp_path / "read-only.jsonl"
    read_only.write_text("kept")
    read_only.chmod(0o444)
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for source, out, words in (
            (tmp_path / "in", tmp_path, "is a folder"),
            (tmp_path / "in", tmp_path / "file" / "o.jsonl", "cannot write"),
            (tmp_path / "in", Path("/dev/null"), "not a regular file"),
            (tmp_path / "in", fifo, "not a regular file"),
            (tmp_path / "in", read_only, "read-only"),
            (manifest, manifest, "is the input manifest"),
            (tmp_path / "in", tmp_path / "store.db", "is the --db store"),
            (tmp_path / "in", tmp_path / ("x" * 251 + ".jsonl"), "cannot write")):
        db = tmp_path / ("store.db" if out.name == "store.db" else "s.db")
        with pytest.raises(BatchInputError, match=words):
            run_draft(Settings(), source, DraftOptions(out, db=db))
    assert not (tmp_path / "s.db").exists()
    assert read_only.read_text() == "kept" and manifest.read_text() == "path\n"
    assert Path("/dev/null").is_char_device() and fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_output_link_writes_its_target_and_stays_a_link(tmp_path: Path) -> None:
    from assistant.batch.commands import DraftOptions, run_draft
    from assistant.config import Settings

    (tmp_path / "in").mkdir()
    target = tmp_path / "runs" / "today.jsonl"
    target.parent.mkdir()
    link = tmp_path / "latest.jsonl"
    link.symlink_to(target)
    run_draft(Settings(), tmp_path / "in", DraftOptions(link, db=tmp_path / "s.db",
                                                         progress=False))
    assert link.is_symlink() and target.is_file() and target.read_text() == ""

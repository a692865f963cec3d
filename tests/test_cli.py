"""The `assistant` command, run as a user would run it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SUBCOMMANDS = ("serve", "analyze", "search", "draft", "train", "eval", "index", "data")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_help_lists_every_subcommand() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    for name in SUBCOMMANDS:
        assert name in result.stdout


def test_venv_entry_point_exists() -> None:
    script = Path(sys.executable).parent / "assistant"
    assert script.exists(), "the project's venv must provide the `assistant` command"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0 and "data" in result.stdout


def test_draft_of_a_missing_input_fails_clearly(tmp_path: Path) -> None:
    result = _run("draft", str(tmp_path / "studies"), "--out", str(tmp_path / "r.jsonl"))
    assert result.returncode == 2
    assert "studies does not exist" in result.stderr
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize(("option", "message"), [
    (("--antialias", "-0.5"), "antialias must be in [0, 4]"),
    (("--restored-copies", "-1"), "restored-copies must be 0 or more"),
    (("--crop-work-side", "4"), "crop-work-side must be 0 or at least 8"),
])
def test_train_vision_refuses_a_bad_recipe_before_loading_data(tmp_path: Path,
                                                               option: tuple[str, str],
                                                               message: str) -> None:
    out = tmp_path / "v.pt"
    result = _run("train", "vision", *option, "--out", str(out))
    assert result.returncode == 2 and message in result.stderr
    assert not out.exists()


@pytest.mark.data
def test_second_data_fetch_downloads_nothing() -> None:
    result = _run("data", "fetch", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "fetched: nothing (all up to date)" in result.stdout


@pytest.mark.data
def test_inspect_prints_metadata_without_patient_data(dicom_path: object) -> None:
    import pydicom

    path = dicom_path("MR_small.dcm")  # type: ignore[operator]
    result = _run("inspect", str(path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["modality"] == "MR" and out["shape"] == [64, 64]
    ds = pydicom.dcmread(path)
    assert str(ds.PatientName) not in result.stdout


def test_inspect_reports_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    result = _run("inspect", str(bad))
    assert result.returncode == 1
    assert "error:" in result.stderr


def _png(side: int = 40) -> bytes:
    import cv2
    import numpy as np

    pixels = np.tile(np.arange(side, dtype=np.uint8) * 5, (side, 1))
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


def test_inspect_reads_standard_input_and_pipes(tmp_path: Path) -> None:
    """``inspect -`` reads standard input; ``inspect <(cat scan.png)`` reads the pipe the
    shell passes as /dev/fd/N (before, "not a regular file")."""
    import os
    import threading

    png = _png()
    piped = subprocess.run([sys.executable, "-m", "assistant", "inspect", "-"], input=png,
                           capture_output=True, timeout=120, check=False)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["shape"] == [40, 40]
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as out:
            out.write(png)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        result = subprocess.run([sys.executable, "-m", "assistant", "inspect",
                                 f"/dev/fd/{read_end}"], pass_fds=(read_end,),
                                capture_output=True, timeout=120, check=False)
    finally:
        writer.join()
        os.close(read_end)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(piped.stdout)
    too_big = subprocess.run([sys.executable, "-m", "assistant", "inspect", "-"],
                             input=png, capture_output=True, timeout=120, check=False,
                             env={**os.environ, "ASSISTANT_LIMITS__MAX_UPLOAD_BYTES": "100"})
    assert too_big.returncode == 1
    assert b"standard input holds more than 100 bytes; the limit is 100" in too_big.stderr


def test_image_arguments_a_probe_found_wrong(tmp_path: Path) -> None:
    """./- is a file named "-"; a standard input left non-blocking is waited on; a closed
    one is named so; an upload limit of a terabyte reads a small file (it allocated the
    limit, a MemoryError)."""
    import fcntl
    import os
    import threading
    import time

    png = _png()
    (tmp_path / "-").write_bytes(png)
    command = [sys.executable, "-m", "assistant", "inspect"]
    named = subprocess.run([*command, "./-"], input=b"not an image", cwd=tmp_path,
                           capture_output=True, timeout=120, check=False)
    assert named.returncode == 0 and json.loads(named.stdout)["shape"] == [40, 40], named.stderr
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETFL, fcntl.fcntl(read_end, fcntl.F_GETFL) | os.O_NONBLOCK)

    def feed() -> None:
        time.sleep(2)  # after the command has started reading
        with os.fdopen(write_end, "wb") as out:
            out.write(png)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        waited = subprocess.run([*command, "-"], stdin=read_end, capture_output=True,
                                timeout=120, check=False)
    finally:
        writer.join()
        os.close(read_end)
    assert waited.returncode == 0, waited.stderr
    closed = subprocess.run(["bash", "-c", '"$0" -m assistant inspect - <&-', sys.executable],
                            capture_output=True, timeout=120, check=False)
    assert closed.returncode == 1 and b"standard input is closed" in closed.stderr
    huge = subprocess.run([*command, str(tmp_path / "-")], capture_output=True, timeout=120,
                          check=False, env={**os.environ,
                                            "ASSISTANT_LIMITS__MAX_UPLOAD_BYTES": str(2**40)})
    assert huge.returncode == 0, huge.stderr[-300:]


def _run_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, **env})


@pytest.mark.parametrize(("env", "words"), [
    ({"ASSISTANT_SERVICE__PORT": "70000"}, "ASSISTANT_SERVICE__PORT: "),
    ({"ASSISTANT_LIMITS__MAX_UPLOAD_BYTES": "abc"}, "ASSISTANT_LIMITS__MAX_UPLOAD_BYTES: "),
    ({"ASSISTANT_LOG_LEVEL": "LOUD"}, "ASSISTANT_LOG_LEVEL: "),
    ({"ASSISTANT_BATCH__ALLOWED_ROOTS": "not json"}, "take JSON"),
])
def test_a_bad_setting_is_one_line_naming_the_variable(env: dict[str, str],
                                                       words: str) -> None:
    result = _run_env(env, "data", "list")
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid settings") and words in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_user_errors_are_one_line_not_tracebacks(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    cases = [
        ({}, ("inspect", str(fifo)), 1, "nothing was written to it"),  # no wait for a writer
        ({}, ("analyze", str(fifo), "--no-citations"), 1, "nothing was written to it"),
        ({"ASSISTANT_VISION_CHECKPOINT": str(tmp_path / "none.pt")},
         ("analyze", str(tmp_path / "scan.jpg"), "--no-citations"), 1, "vision checkpoint"),
        ({}, ("search", "!!! ???"), 2, "no letters or digits"),
        ({}, ("search", "glioma", "-k", "1001"), 2, "1000"),
        ({}, ("search", "glioma", "--year-from", "2020", "--year-to", "2010"), 2, "after"),
        ({}, ("train", "report", "--epochs", "0", "--out", str(tmp_path / "r.pt")), 2,
         "epochs must be at least 1"),
    ]
    for env, args, code, words in cases:
        result = _run_env(env, *args)
        assert result.returncode == code, (args, result.stderr[-500:])
        assert words in result.stderr and "Traceback" not in result.stderr, args
    assert not (tmp_path / "r.pt").exists()


def test_version_alone() -> None:
    result = _run("--version")
    from assistant import __version__

    assert result.returncode == 0 and result.stdout.strip() == __version__


def test_serve_on_a_port_in_use_fails_at_once_in_one_line() -> None:
    """The port is bound before the app and its models load: a port in use is one line and
    exit 1 within the command's start-up, not uvicorn's exit 3 after the loading began."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (f"error: cannot listen on 127.0.0.1:{port}: "
                                      "Address already in use")
    assert "Waiting for application startup" not in result.stderr


def test_data_list_says_when_fetched_files_are_gone(tmp_path: Path) -> None:
    """`data list` reads the disk, not only the manifest: a fetched source whose files were
    deleted says how many are missing and how to fetch them again."""
    from assistant.data.manifest import Manifest, SourceRecord

    (tmp_path / "hpo").mkdir()
    (tmp_path / "hpo" / "kept.json").write_text("{}")
    files = {"hpo/kept.json": "0" * 64, "hpo/gone.json": "1" * 64, "hpo/also-gone.json": "2" * 64}
    Manifest({"hpo": SourceRecord("pkg", "1", "0" * 64, "CC0", files=files)}).save(tmp_path)
    result = _run_env({"ASSISTANT_DATA_DIR": str(tmp_path)}, "data", "list")
    assert result.returncode == 0, result.stderr
    hpo = next(line for line in result.stdout.splitlines() if line.startswith("hpo "))
    assert hpo.endswith("3 files, 2 missing: run `assistant data fetch --only hpo`")
    medline = next(line for line in result.stdout.splitlines() if line.startswith("medline "))
    assert medline.endswith("not fetched")


def test_the_early_socket_listens_so_a_second_serve_cannot_take_the_port() -> None:
    """A socket only bound (SO_REUSEADDR) does not keep a second one off its port on Linux:
    two `serve` started together both got past the early check. It listens at once now."""
    import errno

    from assistant.cli import _listening_sockets

    (first,) = _listening_sockets("127.0.0.1", 0)
    with first, pytest.raises(OSError) as caught:
        _listening_sockets("127.0.0.1", first.getsockname()[1])
    assert caught.value.errno == errno.EADDRINUSE

"""Real services, each started with uvicorn in a subprocess on a free loopback port.

- ``server``: no literature index (an empty index folder) and the index not required, so
  it is ready once the vision model has loaded; a small upload limit;
- ``limited_server``: the index required but missing (never ready) and a low request rate;
- ``indexed_server``: a small real index (200 MEDLINE passages, real MiniLM) built once.
"""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from assistant.config import Settings
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest
from tests.conftest import data_dir

# Small enough that the 413 tests need no large payloads.
UPLOAD_LIMIT = 300_000
RATE_PER_MINUTE, RATE_BURST = 6, 3
START_TIMEOUT_S = 120
# The process of each running server, by base URL: for tests that kill one (kill -9).
PROCESSES: dict[str, subprocess.Popen[bytes]] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settled(base: str) -> bool:
    """Ready, or done loading and not ready (a component unavailable)."""
    response = httpx.get(f"{base}/readyz", timeout=1)
    states = response.json()["components"].values()
    return response.status_code == 200 or "loading" not in states


@contextmanager
def run_server(log_dir: Path, env: dict[str, str], ready: bool = True) -> Iterator[str]:
    """Start ``assistant serve`` with ``env`` added; yield its base URL once it is ready
    (``ready``) or has settled (finished loading, ready or not)."""
    port = _free_port()
    log_path = log_dir / "server.log"
    full_env = {**os.environ, "ASSISTANT_LIMITS__MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
                "ASSISTANT_ENVIRONMENT": "test",
                "ASSISTANT_CHAT__DB_PATH": str(log_dir / "chat.sqlite3"),
                "ASSISTANT_SECURITY__AUDIT_LOG": str(log_dir / "audit.jsonl"),
                "ASSISTANT_SECURITY__STUDY_HASH_KEY_FILE": str(log_dir / "study-hash.key"),
                **env}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "serve", "--host", "127.0.0.1",
             "--port", str(port)], env=full_env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    PROCESSES[base] = proc
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited early:\n{log_path.read_text()}")
            try:
                if ready and httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
                if not ready and _settled(base):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in {START_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        PROCESSES.pop(base, None)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("server")
    env = {"ASSISTANT_INDEX_DIR": str(folder / "no-index"),
           "ASSISTANT_SERVICE__REQUIRE_INDEX": "false"}
    with run_server(folder, env) as base:
        yield base


@pytest.fixture(scope="session")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("limited")
    env = {"ASSISTANT_INDEX_DIR": str(folder / "no-index"),
           "ASSISTANT_LIMITS__REQUESTS_PER_MINUTE": str(RATE_PER_MINUTE),
           "ASSISTANT_LIMITS__RATE_BURST": str(RATE_BURST)}
    with run_server(folder, env, ready=False) as base:
        yield base


@pytest.fixture(scope="session")
def literature_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index folder holding a real literature index of the first 200 MEDLINE passages."""
    from assistant.retrieval import build_index

    folder = tmp_path_factory.mktemp("indexes")
    build_index(Settings(data_dir=data_dir(), index_dir=folder), sources=["medline"],
                limit=200, progress=False)
    return folder


@pytest.fixture(scope="session")
def indexed_server(tmp_path_factory: pytest.TempPathFactory, literature_index: Path
                   ) -> Iterator[str]:
    with run_server(tmp_path_factory.mktemp("indexed"),
                    {"ASSISTANT_INDEX_DIR": str(literature_index)}) as base:
        yield base


@pytest.fixture(scope="session")
def br35h() -> Callable[[int], Path]:
    """``br35h(1)`` -> a tumour test-fold image, ``br35h(0)`` a no-tumour one."""
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD]

    def pick(label: int) -> Path:
        path = data_dir() / next(r.path for r in rows if r.label == label)
        if not path.is_file():
            pytest.fail(f"missing {path}: run `assistant data fetch` first")
        return path

    return pick

"""A real service, started with uvicorn in a subprocess on a free loopback port."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

# Small enough that the 413 tests need no large payloads.
UPLOAD_LIMIT = 300_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log_path = Path(tmp_path_factory.mktemp("server")) / "server.log"
    env = {**os.environ, "ASSISTANT_LIMITS__MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
           "ASSISTANT_ENVIRONMENT": "test"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "serve", "--host", "127.0.0.1",
             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited early:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 60 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()

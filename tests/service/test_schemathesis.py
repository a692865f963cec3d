"""Schemathesis against the service's own OpenAPI schema (``/openapi.json`` of a real
server with a small literature index): every operation, its coverage, fuzzing and stateful
phases, a bounded number of examples each. No generated request may get a 5xx
(``not_a_server_error``) and the server must stay up.

Schemathesis runs as its command line (``schemathesis run``): its pytest integration does
not load under pytest 9. ``scripts/fuzz_service.py`` runs more examples."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import run_server

EXAMPLES = 25  # per operation and phase


@pytest.fixture(scope="module")
def schema_server(tmp_path_factory: pytest.TempPathFactory, literature_index: Path
                  ) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("schemathesis")
    env = {"ASSISTANT_INDEX_DIR": str(literature_index),
           "ASSISTANT_LIMITS__REQUESTS_PER_MINUTE": "0",
           "ASSISTANT_BATCH__DB_PATH": str(folder / "batches.sqlite3"),
           "ASSISTANT_BATCH__UPLOAD_DIR": str(folder / "uploads")}
    with run_server(folder, env) as base:
        yield base, folder


def run_schemathesis(base: str, report: Path, examples: int, seed: int = 1
                     ) -> dict[str, object]:
    """``schemathesis run`` against ``base``: its JSON report."""
    command = [str(Path(sys.executable).with_name("schemathesis")), "run",
               f"{base}/openapi.json", "--checks", "not_a_server_error",
               "--max-examples", str(examples), "--workers", "1", "--seed", str(seed),
               "--no-color", "--generation-database", "none", "--request-timeout", "60",
               "--report", "json", "--report-json-path", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          cwd=report.parent)
    assert report.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, object] = json.loads(report.read_text())
    result["output"] = done.stdout[-6000:]
    return result


@pytest.mark.slow
def test_no_server_errors(schema_server: tuple[str, Path]) -> None:
    base, folder = schema_server
    report = run_schemathesis(base, folder / "schemathesis.json", EXAMPLES)
    cases = report["test_cases"]
    assert isinstance(cases, dict)
    assert cases["generated"] >= 300, report["output"]
    assert cases["with_failures"] == 0 and not report["failures"], report["output"]
    assert not report["errors"], report["output"]
    assert httpx.get(f"{base}/healthz").status_code == 200
    metrics = httpx.get(f"{base}/metrics").text
    assert 'status="500"' not in metrics

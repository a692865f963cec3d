"""A corrupt or stale model checkpoint or literature index is refused at start-up, not
served: the real server comes up, ``/readyz`` is 503 and names the component and the
reason, and the routes that need it answer 503 with that reason."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assistant.config import Settings
from assistant.retrieval.build import index_path
from assistant.retrieval.index import DENSE_FILE, MANIFEST_FILE
from assistant.vision.checkpoint import release_path
from tests.service.conftest import run_server

pytestmark = pytest.mark.slow


def _not_ready(base: str, component: str) -> str:
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["status"] == "not ready"
    state: str = body["components"][component]
    assert state.startswith("unavailable: "), body
    return state


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_vision_checkpoint_is_refused(tmp_path: Path, damage: str) -> None:
    release = release_path(Settings()).read_bytes()
    checkpoint = tmp_path / "vision.pt"
    checkpoint.write_bytes(b"not a checkpoint at all" * 100 if damage == "garbage"
                           else release[: len(release) // 2])
    env = {"ASSISTANT_VISION_CHECKPOINT": str(checkpoint),
           "ASSISTANT_INDEX_DIR": str(tmp_path / "no-index"),
           "ASSISTANT_SERVICE__REQUIRE_INDEX": "false"}
    with run_server(tmp_path, env, ready=False) as base:
        state = _not_ready(base, "vision")
        assert "vision.pt is not a readable checkpoint" in state
        refused = httpx.post(f"{base}/v1/analyze", files={"file": ("a.png", b"x")})
        assert refused.status_code == 503
        assert "not a readable checkpoint" in refused.json()["error"]["message"]


@pytest.fixture
def index_copy(tmp_path: Path, literature_index: Path) -> Iterator[Path]:
    folder = tmp_path / "indexes"
    shutil.copytree(literature_index, folder)
    yield folder


@pytest.mark.parametrize("damage", ["truncated", "stale"])
def test_corrupt_or_stale_index_is_refused(tmp_path: Path, index_copy: Path,
                                           damage: str) -> None:
    directory = index_path(Settings(index_dir=index_copy))
    if damage == "truncated":
        dense = directory / DENSE_FILE
        dense.write_bytes(dense.read_bytes()[: dense.stat().st_size // 3])
        reason = "the manifest says"
    else:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        manifest["embedder_sha256"] = "0" * 64
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
        reason = "is stale: embedder sha256 000000000000 in the index"
    with run_server(tmp_path, {"ASSISTANT_INDEX_DIR": str(index_copy)}, ready=False) as base:
        state = _not_ready(base, "retrieval")
        assert reason in state, state
        search = httpx.get(f"{base}/v1/search", params={"q": "glioma"})
        assert search.status_code == 503 and reason in search.json()["error"]["message"]

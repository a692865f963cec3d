"""A real service with API keys, a CORS origin and a low per-key rate: 401 without a valid
key, one rate bucket per key, CORS for the configured origin only, and an audit line per
request that names the key's id, never the key."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assistant.security import key_digest, key_id
from tests.service.conftest import run_server

KEYS = ("first-test-key-0123456789", "second-test-key-abcdefghij")
ORIGIN = "https://ward.example"
BURST = 4


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("keyed")
    env = {"ASSISTANT_API_KEYS": ",".join(KEYS),
           "ASSISTANT_SECURITY__CORS_ORIGINS": json.dumps([ORIGIN]),
           "ASSISTANT_INDEX_DIR": str(folder / "no-index"),
           "ASSISTANT_SERVICE__REQUIRE_INDEX": "false",
           "ASSISTANT_LIMITS__REQUESTS_PER_MINUTE": "6",
           "ASSISTANT_LIMITS__RATE_BURST": str(BURST)}
    with run_server(folder, env, ready=False) as base:
        yield base, folder


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_v1_needs_a_valid_key(keyed: tuple[str, Path]) -> None:
    base, _ = keyed
    for headers in ({}, _auth("not-a-key-0123456789"), {"Authorization": f"Basic {KEYS[0]}"}):
        refused = httpx.get(f"{base}/v1/models", headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["type"] == "unauthorized"
        assert refused.headers["www-authenticate"].startswith("Bearer")
    missing = httpx.post(f"{base}/v1/analyze", files={"file": ("x.png", b"abc")})
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    assert httpx.get(f"{base}/v1/models", headers=_auth(KEYS[0])).status_code == 200
    for open_path in ("/healthz", "/readyz", "/metrics", "/"):  # probes and the page
        assert httpx.get(f"{base}{open_path}").status_code in (200, 503)


def test_rate_limit_is_per_key(keyed: tuple[str, Path]) -> None:
    base, _ = keyed
    first = [httpx.get(f"{base}/v1/models/x", headers=_auth(KEYS[0])).status_code
             for _ in range(BURST + 1)]
    assert first[-1] == 429 and 429 not in first[:BURST - 1]
    refused = httpx.get(f"{base}/v1/models/x", headers=_auth(KEYS[0]))
    assert "this API key" in refused.json()["error"]["message"]
    # The other key, from the same address, has its own bucket.
    assert httpx.get(f"{base}/v1/models/x", headers=_auth(KEYS[1])).status_code == 404


def test_cors_only_for_the_configured_origin(keyed: tuple[str, Path]) -> None:
    base, _ = keyed
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(f"{base}/v1/analyze", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(f"{base}/v1/analyze",
                          headers={"Origin": "https://evil.example", **preflight})
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    simple = httpx.get(f"{base}/v1/models", headers={"Origin": "https://evil.example",
                                                     **_auth(KEYS[1])})
    assert "access-control-allow-origin" not in simple.headers


def test_audit_log_names_key_ids_never_keys(keyed: tuple[str, Path]) -> None:
    base, folder = keyed
    httpx.get(f"{base}/v1/models", headers=_auth(KEYS[1]))
    httpx.get(f"{base}/v1/models")
    httpx.get(f"{base}/healthz")
    lines = (folder / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(set(r) >= {"ts", "key_id", "route", "action", "status", "outcome",
                          "duration_ms", "study_uid_hash", "models"} for r in records)
    ok = [r for r in records if r["route"] == "/v1/models" and r["status"] == 200]
    assert ok and ok[-1]["key_id"] == key_id(key_digest(KEYS[1]))
    assert ok[-1]["action"] == "models" and ok[-1]["outcome"] == "ok"
    refused = [r for r in records if r["status"] == 401]
    assert refused and all(r["key_id"] is None and r["outcome"] == "refused" for r in refused)
    assert any(r["status"] == 429 for r in records)
    assert not any(r["route"] == "/healthz" for r in records)  # probes are not audited
    everything = "\n".join(lines) + (folder / "server.log").read_text()
    for key in KEYS:
        assert key not in everything
    assert (folder / "audit.jsonl").stat().st_mode & 0o077 == 0

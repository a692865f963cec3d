"""API keys (hashed, constant-time match, short ids), the keyed study-UID hash and its key
file, the loopback rule of ``assistant serve``."""

import hashlib
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from assistant.config import Settings
from assistant.security import (
    SecurityConfigError,
    hash_api_keys,
    is_loopback,
    key_digest,
    key_id,
    load_study_key,
    match_key,
    refuse_unprotected_bind,
    study_hash,
)

KEY = "k3y-for-tests-0123456789"
OTHER = "another-key-abcdefghijkl"


def test_keys_are_kept_only_as_digests() -> None:
    digest = "sha256:" + hashlib.sha256(OTHER.encode()).hexdigest()
    assert hash_api_keys(f" {KEY}, {digest.upper().replace('SHA256', 'sha256')}\n{KEY}") == (
        key_digest(KEY), digest)
    assert hash_api_keys("") == hash_api_keys(None) == hash_api_keys(" , ") == ()
    assert hash_api_keys([KEY]) == (key_digest(KEY),)


@pytest.mark.parametrize("bad", ["short", "sha256:abc", "sha256:" + "g" * 64])
def test_bad_keys_are_refused(bad: str) -> None:
    with pytest.raises(SecurityConfigError):
        hash_api_keys(bad)


def test_match_key_gives_the_id_never_the_key() -> None:
    digests = hash_api_keys(f"{KEY},{OTHER}")
    assert match_key(KEY, digests) == key_id(key_digest(KEY))
    assert match_key(OTHER, digests) == key_id(digests[1])
    assert len(match_key(KEY, digests) or "") == 8
    assert match_key("wrong-key-0123456789", digests) is None
    assert match_key(KEY, ()) is None


def test_settings_read_assistant_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_API_KEYS", f"{KEY},{OTHER}")
    settings = Settings()
    assert settings.api_keys == (key_digest(KEY), key_digest(OTHER))
    assert KEY not in repr(settings) and KEY not in settings.model_dump_json()
    monkeypatch.setenv("ASSISTANT_API_KEYS", "")  # compose passes an empty value through
    assert Settings().api_keys == ()


def test_a_refused_key_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_API_KEYS", "tooshort-secret")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "tooshort-secret" not in str(caught.value)
    assert "at least 16 characters" in str(caught.value)


def test_study_hash_is_keyed_and_stable() -> None:
    uid = "1.2.826.0.1.3680043.8.498.12345"
    first = study_hash(b"k" * 32, uid)
    assert first == study_hash(b"k" * 32, uid + "\x00") and first.startswith("hmac-sha256:")
    assert uid not in first
    assert first != study_hash(b"j" * 32, uid)
    assert first != "hmac-sha256:" + hashlib.sha256(uid.encode()).hexdigest()[:32]


def test_study_key_file_is_generated_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "study-hash.key"
    key = load_study_key(None, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 64
    assert load_study_key(None, path) == key
    path.chmod(0o644)
    assert load_study_key(None, path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_study_key("configured-secret-123", path) == b"configured-secret-123"
    with pytest.raises(SecurityConfigError):
        load_study_key("short", path)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False),
    ("example.org", False)])
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_off_loopback_needs_keys() -> None:
    assert refuse_unprotected_bind("127.0.0.1", ()) is None
    reason = refuse_unprotected_bind("0.0.0.0", Settings(api_keys=()).api_keys)
    assert reason is not None and "ASSISTANT_API_KEYS" in reason
    assert refuse_unprotected_bind("0.0.0.0", Settings(api_keys=KEY).api_keys) is None


def test_serve_refuses_to_start_off_loopback_without_keys(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "ASSISTANT_API_KEYS": "",
           "ASSISTANT_SECURITY__AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    done = subprocess.run([sys.executable, "-m", "assistant", "serve", "--host", "0.0.0.0",
                           "--port", "1"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "refusing to serve on '0.0.0.0' without API keys" in done.stderr

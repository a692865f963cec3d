"""API keys and the keyed hash of study UIDs: no web imports, no settings imports (the
settings import this).

- API keys are kept only as sha256 digests (``sha256:<64 hex>``); a presented key is hashed
  and compared with every stored digest in constant time. A key's id is the first
  ``KEY_ID_HEX`` hex digits of its digest: what logs and the audit log name, never the key.
- Off loopback the service needs keys: ``refuse_unprotected_bind``.
- A DICOM StudyInstanceUID is kept only as an HMAC-SHA256 under a secret key: the same study
  gets the same hash on this installation, and the hash cannot be turned back into the UID
  (nor checked against a guessed UID) without the key. The key comes from the settings or is
  generated once into a file readable by its owner only (mode 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

DIGEST_PREFIX = "sha256:"
KEY_ID_HEX = 8
MIN_KEY_CHARS = 16
STUDY_HASH_PREFIX = "hmac-sha256:"
STUDY_HASH_HEX = 32  # 128 bits of the HMAC
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_KEY_BYTES = 32


class SecurityConfigError(ValueError):
    """An API key or the study hash key is unusable; the message says which and why."""


def key_digest(key: str) -> str:
    """``sha256:<hex>`` of an API key."""
    return DIGEST_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id(digest: str) -> str:
    """The short, loggable id of a key, from its digest."""
    return digest.removeprefix(DIGEST_PREFIX)[:KEY_ID_HEX]


def hash_api_keys(value: object) -> tuple[str, ...]:
    """Keys as configured (a string of comma- or white-space-separated entries, or a list)
    -> their digests. An entry that is already ``sha256:<64 lower-case hex>`` is kept as it
    is; any other entry is a key, at least ``MIN_KEY_CHARS`` characters long."""
    if value is None:
        return ()
    entries: Iterable[object] = (re.split(r"[\s,]+", value) if isinstance(value, str)
                                 else value)  # type: ignore[assignment]
    if not isinstance(entries, Iterable):
        raise SecurityConfigError("API keys must be a string or a list of strings")
    digests: list[str] = []
    for entry in entries:
        text = str(entry).strip()
        if not text:
            continue
        if text.lower().startswith(DIGEST_PREFIX):
            if not _DIGEST.fullmatch(text.lower()):
                raise SecurityConfigError(
                    "an API key entry starting 'sha256:' must be followed by 64 hex digits")
            digests.append(text.lower())
        elif len(text) < MIN_KEY_CHARS:
            raise SecurityConfigError(f"an API key must be at least {MIN_KEY_CHARS} "
                                      f"characters long (one is {len(text)})")
        else:
            digests.append(key_digest(text))
    return tuple(dict.fromkeys(digests))  # unique, in order


def match_key(presented: str, digests: Iterable[str]) -> str | None:
    """The id of the stored key ``presented`` matches, else None. Every digest is compared,
    each in constant time, so the time taken does not say which (or whether one) matched."""
    candidate = key_digest(presented).encode()
    found: str | None = None
    for digest in digests:
        if hmac.compare_digest(candidate, digest.encode()):
            found = digest
    return key_id(found) if found is not None else None


def study_hash(key: bytes, study_uid: str) -> str:
    """The keyed hash of a StudyInstanceUID (``hmac-sha256:<32 hex>``)."""
    mac = hmac.new(key, study_uid.strip().rstrip("\x00").encode("ascii", "replace"),
                   hashlib.sha256)
    return STUDY_HASH_PREFIX + mac.hexdigest()[:STUDY_HASH_HEX]


def load_study_key(secret: str | None, key_file: Path) -> bytes:
    """The HMAC key: ``secret`` when set, else the key in ``key_file``, generated (32 random
    bytes, hex, mode 0600) when the file does not exist yet. A key file others may read is
    made private again, with a warning."""
    if secret:
        if len(secret) < MIN_KEY_CHARS:
            raise SecurityConfigError(f"the study hash secret must be at least "
                                      f"{MIN_KEY_CHARS} characters long")
        return secret.encode("utf-8")
    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(key_file)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(_KEY_BYTES) + "\n")
    log.info("generated the study hash key in %s (mode 0600): keep it with the data", key_file)
    return _read_key_file(key_file)


def _read_key_file(key_file: Path) -> bytes:
    mode = stat.S_IMODE(key_file.stat().st_mode)
    if mode & 0o077:
        log.warning("the study hash key %s was readable by others (mode %o): now 0600",
                    key_file, mode)
        key_file.chmod(0o600)
    text = key_file.read_text().strip()
    if len(text) < MIN_KEY_CHARS:
        raise SecurityConfigError(f"the study hash key in {key_file} is shorter than "
                                  f"{MIN_KEY_CHARS} characters: delete it to make a new one "
                                  "(stored study hashes then change)")
    return text.encode("utf-8")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refuse_unprotected_bind(host: str, api_keys: tuple[str, ...]) -> str | None:
    """Why the service must not listen on ``host`` with these keys, or None."""
    if is_loopback(host) or api_keys:
        return None
    return (f"refusing to serve on {host!r} without API keys: off loopback every /v1/ "
            "request must carry a key. Set ASSISTANT_API_KEYS (one or more keys of at least "
            "16 characters, comma-separated, or their sha256:<hex> digests), or bind "
            "127.0.0.1")

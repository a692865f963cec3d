"""The audit log: one JSON line per request, written by middleware when the response ends.

Each line: ``ts`` (UTC, ISO 8601), ``key_id`` (the API key's short id, null when keys are
off), ``client`` (address), ``method``, ``route`` (the route template, never the raw path
or query), ``action``, ``study_id`` and ``study_uid_hash`` (the keyed hash of the DICOM
StudyInstanceUID) when the request was about a study, ``models`` (what ran: role -> name,
version and weights hash), ``status``, ``outcome`` (``ok``, ``refused``: a 4xx, ``error``:
a 5xx) and ``duration_ms``. Nothing else: no file names, no query strings, no patient data.

Probes and metric scrapes (``/healthz``, ``/readyz``, ``/metrics``) are not logged: a
health check every few seconds would bury the requests. Routes add what they know about
the study with ``note``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from assistant.service.metrics import StatusRecorder, route_template

log = logging.getLogger(__name__)

AUDIT_SCOPE = "assistant.audit"  # the scope key routes' notes go under
KEY_ID_SCOPE = "assistant.key_id"  # set by the API key check
UNAUDITED = frozenset({"/healthz", "/readyz", "/metrics"})
ACTIONS = {
    "/v1/analyze": "analyze", "/v1/search": "search", "/v1/chat/completions": "chat",
    "/v1/images/inspect": "inspect", "/v1/models": "models", "/v1/models/{model_id}": "models",
    "/": "page",
}


class AuditLog:
    """Appends JSON lines to a file (created with mode 0600 on the first line); safe to
    share between threads. A line is written whole with one ``write`` and flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._lock = threading.Lock()

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._file = os.fdopen(fd, "a", encoding="utf-8")
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def model_versions(models: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``Analysis.to_dict()["models"]`` -> role -> "name version sha256:<12 hex>"."""
    out: dict[str, str] = {}
    for model in models:
        parts = [str(model.get("name") or "?")]
        if model.get("version"):
            parts.append(str(model["version"]))
        if model.get("sha256"):
            parts.append(f"sha256:{str(model['sha256'])[:12]}")
        out[str(model.get("role") or "model")] = " ".join(parts)
    return out


def note(request: Request, *, study_id: str | None = None, study_uid_hash: str | None = None,
         models: Iterable[Mapping[str, Any]] | None = None) -> None:
    """Add what a route knows to its request's audit line (nothing when not audited)."""
    notes: dict[str, Any] | None = request.scope.get(AUDIT_SCOPE)
    if notes is None:
        return
    if study_id is not None:
        notes["study_id"] = study_id
    if study_uid_hash is not None:
        notes["study_uid_hash"] = study_uid_hash
    if models is not None:
        notes["models"] = model_versions(models)


def note_analysis(request: Request, analysis: Mapping[str, Any]) -> None:
    """``note`` from an analysis dict (``Analysis.to_dict()`` or a stored one)."""
    note(request, study_id=analysis.get("study_id"),
         study_uid_hash=analysis.get("study_uid_hash"), models=analysis.get("models") or ())


def action(route: str) -> str:
    """What a request did, in a word, from its route template."""
    if route in ACTIONS:
        return ACTIONS[route]
    return "batch" if route.startswith("/v1/batches") else route


def _outcome(status: int) -> str:
    return "error" if status >= 500 else "refused" if status >= 400 else "ok"


class AuditMiddleware:
    """Writes the audit line of every request but probes (ASGI; outside the key check, so
    refused requests are logged too)."""

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNAUDITED:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        notes: dict[str, Any] = {}
        scope[AUDIT_SCOPE] = notes
        recorder = StatusRecorder(send)
        try:
            await self.app(scope, receive, recorder)
        finally:
            status = recorder.status
            route = route_template(scope)
            client = scope.get("client")
            record = {"ts": stamp, "key_id": scope.get(KEY_ID_SCOPE),
                      "client": client[0] if client else None, "method": scope["method"],
                      "route": route, "action": action(route),
                      "study_id": notes.get("study_id"),
                      "study_uid_hash": notes.get("study_uid_hash"),
                      "models": notes.get("models"), "status": status,
                      "outcome": _outcome(status),
                      "duration_ms": round((time.perf_counter() - start) * 1000, 1)}
            try:
                self.audit.write(record)
            except OSError:
                log.exception("could not write the audit log %s", self.audit.path)

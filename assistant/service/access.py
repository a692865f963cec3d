"""Who may call the service: API keys on ``/v1/``, CORS origins, the audit log, and the
rule that a service bound off loopback must have keys.

- With keys configured (``ASSISTANT_API_KEYS``), every ``/v1/`` request needs
  ``Authorization: Bearer <key>``; without one, or with a wrong one, it gets 401 and a JSON
  body saying so, before its body is read. The page, probes and ``/metrics`` stay open
  (the page sends the key its user types). The matched key's id goes into the scope, where
  the rate limit (one bucket per key) and the audit log find it.
- ``assistant serve`` refuses a bind off loopback without keys
  (``assistant.security.refuse_unprotected_bind``, checked before anything heavy loads).
- CORS: only the origins in ``security.cors_origins`` (none by default) may call the API
  from a browser page served elsewhere.

Middleware order, outermost first (``install_access`` adds the middle three): metrics, CORS,
audit, API keys, rate limit, body size.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from assistant.config import Settings
from assistant.security import match_key
from assistant.service.audit import KEY_ID_SCOPE, AuditLog, AuditMiddleware
from assistant.service.errors import send_error

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1/"


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer":
                return None
            return token.strip() or None
    return None


class ApiKeyMiddleware:
    """401 for a ``/v1/`` request without a valid key (ASGI, before the body is read)."""

    def __init__(self, app: ASGIApp, digests: tuple[str, ...]) -> None:
        self.app = app
        self.digests = digests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIX):
            token = _bearer(scope)
            found = match_key(token, self.digests) if token else None
            if found is None:
                why = ("an API key is required: send 'Authorization: Bearer <key>'"
                       if token is None else "the API key is not valid")
                await send_error(send, StarletteHTTPException(401, why),
                                 [("www-authenticate", 'Bearer realm="assistant"')])
                return
            scope[KEY_ID_SCOPE] = found
        await self.app(scope, receive, send)


def install_access(app: FastAPI, settings: Settings) -> AuditLog:
    """Add the API key check, the audit log and CORS (in that order: each outside the
    one before). Call between the rate limit and the metrics middleware."""
    if settings.api_keys:
        app.add_middleware(ApiKeyMiddleware, digests=settings.api_keys)
    assert settings.security.audit_log is not None  # Settings resolves it
    audit = AuditLog(settings.security.audit_log)
    app.add_middleware(AuditMiddleware, audit=audit)
    origins = settings.security.cors_origins
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins,
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["X-Conversation-Id", "Retry-After"], max_age=600)
    log.info("access: %s; CORS origins: %s; audit log %s",
             f"{len(settings.api_keys)} API key(s)" if settings.api_keys else "no API keys",
             ", ".join(origins) or "none", audit.path)
    return audit

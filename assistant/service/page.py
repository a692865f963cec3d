"""The clinicians' web page at ``/``: plain HTML, CSS and JavaScript shipped as package data
(``assistant/service/static/``), no CDN and no external fonts.

The page calls the service's own API from the browser: ``POST /v1/analyze`` for the
diagnosis, heatmap, report and citations, then ``POST /v1/chat/completions`` (streamed)
about the same study. Every response here carries a Content-Security-Policy that allows
only this origin (images also as ``data:`` URLs, which is how the heatmap arrives).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

# Files under assistant/service/static/ that the page may load, and their media types.
STATIC_FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
}

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=len(STATIC_FILES))
def static_file(name: str) -> bytes:
    """The bytes of one shipped page file (read once)."""
    return resources.files("assistant.service").joinpath("static", name).read_bytes()


def _serve(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise StarletteHTTPException(404, f"no page file {name!r}")
    return Response(static_file(name), media_type=media_type, headers=SECURITY_HEADERS)


@router.get("/")
async def page() -> Response:
    """The page: upload an image with its context, see the analysis, chat about it."""
    return _serve("index.html")


@router.get("/static/{name}")
async def page_file(name: str) -> Response:
    """The page's stylesheet and script (only the files in ``STATIC_FILES``)."""
    return _serve(name)

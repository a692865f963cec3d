"""Every error a client can cause, mapped to an HTTP status in this one place.

Bodies are JSON: ``{"error": {"type": ..., "message": ...}}`` where the message says
what was wrong with the request.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.imaging.errors import (
    ImageInputError,
    ImageTooLargeError,
    NoPixelDataError,
    UnreadableImageError,
    UnsupportedFormatError,
)

log = logging.getLogger(__name__)

# Most specific first: NoPixelDataError is an UnreadableImageError.
_IMAGE_ERRORS: tuple[tuple[type[ImageInputError], int, str], ...] = (
    (ImageTooLargeError, 413, "too_large"),
    (UnsupportedFormatError, 415, "unsupported_format"),
    (NoPixelDataError, 422, "no_pixel_data"),
    (UnreadableImageError, 422, "unreadable_image"),
    (ImageInputError, 422, "bad_image"),
)

_HTTP_TYPES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "too_large", 415: "unsupported_format",
    422: "invalid_request", 429: "rate_limited", 503: "not_ready",
}


def error_body(kind: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"type": kind, "message": message}}


def image_error_status(exc: ImageInputError) -> tuple[int, str]:
    for cls, status, kind in _IMAGE_ERRORS:
        if isinstance(exc, cls):
            return status, kind
    return 422, "bad_image"


async def _image_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageInputError)
    status, kind = image_error_status(exc)
    log.info("rejected image: %s (%d)", kind, status)
    return JSONResponse(error_body(kind, str(exc)), status_code=status)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = _HTTP_TYPES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(kind, str(exc.detail)), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return JSONResponse(error_body("invalid_request", "; ".join(parts) or "invalid request"),
                        status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ImageInputError, _image_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

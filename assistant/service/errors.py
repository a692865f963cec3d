"""Every error a client can cause, mapped to an HTTP status in this one place.

Bodies are JSON: ``{"error": {"type": ..., "message": ...}}`` where the message says
what was wrong with the request.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.types import Send

from assistant.batch.errors import (
    BatchError,
    BatchTooLargeError,
    FolderNotAllowedError,
    JobNotFoundError,
    NotAnArchiveError,
)
from assistant.imaging.errors import (
    ImageInputError,
    ImageTooLargeError,
    NoPixelDataError,
    UnreadableImageError,
    UnsupportedFormatError,
)

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service cannot serve, for a reason the message states."""


class InvalidContextError(ServiceError):
    """The clinical context (indication, age, sex, or the JSON ``context``) is invalid."""


class InvalidQueryError(ServiceError):
    """A search query or one of its parameters is invalid."""


class InvalidRequestError(ServiceError):
    """A request's form is malformed beyond what its fields' validation sees (a field
    given twice, say)."""


def given_twice(values: Any, names: Sequence[str]) -> str | None:
    """"q (2 times), k (3 times)": which of ``names`` the query or form ``values`` (a
    multi-dict) holds more than once; None when none. Read one value each, the last
    repeat would win, silently."""
    repeated = [f"{name} ({len(got)} times)" for name in names
                if len(got := values.getlist(name)) > 1]
    return ", ".join(repeated) or None


def unknown_names(values: Any, known: Sequence[str]) -> str | None:
    """"'year-from', 'Age'": the names in the query or form ``values`` (a multi-dict) that
    are not ``known``; None when there are none. An unknown name had been ignored without a
    word, so a misspelt filter ("year-from") returned unfiltered hits."""
    unknown = [repr(name) for name in dict.fromkeys(values.keys()) if name not in known]
    return ", ".join(unknown) or None


class NotReadyError(ServiceError):
    """A component the request needs has not loaded (yet)."""


class RetrievalUnavailableError(NotReadyError):
    """The literature index is missing, stale or corrupt."""


class BusyError(ServiceError):
    """Too many analyses are waiting for the model."""


class RateLimitedError(ServiceError):
    """The client sent more requests than its rate allows."""


# Most specific first.
_SERVICE_ERRORS: tuple[tuple[type[ServiceError], int, str], ...] = (
    (InvalidContextError, 422, "invalid_context"),
    (InvalidQueryError, 422, "invalid_query"),
    (InvalidRequestError, 422, "invalid_request"),
    (RetrievalUnavailableError, 503, "retrieval_unavailable"),
    (NotReadyError, 503, "not_ready"),
    (BusyError, 503, "busy"),
    (RateLimitedError, 429, "rate_limited"),
)
RETRY_AFTER_S = 1  # told to clients on 503 busy / not ready

# Most specific first: NoPixelDataError is an UnreadableImageError.
_IMAGE_ERRORS: tuple[tuple[type[ImageInputError], int, str], ...] = (
    (ImageTooLargeError, 413, "too_large"),
    (UnsupportedFormatError, 415, "unsupported_format"),
    (NoPixelDataError, 422, "no_pixel_data"),
    (UnreadableImageError, 422, "unreadable_image"),
    (ImageInputError, 422, "bad_image"),
)

# Batch drafting (``/v1/batches``); anything else about a batch's input is a 422.
_BATCH_ERRORS: tuple[tuple[type[BatchError], int, str], ...] = (
    (BatchTooLargeError, 413, "too_large"),
    (NotAnArchiveError, 415, "unsupported_format"),
    (FolderNotAllowedError, 403, "forbidden"),
    (JobNotFoundError, 404, "not_found"),
    (BatchError, 422, "invalid_batch"),
)

CLIENT_CLOSED = 499  # a request the client abandoned before it was read (nginx's code)

_HTTP_TYPES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 408: "timeout",
    405: "method_not_allowed", 413: "too_large", 415: "unsupported_format",
    422: "invalid_request", 429: "rate_limited", 503: "not_ready",
}


def error_body(kind: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"type": kind, "message": message}}


def service_error_status(exc: ServiceError) -> tuple[int, str]:
    for cls, status, kind in _SERVICE_ERRORS:
        if isinstance(exc, cls):
            return status, kind
    return 500, "service_error"


async def send_error(send: Send, exc: ServiceError | StarletteHTTPException,
                     headers: Iterable[tuple[str, str]] = ()) -> None:
    """The JSON error response of ``exc`` sent straight through ASGI ``send``: for
    middleware that refuses a request before the app sees it (413, 429)."""
    if isinstance(exc, ServiceError):
        (status, kind), message = service_error_status(exc), str(exc)
    else:
        status, message = exc.status_code, str(exc.detail)
        kind = _HTTP_TYPES.get(status, "http_error")
    body = json.dumps(error_body(kind, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                            *((k.encode(), v.encode()) for k, v in headers)]})
    await send({"type": "http.response.body", "body": body})


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


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    status, kind = service_error_status(exc)
    log.info("refused request: %s (%d): %s", kind, status, exc)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse(error_body(kind, str(exc)), status_code=status, headers=headers)


async def _batch_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BatchError)
    status, kind = next((s, k) for cls, s, k in _BATCH_ERRORS if isinstance(exc, cls))
    log.info("refused batch: %s (%d): %s", kind, status, exc)
    return JSONResponse(error_body(kind, str(exc)), status_code=status)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client closed the connection before its request was read: nobody is there to
    answer, and it is not the service's error (499, as nginx counts it)."""
    log.info("client disconnected before %s %s was read", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED)


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    # Only a bug gets here: bad input raises one of the typed errors above.
    log.error("internal error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "the service failed; the error is logged"),
                        status_code=500)


_MULTIPART_LIMIT = re.compile(r"exceeded maximum size|too many (fields|files)", re.IGNORECASE)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI's 400 for a form cut short
        return await _client_gone(request, exc.__cause__)
    if exc.status_code == 400 and isinstance(exc.__context__, MultiPartException):
        # Starlette's 400 for a multipart body it cannot parse (no boundary, a broken
        # part): the body is unreadable, a 422 as every other unreadable input; a part
        # or a count of parts over Starlette's limits is too large, a 413
        if _MULTIPART_LIMIT.search(str(exc.detail)):
            return JSONResponse(error_body("too_large", str(exc.detail)), status_code=413)
        return JSONResponse(error_body("invalid_request", "the multipart body could not be "
                                       f"read: {exc.detail}"), status_code=422)
    kind = _HTTP_TYPES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(kind, str(exc.detail)), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/")
    parts = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = ".".join(str(p) for p in loc)
        why = (err.get("ctx") or {}).get("error")  # a malformed body: what json.loads said
        if multipart and loc[:1] == ("body",) and len(loc) == 2 and err.get("type") == "missing":
            why = (f"no complete multipart part named \"{loc[1]}\"; a body cut short "
                   "before its closing boundary has none")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" + (f" ({why})" if why else ""))
    return JSONResponse(error_body("invalid_request", "; ".join(parts) or "invalid request"),
                        status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ImageInputError, _image_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(BatchError, _batch_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)

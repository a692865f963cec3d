"""Request body size limit, enforced before the body is read into memory, and a stall
limit while it arrives.

A declared ``Content-Length`` over the limit is refused at once; a body without one
(chunked) is counted as it streams and refused the moment it passes the limit. Both get
the same JSON 413 as every other error. A body that sends nothing for ``stall_s`` seconds
before it is complete is answered 408: a client that stops half way through an upload
holds neither a connection nor the service's shutdown for longer.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.service.errors import send_error


def _too_large(limit: int) -> StarletteHTTPException:
    return StarletteHTTPException(413, f"request body exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """``max_bytes`` for every request, except the paths in ``per_path`` (exact match),
    which have their own limit (the zip upload of ``/v1/batches``)."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 per_path: dict[str, int] | None = None, stall_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}
        self.stall_s = stall_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        headers = dict(scope.get("headers", ()))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_error(send, _too_large(limit))
            return
        received = 0
        started = False
        complete = False  # the body's last part has come: later reads wait for a disconnect

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.stall_s)
            except TimeoutError:
                # An HTTPException passes through FastAPI's body parsing unchanged.
                raise StarletteHTTPException(  # and the connection closes: no more of it
                    408, f"the request body sent nothing for {self.stall_s:g} s",
                    headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise _too_large(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except StarletteHTTPException as exc:
            if exc.status_code not in (408, 413) or started:
                raise
            await send_error(send, exc)

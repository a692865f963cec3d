"""JSON request bodies, read the same way on every route.

``json.loads`` accepts two kinds of body that the rest of the service cannot take; both
are refused here as invalid JSON (a client error: 400 on the chat API, 422 elsewhere, as
any malformed body) instead of failing later as a 500:

- text holding an unpaired UTF-16 surrogate (``"\\ud83e"`` alone, as a client writes it
  when it cuts a string in the middle of an emoji): nothing that encodes text as UTF-8
  (SQLite, the embedder's tokenizer) takes it;
- nesting deeper than Python's recursion limit.

Every router is made with ``route_class=JSONRoute``, so FastAPI's body parsing and a
handler's own ``await request.json()`` both go through ``parse_json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

# A surrogate as a JSON escape, or as the UTF-8-style bytes that json.loads also passes
# through: only a body holding one of these is walked (valid pairs match too).
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\xed[\xa0-\xbf]")


def has_unpaired_surrogate(value: Any) -> bool:
    """Whether a string anywhere in the parsed JSON ``value`` (keys included) holds an
    unpaired surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json(body: bytes | str) -> Any:
    """``json.loads``, raising ``json.JSONDecodeError`` also for the two bodies above."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise json.JSONDecodeError("the JSON is nested too deeply", "", 0) from None
    except UnicodeDecodeError:  # "'utf-8' codec can't decode byte 0x8b" said too little
        compressed = isinstance(body, bytes) and body[:2] in (b"\x1f\x8b", b"\x28\xb5")
        raise json.JSONDecodeError(
            "the body is not JSON text in UTF-8" + (
                " (it looks compressed: send it uncompressed, no Content-Encoding)"
                if compressed else ""), "", 0) from None
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    # json.loads also reads UTF-16 and UTF-32 bodies, where the quick look cannot see
    # surrogates: those are always walked.
    utf8 = json.detect_encoding(raw) == "utf-8"
    if (not utf8 or _MAYBE_SURROGATE.search(raw)) and has_unpaired_surrogate(value):
        raise json.JSONDecodeError("the text holds an unpaired UTF-16 surrogate (half of a "
                                   "character): send valid Unicode", "", 0)
    return value


def media_type(request: Request) -> str:
    """The request's Content-Type without its parameters, lower case ("" when none)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """A route whose request parses its JSON body with ``parse_json``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            return await handler(JSONRequest(request.scope, request.receive))

        return checked

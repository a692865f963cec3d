"""Per-client rate limiting: a token bucket per API key (when keys are configured) or
else per client address, checked before the body is read.

Each address holds up to ``burst`` tokens, refilled at ``per_minute / 60`` a second; a
request takes one, and a request that finds none gets 429 with ``Retry-After`` (whole
seconds until a token is back). Only ``/v1/`` routes are limited: probes and metric scrapes
(``/healthz``, ``/readyz``, ``/metrics``) never are. The client address is the socket's
peer, or what uvicorn's proxy-header handling put there for a trusted proxy.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from assistant.service.audit import KEY_ID_SCOPE
from assistant.service.errors import RateLimitedError, send_error

LIMITED_PREFIX = "/v1/"
MAX_CLIENTS = 10_000  # buckets kept; the least recently seen client's is dropped beyond


@dataclass
class _Bucket:
    tokens: float
    stamp: float  # clock reading of the last refill


class TokenBuckets:
    """Token buckets keyed by client; ``take`` is pure bookkeeping over an injectable
    clock (tests pass their own)."""

    def __init__(self, per_minute: int, burst: int,
                 clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS) -> None:
        if per_minute <= 0 or burst <= 0:
            raise ValueError(f"need per_minute > 0 and burst > 0, got {per_minute}, {burst}")
        self.rate = per_minute / 60.0  # tokens a second
        self.burst = float(burst)
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, client: str) -> float:
        """Take a token for ``client``: 0.0 when granted, else the seconds until one is
        available (nothing is taken then)."""
        now = self.clock()
        bucket = self._buckets.pop(client, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        self._buckets[client] = bucket  # most recently seen last
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


class RateLimitMiddleware:
    """429 for a client over its rate on ``/v1/`` routes (ASGI, before the body is read)."""

    def __init__(self, app: ASGIApp, per_minute: int, burst: int) -> None:
        self.app = app
        self.buckets = TokenBuckets(per_minute, burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(LIMITED_PREFIX):
            key_id = scope.get(KEY_ID_SCOPE)  # one bucket per API key when keys are on
            client = scope.get("client")
            wait = self.buckets.take(f"key:{key_id}" if key_id else
                                     client[0] if client else "unknown")
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                who = "this API key" if key_id else "this address"
                exc = RateLimitedError(f"too many requests from {who}: the limit is "
                                       f"{self.buckets.rate * 60:g} a minute (bursts of "
                                       f"{self.buckets.burst:g}); retry in {seconds} s")
                await send_error(send, exc, [("retry-after", str(seconds))])
                return
        await self.app(scope, receive, send)

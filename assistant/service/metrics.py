"""Prometheus metrics, served at ``/metrics`` in the text exposition format.

- ``assistant_http_requests_total`` and ``assistant_http_request_duration_seconds``: every
  request by method, route template (``/v1/analyze``, not the raw path; ``unrouted`` for
  unknown paths and refusals before routing) and status, refusals by middleware (413, 429) included;
- ``assistant_analyses_total``: ``/v1/analyze`` outcomes: ``in_scope``, ``out_of_scope``,
  ``rejected`` (bad image or context), ``failed`` (the service's fault);
- ``assistant_model_inference_seconds``: seconds per model call by task (``analyze``: one
  pipeline batch, decoding and report drafting included; ``search``: one literature
  search, query embedding included; ``report``: one batch of report drafts from the IU
  X-ray decoder), ``assistant_analyze_batch_size`` and ``assistant_report_batch_size``.

Each app has its own registry, so several apps in one process do not collide.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MetricsMiddleware"]

OUTCOMES = ("in_scope", "out_of_scope", "rejected", "failed")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """The service's metrics in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("assistant_http_requests", "HTTP requests",
                                ("method", "route", "status"), registry=self.registry)
        self.latency = Histogram("assistant_http_request_duration_seconds",
                                 "HTTP request latency, first byte in to last byte out",
                                 ("method", "route", "status"), buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.analyses = Counter("assistant_analyses", "analyses by outcome", ("outcome",),
                                registry=self.registry)
        self.inference = Histogram("assistant_model_inference_seconds",
                                   "seconds per model call", ("task",),
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("assistant_analyze_batch_size", "images per model batch",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.report_batch_size = Histogram("assistant_report_batch_size",
                                           "report drafts per decoder batch",
                                           buckets=BATCH_BUCKETS, registry=self.registry)
        for outcome in OUTCOMES:  # present (at 0) from the start
            self.analyses.labels(outcome)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.labels("analyze").observe(seconds)

    def observe_report_batch(self, size: int, seconds: float) -> None:
        self.report_batch_size.observe(size)
        self.inference.labels("report").observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The path template of the route that served ``scope`` (routing records it in the
    scope), or ``unrouted`` when none did: an unknown path, or a request refused by
    middleware before routing (413, 429). A bounded set of label values, whatever paths
    clients send."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unrouted"


class StatusRecorder:
    """An ASGI ``send`` that passes messages on and remembers the response status (500
    until a response starts, as when the app fails before it answers)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self.send(message)


class MetricsMiddleware:
    """Counts and times every HTTP request (ASGI; outermost, so that refusals by other
    middleware are counted too)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        recorder = StatusRecorder(send)
        try:
            await self.app(scope, receive, recorder)
        finally:
            self.metrics.observe_request(scope["method"], route_template(scope),
                                         recorder.status, time.perf_counter() - start)

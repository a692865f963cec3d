"""What the service loads once at start-up, and the work the routes hand it.

``Services.load`` (run by the lifespan, in a thread) loads the vision model and the
literature index through ``Pipeline.from_settings``, warms the searcher (the embedder loads
on its first query) and fills the pipeline's citation cache, then starts the micro-batcher.
Until then, and for a component that failed, ``components`` says so and ``/readyz`` is 503.

Readiness: the vision model is always required; the literature index is required unless
``service.require_index`` is false. The README's serve command builds the index first, so
a served instance without one is misconfigured, and not-ready is the honest answer; search
then answers 503 and analyses carry no citations (``citations_note`` says why).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence

from assistant.config import Settings
from assistant.data.manifest import DataError
from assistant.imaging import ImageInputError
from assistant.pipeline import Analysis, Pipeline
from assistant.report import Context
from assistant.retrieval.embed import trace_queries
from assistant.retrieval.index import IndexUnusableError
from assistant.retrieval.search import Hit, Mode, Searcher
from assistant.service.batching import MicroBatcher
from assistant.service.errors import (
    InvalidContextError,
    NotReadyError,
    RetrievalUnavailableError,
    ServiceError,
)
from assistant.service.metrics import Metrics
from assistant.service.schemas import AnalyzeForm

log = logging.getLogger(__name__)

VISION, RETRIEVAL = "vision", "retrieval"
LOADING, OK = "loading", "ok"

Job = tuple[bytes, Context]


class Services:
    """The loaded models, the batcher and the metrics; one per app."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.components: dict[str, str] = {VISION: LOADING, RETRIEVAL: LOADING}
        self.optional: set[str] = set() if settings.service.require_index else {RETRIEVAL}
        self.pipeline: Pipeline | None = None
        self.searcher: Searcher | None = None
        self.batcher: MicroBatcher[Job, Analysis] | None = None
        # Whoever uses the searcher from a thread holds this: the embedder's tokenizer is
        # not thread-safe.
        self.search_lock = threading.Lock()

    # -- start-up ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load everything (in a thread: the event loop keeps answering probes). The vision
        component turns "ok" last, once the batcher runs and analyses can be served."""
        start = time.perf_counter()
        if self.settings.service.torch_threads:
            import torch

            torch.set_num_threads(self.settings.service.torch_threads)
        await asyncio.to_thread(self._load)
        if self.pipeline is not None:
            svc = self.settings.service
            self.batcher = MicroBatcher(self._analyze_batch, svc.batch_max_size,
                                        svc.batch_wait_ms / 1000,
                                        self.settings.limits.max_queued_analyses,
                                        self.metrics.observe_batch, svc.batch_in_flight)
            self.batcher.start()
            self.components[VISION] = OK
        log.info("loaded in %.1f s: %s", time.perf_counter() - start, self.components)

    def _load(self) -> None:
        try:
            self.pipeline = Pipeline.from_settings(self.settings, citations=True)
        except Exception as exc:  # any failure leaves the service alive and not ready
            log.exception("the vision model did not load")
            self.components[VISION] = f"unavailable: {exc}"
            self.components[RETRIEVAL] = "unavailable: the pipeline did not load"
            return
        self.searcher = self.pipeline.searcher
        if self.searcher is None:
            note = self.pipeline.retrieval_note or "not configured"
            self.components[RETRIEVAL] = (
                "unavailable: " + note.removeprefix("literature retrieval unavailable: "))
            return
        try:
            self._warm(self.pipeline)
        except (IndexUnusableError, DataError, OSError) as exc:
            log.exception("the literature searcher failed its first search")
            self.searcher = None
            self.components[RETRIEVAL] = f"unavailable: {exc}"
            return
        self.components[RETRIEVAL] = OK

    @staticmethod
    def _warm(pipeline: Pipeline) -> None:
        """Load the embedder and search each citation query once, now, so that no request
        waits for either (and the pipeline never touches the searcher again)."""
        if pipeline.searcher is not None and pipeline.searcher.embedder is not None:
            trace_queries(pipeline.searcher.embedder)  # every search's query, from now on
        pipeline.citation_snapshot()

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()

    @property
    def ready(self) -> bool:
        return all(state == OK for name, state in self.components.items()
                   if name not in self.optional)

    # -- analyses ---------------------------------------------------------------------

    def _analyze_batch(self, jobs: list[Job]) -> list[Analysis]:
        assert self.pipeline is not None
        return self.pipeline.analyze_many([image for image, _ in jobs],
                                          [context for _, context in jobs])

    async def analyze(self, image: bytes, form: AnalyzeForm | None = None) -> Analysis:
        """One image (+ its context form) through the micro-batcher, which every analysis
        of the service shares (``/v1/analyze`` and the chat's images): one queue, one cap
        (``max_queued_analyses``, 503 ``busy`` beyond); counts the outcome."""
        if self.batcher is None:
            raise NotReadyError(f"the vision model is {self.components[VISION]}")
        try:
            context = form.to_context() if form is not None else Context()
            analysis = await self.batcher.submit((image, context))
        except (ImageInputError, InvalidContextError):
            self.metrics.analyses.labels("rejected").inc()
            raise
        except ServiceError:
            raise
        except Exception:
            self.metrics.analyses.labels("failed").inc()
            raise
        self.metrics.analyses.labels(
            "in_scope" if analysis.diagnosis.in_scope else "out_of_scope").inc()
        return analysis

    # -- search -----------------------------------------------------------------------

    def search(self, query: str, k: int, mode: Mode | None, sources: Sequence[str] | None,
               years: tuple[int | None, int | None]) -> list[Hit]:
        """Literature hits (blocking: call from a worker thread)."""
        if self.searcher is None:
            state = self.components[RETRIEVAL]
            raise RetrievalUnavailableError(
                "the literature index is still loading: retry shortly" if state == LOADING
                else f"literature search is {state}")
        start = time.perf_counter()
        with self.search_lock:
            hits = self.searcher.search(query, k, mode, sources, years)
        self.metrics.inference.labels("search").observe(time.perf_counter() - start)
        return hits

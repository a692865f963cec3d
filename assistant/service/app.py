"""The FastAPI application: built by ``create_app``, served by uvicorn (``assistant serve``).

The lifespan starts loading the models and the index in the background (``Services``):
``/healthz`` answers at once, ``/readyz`` is 503 until every required component is "ok".
Middleware, outermost first: metrics (counts everything, refusals too), CORS, the audit
log, API keys (401), the per-key or per-client rate limit (429), the body size limit (413).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import APIRouter, FastAPI, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from assistant import __version__
from assistant.config import Settings, get_settings
from assistant.imaging import read_image
from assistant.security import study_hash
from assistant.service import analyze, audit, batches, chat, page, reports, search
from assistant.service.access import install_access
from assistant.service.body_limit import BodyLimitMiddleware
from assistant.service.deps import SettingsDep, settings_dep
from assistant.service.errors import install_error_handlers
from assistant.service.head import HeadAsGetMiddleware
from assistant.service.json_body import JSONRoute
from assistant.service.metrics import CONTENT_TYPE_LATEST, Metrics, MetricsMiddleware
from assistant.service.rate_limit import RateLimitMiddleware
from assistant.service.schemas import Health, ImageInfo, Readiness
from assistant.service.state import Services

__all__ = ["SettingsDep", "create_app", "settings_dep"]

log = logging.getLogger(__name__)

# Room for the multipart envelope around a file of the maximum allowed size.
_MULTIPART_SLACK = 64 * 1024

router = APIRouter(route_class=JSONRoute)


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Readiness)
async def readyz(request: Request, response: Response) -> Readiness:
    components: dict[str, str] = request.app.state.components
    optional: set[str] = request.app.state.optional_components
    ready = bool(request.app.state.ready) and all(
        state == "ok" for name, state in components.items() if name not in optional)
    loading = any(state == "loading" for state in components.values())
    response.status_code = 200 if ready else 503
    return Readiness(status="ready" if ready else ("starting" if loading else "not ready"),
                     version=__version__, components=dict(components),
                     optional=sorted(optional))


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    registry: Metrics = request.app.state.metrics
    return Response(registry.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/images/inspect", response_model=ImageInfo)
async def inspect_image(request: Request, file: UploadFile, settings: SettingsDep) -> ImageInfo:
    """Read an uploaded PNG, JPEG or DICOM and describe it (no patient data is returned)."""
    data = await file.read()
    image = await run_in_threadpool(read_image, data, settings.limits)
    pipeline = request.app.state.services.pipeline
    if image.study_uid and pipeline is not None and pipeline.study_key is not None:
        audit.note(request, study_uid_hash=study_hash(pipeline.study_key, image.study_uid))
    return ImageInfo(**image.meta.to_dict(), mean=float(image.pixels.mean()),
                     std=float(image.pixels.std()))


class _NoQueryStrings(logging.Filter):
    """uvicorn's access log without query strings: a search query is free text that a
    clinician typed and may name a patient (the audit log keeps none either)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True


_NO_QUERY_STRINGS = _NoQueryStrings()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Models and the index load once, in the background; /readyz says when.
        services: Services = app.state.services
        # (uvicorn has configured its loggers by now: the filter stays)
        logging.getLogger("uvicorn.access").addFilter(_NO_QUERY_STRINGS)
        loading = asyncio.create_task(services.start(), name="load-components")
        chat.open_chat(app, settings)
        batches.open_batches(app, settings)
        app.state.ready = True
        log.info("assistant %s started (%s); loading components", __version__,
                 settings.environment)
        yield
        app.state.ready = False
        await asyncio.to_thread(batches.close_batches, app)  # batches in flight finish
        loading.cancel()
        with suppress(asyncio.CancelledError):
            await loading
        await services.stop()
        await reports.close_reports(app)
        chat.close_chat(app)
        audit_log.close()

    app = FastAPI(
        title="Medical imaging assistant",
        version=__version__,
        lifespan=lifespan,
    )
    metrics_registry = Metrics()
    services = Services(settings, metrics_registry)
    app.add_middleware(BodyLimitMiddleware,
                       max_bytes=settings.limits.max_upload_bytes + _MULTIPART_SLACK,
                       per_path={"/v1/batches": settings.batch.max_zip_bytes + _MULTIPART_SLACK},
                       stall_s=settings.limits.body_stall_s)
    if settings.limits.requests_per_minute > 0:
        app.add_middleware(RateLimitMiddleware, per_minute=settings.limits.requests_per_minute,
                           burst=settings.limits.rate_burst)
    audit_log = install_access(app, settings)  # API keys, audit log, CORS
    app.add_middleware(MetricsMiddleware, metrics=metrics_registry)
    app.add_middleware(HeadAsGetMiddleware)  # outermost: HEAD is a GET for all inside
    app.state.settings = settings
    app.state.metrics = metrics_registry
    app.state.services = services
    app.state.ready = False
    app.state.components = services.components  # other components may add their state
    app.state.optional_components = services.optional
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(analyze.router)
    app.include_router(search.router)
    app.include_router(chat.router)
    app.include_router(batches.router)
    app.include_router(reports.router)
    app.include_router(page.router)
    return app

"""The FastAPI application: built by ``create_app``, served by uvicorn (``assistant serve``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from assistant import __version__
from assistant.config import Settings, get_settings
from assistant.imaging import read_image
from assistant.service.body_limit import BodyLimitMiddleware
from assistant.service.errors import install_error_handlers
from assistant.service.schemas import Health, ImageInfo, Readiness

log = logging.getLogger(__name__)

# Room for the multipart envelope around a file of the maximum allowed size.
_MULTIPART_SLACK = 64 * 1024


def settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(settings_dep)]

router = APIRouter()


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Readiness)
async def readyz(request: Request, response: Response) -> Readiness:
    components: dict[str, str] = request.app.state.components
    ready = bool(request.app.state.ready) and all(v == "ok" for v in components.values())
    response.status_code = 200 if ready else 503
    return Readiness(status="ready" if ready else "starting", version=__version__,
                     components=components)


@router.post("/v1/images/inspect", response_model=ImageInfo)
async def inspect_image(file: UploadFile, settings: SettingsDep) -> ImageInfo:
    """Read an uploaded PNG, JPEG or DICOM and describe it (no patient data is returned)."""
    data = await file.read()
    image = await run_in_threadpool(read_image, data, settings.limits)
    return ImageInfo(**image.meta.to_dict(), mean=float(image.pixels.mean()),
                     std=float(image.pixels.std()))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Models and indexes load here, once, as the later components arrive.
        app.state.components = {}
        app.state.ready = True
        log.info("assistant %s ready (%s)", __version__, settings.environment)
        yield
        app.state.ready = False

    app = FastAPI(
        title="Medical imaging assistant",
        version=__version__,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware,
                       max_bytes=settings.limits.max_upload_bytes + _MULTIPART_SLACK)
    app.state.settings = settings
    app.state.ready = False
    app.state.components = {}
    install_error_handlers(app)
    app.include_router(router)
    return app

"""Response schemas of the HTTP API (input schemas live beside them as they arrive)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from assistant import DRAFT_NOTICE


class Health(BaseModel):
    status: str = "alive"


class Readiness(BaseModel):
    status: str
    version: str
    components: dict[str, str] = Field(
        description="each loaded component and its state ('ok' or why not)"
    )


class ImageInfo(BaseModel):
    """What the reader made of an upload: non-identifying metadata and pixel statistics."""

    format: str
    width: int
    height: int
    channels: int
    bit_depth: int
    modality: str | None = None
    body_part: str | None = None
    photometric: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    frame_count: int = 1
    frame_index: int = 0
    transfer_syntax: str | None = None
    window: tuple[float, float] | None = None
    mean: float = Field(description="mean display value of the returned frame, in [0, 1]")
    std: float
    notice: str = DRAFT_NOTICE

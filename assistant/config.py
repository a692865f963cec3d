"""One settings object for the whole project, read from ``ASSISTANT_*`` environment variables.

Nested sub-configs are set with a double underscore, e.g.
``ASSISTANT_LIMITS__MAX_UPLOAD_BYTES=1048576``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseModel):
    """Input limits, each enforced before the expensive work it protects."""

    max_upload_bytes: int = Field(32 * 1024 * 1024, gt=0, description="request body / file size")
    max_pixels: int = Field(
        40_000_000, gt=0, description="rows x columns of one decoded frame (checked from headers)"
    )
    max_frames: int = Field(2_000, gt=0, description="frames in a multi-frame DICOM")


class ServiceConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)


class Settings(BaseSettings):
    """Everything configurable, in one validated place."""

    model_config = SettingsConfigDict(
        env_prefix="ASSISTANT_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path(".data")
    index_dir: Path = Path("indexes")
    weights_dir: Path = Path(__file__).parent / "weights"  # release weights ship in the package
    vision_checkpoint: Path | None = None
    report_checkpoint: Path | None = None
    log_level: str = "INFO"
    limits: Limits = Limits()
    service: ServiceConfig = ServiceConfig()

    @model_validator(mode="after")
    def _paths_absolute(self) -> Settings:
        # Resolve once so that a later chdir cannot move the data folder.
        self.data_dir = self.data_dir.expanduser().resolve()
        self.index_dir = self.index_dir.expanduser().resolve()
        self.weights_dir = self.weights_dir.expanduser().resolve()
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings`` instead)."""
    return Settings()

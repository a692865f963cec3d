"""One settings object for the whole project, read from ``ASSISTANT_*`` environment variables.

Nested sub-configs are set with a double underscore, e.g.
``ASSISTANT_LIMITS__MAX_UPLOAD_BYTES=1048576``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from assistant.security import hash_api_keys


class Limits(BaseModel):
    """Input limits, each enforced before the expensive work it protects."""

    max_upload_bytes: int = Field(32 * 1024 * 1024, gt=0, description="request body / file size")
    max_pixels: int = Field(
        40_000_000, gt=0, description="rows x columns of one decoded frame (checked from headers)"
    )
    max_frames: int = Field(2_000, gt=0, description="frames in a multi-frame DICOM")
    max_batch_frame_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="decoded frames one model batch holds at once; "
        "a batch of larger images runs in parts (at least one image each)")
    max_inflated_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="a deflated DICOM data set, inflated (checked "
                                             "before parsing)")
    requests_per_minute: int = Field(
        600, ge=0, description="sustained /v1/ requests per client address (429 beyond); 0: off"
    )
    rate_burst: int = Field(
        60, gt=0, description="requests a client may send at once before the rate applies"
    )
    max_queued_analyses: int = Field(
        64, gt=0, description="analyses waiting for the model at once (503 beyond)"
    )
    max_chat_messages: int = Field(
        200, gt=0, description="messages in one chat request (413 beyond)")
    max_chat_message_chars: int = Field(
        20_000, gt=0, description="characters of text in one chat message (413 beyond)")
    body_stall_s: float = Field(
        30.0, gt=0, description="seconds a request body may send nothing before the request "
                                "is answered 408 (a stalled upload holds no connection, nor "
                                "a shutdown, for longer)")


class ServiceConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    require_index: bool = Field(
        True, description="not ready (503 on /readyz) until the literature index is loaded"
    )
    batch_max_size: int = Field(
        4, gt=0, le=256, description="images in one model batch at most: small batches share "
        "the queued images between the batches in flight (the model is a fifth of a study's "
        "work, so a larger batch saves little)")
    report_batch_max_size: int = Field(
        16, gt=0, le=256, description="report drafts (POST /v1/reports/draft) in one decoder "
        "batch at most: beam search gains from wide batches")
    batch_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="how long the first image of a batch waits for others"
    )
    batch_in_flight: int = Field(
        2, ge=1, le=8, description="model batches run at once (worker threads): a second "
        "batch runs while the first does its per-image work")
    torch_threads: int = Field(
        1, ge=0, le=64, description="torch intra-op threads in the service; 0: torch's "
        "default (one per core). One per batch in flight kept both cores busiest here")
    malloc_mmap_threshold: int = Field(
        64 * 1024 * 1024, ge=0, le=2**30, description="glibc: blocks from this size up are "
        "mapped (zero-filled anew each time) and returned when freed; smaller ones are "
        "reused from the heap; 0: glibc's default")
    malloc_trim_threshold: int = Field(
        32 * 1024 * 1024, ge=0, le=2**30, description="glibc: free memory at the heap's top "
        "kept for reuse up to this size before it is returned to the system; 0: glibc's "
        "default")
    malloc_arena_max: int = Field(2, ge=0, le=64, description="glibc malloc arenas; 0: default")
    shutdown_timeout_s: int = Field(
        30, gt=0, description="on SIGTERM, how long open requests may take to finish "
                                "before the service closes them and stops")


class ChatConfig(BaseModel):
    """The chat API (``POST /v1/chat/completions``) and its conversation store."""

    db_path: Path | None = Field(
        None, description="SQLite conversation store; None: <data_dir>/chat.sqlite3")
    citations: int = Field(3, ge=1, le=10, description="passages a knowledge answer cites, at most")


class SecurityConfig(BaseModel):
    """Who may call the service from where, the study-UID hash key and the audit log.
    (The API keys themselves are ``Settings.api_keys``: ``ASSISTANT_API_KEYS``.)"""

    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed to call the API from a browser "
                                          "(CORS); empty: none")
    study_hash_secret: SecretStr | None = Field(
        None, description="key of the HMAC of DICOM StudyInstanceUIDs; None: a random key "
                          "generated once into study_hash_key_file")
    study_hash_key_file: Path | None = Field(
        None, description="where the generated HMAC key is kept (mode 0600); None: "
                          "<data_dir>/study-hash.key")
    audit_log: Path | None = Field(
        None, description="JSON lines, one per request; None: <data_dir>/audit.jsonl")


class BatchConfig(BaseModel):
    """Batch drafting (``assistant draft``, ``/v1/batches``) and its SQLite store."""

    db_path: Path | None = Field(
        None, description="SQLite store of drafted studies and jobs; None: "
                          "<data_dir>/batches.sqlite3")
    upload_dir: Path | None = Field(
        None, description="where uploaded zips are unpacked while their job runs; None: "
                          "<data_dir>/batch-uploads")
    batch_size: int = Field(8, ge=1, le=256, description="images in one model batch")
    workers: int = Field(
        0, ge=0, le=64, description="model batches in flight at once; 0: twice the CPU count, "
                                    "at most 8")
    max_files: int = Field(10_000, gt=0, description="studies in one HTTP batch job at most")
    malloc_mmap_threshold: int = Field(
        64 * 1024 * 1024, ge=0, le=2**30, description="assistant draft, glibc: blocks from "
        "this size up are mapped (zero-filled anew each time); smaller ones are reused from "
        "the heap; 0: glibc's default")
    malloc_trim_threshold: int = Field(
        256 * 1024 * 1024, ge=0, le=2**30, description="assistant draft, glibc: free heap "
        "kept for the next batch up to this size; 0: glibc's default")
    allowed_roots: list[Path] = Field(
        default_factory=list, description="server folders a job may read (POST /v1/batches "
                                          "with a folder); empty: none")
    max_zip_bytes: int = Field(256 * 1024 * 1024, gt=0, description="uploaded zip size")
    max_zip_members: int = Field(10_000, gt=0, description="entries in an uploaded zip")
    max_zip_uncompressed_bytes: int = Field(
        1024 * 1024 * 1024, gt=0, description="all entries of an uploaded zip, unpacked")


class Settings(BaseSettings):
    """Everything configurable, in one validated place."""

    # Errors never echo the input: it may be an API key or a secret.
    model_config = SettingsConfigDict(
        env_prefix="ASSISTANT_", env_nested_delimiter="__", extra="ignore",
        hide_input_in_errors=True,
    )

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path(".data")
    index_dir: Path = Path("indexes")
    weights_dir: Path = Path(__file__).parent / "weights"  # release weights ship in the package
    vision_checkpoint: Path | None = None
    report_checkpoint: Path | None = None  # the report decoder, when not the release
    # Literature queries go through the committed query adapter (weights_dir) when it is
    # there and made for the embedder in use; False: the embedder's vectors unchanged.
    query_adapter: bool = True
    # Hybrid literature search re-orders its candidates with the committed re-ranker
    # (weights_dir) when it is there and made for this embedder, adapter and fusion.
    reranker: bool = True
    # The traced query encoder's precision (retrieval/embed.py): "auto" is bfloat16 on CPUs
    # with bfloat16 instructions, float32 elsewhere.
    query_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    limits: Limits = Limits()
    service: ServiceConfig = ServiceConfig()
    chat: ChatConfig = ChatConfig()
    batch: BatchConfig = BatchConfig()
    security: SecurityConfig = SecurityConfig()
    # ASSISTANT_API_KEYS: comma- or space-separated keys, or "sha256:<hex>" digests of them;
    # only the digests are kept. Every /v1/ request then needs one (Authorization: Bearer).
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        name = value.strip().upper()
        return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(name, name)  # logging's aliases

    @field_validator("api_keys", mode="before")
    @classmethod
    def _hash_keys(cls, value: object) -> tuple[str, ...]:
        return hash_api_keys(value)

    @model_validator(mode="after")
    def _paths_absolute(self) -> Settings:
        # Resolve once so that a later chdir cannot move the data folder.
        self.data_dir = self.data_dir.expanduser().resolve()
        self.index_dir = self.index_dir.expanduser().resolve()
        self.weights_dir = self.weights_dir.expanduser().resolve()
        db = self.chat.db_path or self.data_dir / "chat.sqlite3"
        self.chat = self.chat.model_copy(update={"db_path": db.expanduser().resolve()})
        b = self.batch
        self.batch = b.model_copy(update={
            "db_path": (b.db_path or self.data_dir / "batches.sqlite3").expanduser().resolve(),
            "upload_dir": (b.upload_dir or self.data_dir / "batch-uploads").expanduser().resolve(),
            "allowed_roots": [r.expanduser().resolve() for r in b.allowed_roots]})
        sec = self.security
        self.security = sec.model_copy(update={
            "study_hash_key_file": (sec.study_hash_key_file or self.data_dir / "study-hash.key"
                                    ).expanduser().resolve(),
            "audit_log": (sec.audit_log or self.data_dir / "audit.jsonl").expanduser().resolve()})
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings`` instead)."""
    return Settings()

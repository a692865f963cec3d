"""Input and response schemas of the HTTP API.

``/v1/analyze`` answers ``Analysis.to_dict()`` (or FHIR JSON) as it is: the pipeline owns
that shape, and the route does not copy it into a second model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from assistant import DRAFT_NOTICE
from assistant.report import Context
from assistant.service.errors import InvalidContextError
from assistant.service.json_body import parse_json

CONTEXT_KEYS = ("indication", "age", "sex")


class Health(BaseModel):
    status: str = "alive"


class Readiness(BaseModel):
    status: str
    version: str
    components: dict[str, str] = Field(
        description="each loaded component and its state ('ok', 'loading' or why not)"
    )
    optional: list[str] = Field(
        default_factory=list, description="components whose state does not affect readiness"
    )


@dataclass(frozen=True)
class AnalyzeForm:
    """The clinical context of ``POST /v1/analyze``, as form fields (``indication``,
    ``age``, ``sex``) or one JSON object in the ``context`` field, not both."""

    indication: str | None = None
    age: str | None = None
    sex: str | None = None
    context: str | None = None  # JSON: {"indication": ..., "age": ..., "sex": ...}

    def _fields(self) -> dict[str, Any]:
        fields = {"indication": self.indication, "age": self.age, "sex": self.sex}
        given = {k: v for k, v in fields.items() if v not in (None, "")}
        if self.context is None or not self.context.strip():
            return given
        if given:
            raise InvalidContextError("give the context either as the fields indication, age "
                                      "and sex or as the JSON field context, not both")
        try:
            raw = parse_json(self.context)
        except json.JSONDecodeError as exc:
            raise InvalidContextError(f"context is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidContextError("context must be a JSON object with any of "
                                      f"{', '.join(CONTEXT_KEYS)}")
        if unknown := sorted(set(raw) - set(CONTEXT_KEYS)):
            raise InvalidContextError(f"context has unknown keys {unknown}; known: "
                                      f"{', '.join(CONTEXT_KEYS)}")
        return raw

    def to_context(self) -> Context:
        """The checked ``Context``; ``InvalidContextError`` says what was wrong."""
        try:
            return Context.make(**self._fields())
        except ValueError as exc:
            raise InvalidContextError(str(exc)) from None


class SearchHit(BaseModel):
    """One literature passage found, with its citation."""

    id: str = Field(description="passage id, e.g. 'PMID:123#0'")
    doc_id: str
    source: str = Field(description="medline, hpo or icd10cm")
    title: str
    snippet: str = Field(description="the one or two sentences that best answer the query")
    score: float = Field(description="of the mode: cosine, BM25, the fused score, or "
                         "(re-ranked hybrid) the re-ranker's probability")
    citation: str
    url: str
    year: int | None = None


class SearchResponse(BaseModel):
    query: str
    k: int
    mode: str
    hits: list[SearchHit]


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
    orientation: int = Field(1, description="a JPEG's EXIF Orientation (1-8), applied to the "
                             "pixels; 1: rows and columns as stored")
    mean: float = Field(description="mean display value of the returned frame, in [0, 1]")
    std: float
    notice: str = DRAFT_NOTICE

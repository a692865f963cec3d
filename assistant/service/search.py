"""``GET /v1/search``: literature passages for a query, with citations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from assistant.retrieval.corpus import SOURCES
from assistant.retrieval.search import Mode, check_query
from assistant.service.audit import note
from assistant.service.deps import ServicesDep
from assistant.service.errors import InvalidQueryError, given_twice, unknown_names
from assistant.service.json_body import JSONRoute
from assistant.service.schemas import SearchHit, SearchResponse

router = APIRouter(tags=["search"], route_class=JSONRoute)

MAX_K = 50


SINGLE_PARAMS = ("q", "k", "mode", "year_from", "year_to")
PARAMS = (*SINGLE_PARAMS, "source")


def _checked(q: str | None, sources: list[str] | None, year_from: int | None,
             year_to: int | None) -> str:
    try:
        return check_query(q, sources, year_from, year_to)
    except ValueError as exc:
        raise InvalidQueryError(str(exc)) from None


@router.get("/v1/search", response_model=SearchResponse,
            responses={422: {"description": "empty or invalid query"},
                       429: {"description": "rate limited"},
                       503: {"description": "the literature index is unavailable"}})
async def search(
    request: Request,
    services: ServicesDep,
    q: Annotated[str | None, Query(description="what to search for")] = None,
    k: Annotated[int, Query(ge=1, le=MAX_K, description="hits to return")] = 10,
    mode: Annotated[Mode, Query(description="dense, bm25 or hybrid (fused)")] = "hybrid",
    source: Annotated[list[str] | None, Query(
        description=f"keep only these sources ({', '.join(SOURCES)}); repeatable")] = None,
    year_from: Annotated[int | None, Query(ge=0, le=9999)] = None,
    year_to: Annotated[int | None, Query(ge=0, le=9999)] = None,
) -> SearchResponse:
    """The ``k`` best passages, at most one per document, best first. A year bound leaves
    out undated entries (HPO terms, ICD-10-CM codes)."""
    if repeated := given_twice(request.query_params, SINGLE_PARAMS):
        raise InvalidQueryError(f"given more than once: {repeated}; repeat only source")
    if unknown := unknown_names(request.query_params, PARAMS):
        raise InvalidQueryError(f"unknown query parameter(s): {unknown}; /v1/search reads "
                                f"{', '.join(PARAMS)}")
    query = _checked(q, source, year_from, year_to)
    years = (year_from, year_to)
    hits = await run_in_threadpool(services.search, query, k, mode, source, years)
    if services.pipeline is not None:
        note(request, models=[m.to_dict() for m in services.pipeline.models
                              if m.role.startswith("retrieval")])
    return SearchResponse(query=query, k=k, mode=mode,
                          hits=[SearchHit(**hit.to_dict()) for hit in hits])

"""``POST /v1/reports/draft``: a chest X-ray report drafted from findings (and the
indication) by the IU X-ray report decoder.

The findings are what an image encoder or a reader states: MeSH-style codes such as
``Cardiomegaly/mild`` or ``Opacity/lung/base/left``, each with a probability. The answer
says which findings its text asserts (the negation-aware matcher) beside the ones it was
given, so a clinician sees at once any finding the draft adds or leaves out. The decoder
loads on the first request (about two seconds: the weights, and the training reports a
retrieval decoder reads beside the findings, from the fetched IU X-ray archive).
"""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from assistant.data.manifest import DataError
from assistant.report.decoder.bundle import Drafter, ReportCheckpointError
from assistant.report.decoder.commands import release_report_path, report_drafter
from assistant.report.decoder.data import Finding
from assistant.report.decoder.findings import NORMAL_CLASS, asserted, code_classes
from assistant.report.structured import DRAFT_NOTICE
from assistant.service.deps import SettingsDep
from assistant.service.errors import InvalidContextError, NotReadyError

router = APIRouter(tags=["reports"])

MAX_FINDINGS = 16
_lock = threading.Lock()


class FindingIn(BaseModel):
    code: Annotated[str, Field(min_length=1, max_length=200,
                               examples=["Opacity/lung/base/left"])]
    probability: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0


class DraftRequest(BaseModel):
    findings: Annotated[list[FindingIn], Field(min_length=1, max_length=MAX_FINDINGS,
                                               description="`normal` when nothing was found")]
    indication: Annotated[str | None, Field(max_length=500)] = None


class DraftResponse(BaseModel):
    draft: bool = True
    notice: str = DRAFT_NOTICE
    text: str
    asserted_findings: list[str]
    given_findings: list[str]
    added: list[str]  # findings the text asserts that were not given
    missing: list[str]  # given findings the text does not assert
    model: dict[str, str]


def _drafter(request: Request, settings: SettingsDep) -> Drafter:
    drafter: Drafter | None = getattr(request.app.state, "report_drafter", None)
    if drafter is not None:
        return drafter
    with _lock:
        drafter = getattr(request.app.state, "report_drafter", None)
        if drafter is None:
            try:
                drafter = report_drafter(settings, release_report_path(settings))
            except (ReportCheckpointError, DataError) as exc:
                raise NotReadyError(f"the report decoder is unavailable: {exc}") from exc
            request.app.state.report_drafter = drafter
    return drafter


@router.post("/v1/reports/draft", response_model=DraftResponse,
             responses={422: {"description": "invalid findings"},
                        503: {"description": "the report decoder is unavailable"}})
async def draft(body: DraftRequest, request: Request, settings: SettingsDep) -> DraftResponse:
    """Draft FINDINGS and IMPRESSION text from findings (+ indication)."""
    try:
        findings = tuple(Finding.from_code(f.code, f.probability) for f in body.findings)
    except ValueError as exc:
        raise InvalidContextError(str(exc)) from exc
    drafter = await run_in_threadpool(_drafter, request, settings)
    text = (await run_in_threadpool(drafter.draft, [findings], [body.indication]))[0]
    got, want = asserted(text), code_classes(findings)
    bundle = drafter.bundle
    return DraftResponse(
        text=text, asserted_findings=sorted(got), given_findings=sorted(want),
        added=sorted(got - want - {NORMAL_CLASS}), missing=sorted(want - got - {NORMAL_CLASS}),
        model={"name": bundle.name, "sha256": bundle.sha256,
               "trained_on": str(bundle.provenance.get("data_source", "not recorded"))})

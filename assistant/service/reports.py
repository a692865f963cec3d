"""``POST /v1/reports/draft``: a chest X-ray report drafted from findings (and the
indication) by the IU X-ray report decoder.

The findings are what an image encoder or a reader states: MeSH-style codes such as
``Cardiomegaly/mild`` or ``Opacity/lung/base/left``, each with a probability. A code whose
term or modifier the decoder never saw in training is refused (422, naming it; ``GET
/v1/reports/vocabulary`` lists what it knows), rather than drafted as if it were absent.
The released decoder was trained on codes that NLM's indexers assigned, which carry no
probability, so it cannot weigh one: a finding with a probability below
``STATED_PROBABILITY`` is left out of the conditioning and listed in ``not_stated``. The answer
says which findings its text asserts (the negation-aware matcher) beside the ones it was
given, so a clinician sees at once any finding the draft adds or leaves out. With
``"complete": true`` (or a decoder whose decoding has ``complete`` on) the draft is also
completed against the findings (``complete.py``), and the answer names every sentence
borrowed from a training report, with its source, and every sentence dropped. The decoder
loads on the first request (about two seconds: the weights, and the training reports a
retrieval decoder reads beside the findings, from the fetched IU X-ray archive).

Requests that overlap share decoder batches (the service's micro-batcher, with its own
batch size, ``report_batch_max_size``, and the analyses' wait and batches in flight): a
study's report does not depend on the others in its batch, and a batch of studies drafts
several times faster than the same studies one at a time (``scripts/bench_report.py``).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.config import Settings
from assistant.data.manifest import DataError
from assistant.report import Context
from assistant.report.decoder.bundle import Drafter, ReportCheckpointError
from assistant.report.decoder.commands import release_report_path, report_drafter
from assistant.report.decoder.complete import sentences
from assistant.report.decoder.data import NORMAL, Finding
from assistant.report.decoder.findings import (
    NORMAL_CLASS,
    asserted,
    code_classes,
    finding_class,
    mentions,
)
from assistant.service.batching import MicroBatcher
from assistant.service.deps import SettingsDep
from assistant.service.errors import InvalidContextError, NotReadyError
from assistant.service.json_body import JSONRoute, media_type

router = APIRouter(tags=["reports"], route_class=JSONRoute)

MAX_FINDINGS = 16
# Modifiers that grade a finding rather than place it ("Cardiomegaly/mild" and "/severe" are
# one finding stated twice; "Opacity/lung/base/left" and "/apex/right" are two).
SEVERITIES = frozenset({"mild", "moderate", "severe", "minimal", "marked", "borderline",
                        "small", "large"})
# What every draft says: it is drafted from findings a reader or an encoder gave, not read
# off an image.
DRAFT_NOTICE = ("Draft for a clinician to verify: produced by software from the findings "
                "given (no image was read), it is not a diagnosis.")
STATED_PROBABILITY = 0.5  # a finding below this is not stated to the decoder
_lock = threading.Lock()
DraftJob = tuple[tuple[Finding, ...], str | None]  # one study's findings and indication


class FindingIn(BaseModel):
    # a misspelt field ("probabilty") or "0.9" as a string is refused, never read as unset
    model_config = ConfigDict(extra="forbid")

    code: Annotated[str, Field(min_length=1, max_length=200,
                               examples=["Opacity/lung/base/left"])]
    probability: Annotated[float, Field(ge=0.0, le=1.0, strict=True)] = 1.0


class DraftRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # "complet": true is not silently ignored

    findings: Annotated[list[FindingIn], Field(
        min_length=1, max_length=MAX_FINDINGS,
        description="`normal` when nothing was found; a finding with a probability below "
                    f"{STATED_PROBABILITY} is left out (`not_stated`)")]
    indication: Annotated[str | None, Field(max_length=500)] = None
    complete: Annotated[bool | None, Field(
        strict=True,
        description="Complete the draft against the findings (drop sentences that assert "
                    "a finding not given or deny one given; borrow a backed sentence from "
                    "a training report for each one left out). Default: the decoder's "
                    "setting.")] = None


class BorrowedSentence(BaseModel):
    sentence: str
    finding: str  # the finding class it states
    source_uid: str  # the IU X-ray training report it is taken from


class DraftResponse(BaseModel):
    draft: bool = True
    notice: str = DRAFT_NOTICE
    text: str
    asserted_findings: list[str]
    given_findings: list[str]
    # codes given with a probability below STATED_PROBABILITY: not given to the decoder
    not_stated: list[str]
    added: list[str]  # findings the text asserts that were not given
    missing: list[str]  # given findings the text does not assert
    denied: list[str] = Field(description=(
        "Given findings that a sentence of the text denies (\"There is no pneumothorax\", "
        "or a normal statement such as \"the heart is normal in size\" for cardiomegaly), "
        "whether or not another sentence asserts them: the draft contradicts itself or the "
        "findings there. Completion (`complete`) drops such sentences, unless every "
        "sentence does. Like `missing`, it compares finding classes only: \"No large "
        "pleural effusion.\" beside a given small one is counted as denying it."))
    unchecked: list[str] = Field(description=(
        "Given codes whose term the findings matcher has no class for: the text is not "
        "checked for them, and neither `missing` nor `given_findings` can name them. The "
        "matcher compares finding classes only: a code's location, severity or size "
        "(\"/severe\", \"/large\") is never checked against the text's words."))
    # The text is word for word a training report (another patient's, de-identified) that
    # the decoder read or chose, because it agreed best with the findings.
    from_training_report: bool
    # Completion (``complete.py``): sentences of other patients' de-identified training
    # reports added for a given finding the decoded text left out, each with its source,
    # and the decoded sentences removed because they asserted a finding not given.
    borrowed_sentences: list[BorrowedSentence]
    dropped_sentences: list[str]
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


def _batcher(request: Request, settings: Settings, drafter: Drafter,
             ) -> MicroBatcher[DraftJob, str]:
    """The app's report micro-batcher, started on first use (on the event loop: no await
    between the look-up and the start, so only one is ever made)."""
    batcher: MicroBatcher[DraftJob, str] | None = getattr(request.app.state,
                                                          "report_batcher", None)
    if batcher is None:
        svc, metrics = settings.service, request.app.state.metrics

        def run(jobs: list[DraftJob]) -> list[str]:  # completed per request, after
            return drafter.draft([f for f, _ in jobs], [ind for _, ind in jobs], None,
                                 replace(drafter.bundle.decode, complete=False))

        batcher = MicroBatcher(run, svc.report_batch_max_size, svc.batch_wait_ms / 1000,
                               settings.limits.max_queued_analyses,
                               metrics.observe_report_batch, svc.batch_in_flight,
                               what="report drafts")
        batcher.start()
        request.app.state.report_batcher = batcher
    return batcher


async def close_reports(app: FastAPI) -> None:
    """At shutdown: stop the report micro-batcher (drafts still queued get 503)."""
    batcher: MicroBatcher[DraftJob, str] | None = getattr(app.state, "report_batcher", None)
    if batcher is not None:
        await batcher.stop()


def _json_request(request: Request) -> None:
    """415 for a body that is not sent as JSON (run before the body is read as a request: a
    form, a text body or one without a Content-Type, which FastAPI does not read as JSON,
    had been told "Input should be a valid dictionary")."""
    media = media_type(request)
    if media != "application/json" and not media.endswith("+json"):
        raise StarletteHTTPException(415, "send the draft request as JSON (Content-Type: "
                                          f"application/json), not {media or 'none'}")


@router.post("/v1/reports/draft", response_model=DraftResponse,
             dependencies=[Depends(_json_request)],
             responses={415: {"description": "the body is not JSON"},
                        422: {"description": "invalid findings"},
                        503: {"description": "the report decoder is unavailable"}})
async def draft(body: DraftRequest, request: Request, settings: SettingsDep) -> DraftResponse:
    """Draft FINDINGS and IMPRESSION text from findings (+ indication)."""
    try:
        given = tuple(Finding.from_code(f.code, f.probability) for f in body.findings)
        indication = Context.make(indication=body.indication).indication
    except ValueError as exc:
        raise InvalidContextError(str(exc)) from exc
    drafter = await run_in_threadpool(_drafter, request, settings)
    unknown = [f"{f.code!r} ({', '.join(parts)})" for f in given
               if (parts := drafter.bundle.unknown_parts(f))]
    if unknown:
        raise InvalidContextError(
            f"finding codes the report decoder {drafter.bundle.name} was not trained on: "
            f"{'; '.join(unknown)}. GET /v1/reports/vocabulary lists the terms and modifiers "
            "it knows")
    findings = tuple(f for f in given if f.probability >= STATED_PROBABILITY)
    if not findings:
        raise InvalidContextError(
            f"no finding has a probability of at least {STATED_PROBABILITY}: give those "
            "the study shows, or `normal` when it shows none")
    _check_stated(given, findings)
    decode = drafter.bundle.decode
    if body.complete is not None:
        decode = replace(decode, complete=body.complete)
    if decode.complete and drafter.neighbours is None:
        raise InvalidContextError(f"complete: the report decoder {drafter.bundle.name} has "
                                  "no training reports to complete a draft from")
    chosen = await _batcher(request, settings, drafter).submit((findings, indication))
    report = await run_in_threadpool(drafter.finish, chosen, findings, decode, indication)
    text = report.text
    classed = [f for f in findings if finding_class(f) is not None]
    unchecked = [f.code for f in findings if finding_class(f) is None]
    # codes the matcher cannot read are not "normal": with none it can, nothing is given
    got, want = asserted(text), (code_classes(classed) if classed else set())
    denied = {c for part in sentences(text) for c in mentions(part)[1]} & want
    bundle = drafter.bundle
    return DraftResponse(
        text=text, asserted_findings=sorted(got), given_findings=sorted(want),
        not_stated=[f.code for f in given if f.probability < STATED_PROBABILITY],
        added=sorted(got - want - {NORMAL_CLASS}), missing=sorted(want - got - {NORMAL_CLASS}),
        denied=sorted(denied - {NORMAL_CLASS}),
        unchecked=unchecked,
        from_training_report=drafter.from_training_report(text, findings, indication),
        borrowed_sentences=[BorrowedSentence(**b.to_dict()) for b in report.borrowed],
        dropped_sentences=list(report.dropped),
        model={"name": bundle.name, "sha256": bundle.sha256,
               "trained_on": str(bundle.provenance.get("data_source", "not recorded"))})


def _check_stated(given: tuple[Finding, ...], stated: tuple[Finding, ...]) -> None:
    """422 for a code given twice (its probabilities could disagree: one stated, one not),
    and for `normal` stated beside a finding: no training report is coded so (the decoder
    had drafted "no pneumothorax" for Pneumothorax/right given with normal)."""
    seen: dict[str, str] = {}
    for f in given:
        key = f.code.lower()
        if key in seen:
            raise InvalidContextError(f"finding code {f.code!r} is given twice (as "
                                      f"{seen[key]!r} first): give each code once")
        seen[key] = f.code
    severities: dict[tuple[str, frozenset[str]], Finding] = {}
    for f in stated:  # one finding (term and place) stated with two severities
        place = frozenset(m for m in f.modifiers if m not in SEVERITIES)
        other = severities.setdefault((f.term.lower(), place), f)
        if other is not f and SEVERITIES.intersection(other.modifiers) != SEVERITIES.intersection(
                f.modifiers):
            raise InvalidContextError(f"finding codes {other.code!r} and {f.code!r} state one "
                                      "finding with two severities: give the one the study "
                                      "shows")
    normal = [f for f in stated if f.term.lower() == NORMAL]
    if normal and len(normal) < len(stated):
        others = ", ".join(repr(f.code) for f in stated if f.term.lower() != NORMAL)
        raise InvalidContextError(
            f"`normal` is stated (probability of at least {STATED_PROBABILITY}) beside "
            f"findings ({others}): a study is normal or has findings, and the decoder was "
            "trained on none coded both ways; give `normal` alone, or below "
            f"{STATED_PROBABILITY} beside findings")


class Vocabulary(BaseModel):
    terms: list[str]
    modifiers: list[str]
    model: dict[str, str]


@router.get("/v1/reports/vocabulary", response_model=Vocabulary,
            responses={503: {"description": "the report decoder is unavailable"}})
async def vocabulary(request: Request, settings: SettingsDep) -> Vocabulary:
    """The finding terms and modifiers the report decoder was trained with: a code of
    ``POST /v1/reports/draft`` is a term, then modifiers, joined by ``/`` (any case)."""
    drafter = await run_in_threadpool(_drafter, request, settings)
    known = drafter.bundle.vocabulary()
    return Vocabulary(terms=known["terms"], modifiers=known["modifiers"],
                      model={"name": drafter.bundle.name, "sha256": drafter.bundle.sha256})

"""``POST /v1/analyze``: one image (+ clinical context) -> the analysis, as the pipeline's
JSON or, with ``?format=fhir``, a FHIR R4B DiagnosticReport."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from assistant.fhir import FHIR_JSON, diagnostic_report_json
from assistant.service.audit import note
from assistant.service.deps import ServicesDep
from assistant.service.errors import InvalidRequestError, given_twice, unknown_names
from assistant.service.json_body import JSONRoute
from assistant.service.schemas import AnalyzeForm

router = APIRouter(tags=["analysis"], route_class=JSONRoute)
FORM_FIELDS = ("file", "indication", "age", "sex", "context")

_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "file too large, or too many pixels or frames"},
    415: {"description": "not a PNG, JPEG or DICOM"},
    422: {"description": "unreadable image, or invalid context"},
    429: {"description": "rate limited"},
    503: {"description": "not ready, or too many analyses waiting"},
}


@router.post("/v1/analyze", responses=_ERRORS)
async def analyze(
    request: Request,
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="PNG, JPEG or DICOM")],
    indication: Annotated[str | None, Form(description="why the image was taken")] = None,
    age: Annotated[str | None, Form(description="years, 0-130")] = None,
    sex: Annotated[str | None, Form(description="female, male, other or unknown")] = None,
    context: Annotated[str | None, Form(
        description='JSON instead of the three fields: {"indication": ..., "age": ..., '
                    '"sex": ...}')] = None,
    format: Annotated[Literal["json", "fhir"], Query(
        description="json: the analysis; fhir: a FHIR R4B DiagnosticReport")] = "json",
) -> Response:
    """Diagnosis with calibrated probability, heatmap, drafted report and citations."""
    form = await request.form()  # parsed for the above
    if repeated := given_twice(form, FORM_FIELDS) or given_twice(request.query_params,
                                                                  ["format"]):
        raise InvalidRequestError(f"given more than once: {repeated}; send one image and at "
                                  "most one of each field per request")
    if unknown := unknown_names(form, FORM_FIELDS):
        raise InvalidRequestError(f"unknown form field(s): {unknown}; /v1/analyze reads "
                                  f"{', '.join(FORM_FIELDS)}")
    data = await file.read()
    analysis = await services.analyze(data, AnalyzeForm(indication, age, sex, context))
    note(request, study_id=analysis.study_id, study_uid_hash=analysis.study_uid_hash,
         models=[m.to_dict() for m in analysis.models])
    if format == "fhir":
        return JSONResponse(diagnostic_report_json(analysis.to_dict()), media_type=FHIR_JSON)
    return Response(analysis.to_json(), media_type="application/json")

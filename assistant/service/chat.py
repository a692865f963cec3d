"""``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI chat API, so that the
clients clinicians' tools already use work unchanged.

Requests follow OpenAI's schema: ``messages`` with string content or content parts, images
as ``image_url`` parts holding ``data:`` URLs (PNG, JPEG or DICOM; the service fetches no
URL), ``stream``, ``user`` and ``metadata.conversation_id`` (optional: see
``assistant.chat.engine`` for how a follow-up finds its conversation). ``temperature``,
``top_p``, ``max_tokens`` and the like are accepted and have no effect: answers are quoted,
not sampled, and never cut mid-quote. What a client would rely on and cannot get is refused
(400 ``unsupported_parameter``): a JSON ``response_format``, a forced tool call, logprobs.
``usage`` counts words, not model tokens. Replies carry three fields beyond OpenAI's:
``conversation_id``, ``study_id`` and ``citations``.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 400 for a
malformed request, 404 for an unknown conversation, 413 / 415 / 422 for a bad image, 503
while the models load. A streamed reply sends its first words (the draft notice) before
the answer is composed; every check that can fail a request runs before it starts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any, Literal

import anyio.from_thread
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from assistant.chat import ChatAnswer, ChatEngine, ChatInputError, ConversationStore, Turn
from assistant.chat.compose import Composed, head, tail
from assistant.chat.engine import Prepared, generation_status
from assistant.chat.messages import Image, decode_data_url
from assistant.config import Limits, Settings
from assistant.imaging import ImageInputError
from assistant.pipeline import Analysis
from assistant.service.audit import note_analysis
from assistant.service.errors import (
    RETRY_AFTER_S,
    NotReadyError,
    ServiceError,
    image_error_status,
    service_error_status,
)
from assistant.service.json_body import JSONRoute
from assistant.service.state import LOADING, OK, RETRIEVAL, VISION, Services

log = logging.getLogger(__name__)

router = APIRouter(tags=["chat"], route_class=JSONRoute)

MODEL_ID = "medical-imaging-assistant"
_CREATED = int(time.time())
_ENGINE_LOCK = threading.Lock()

# -- request schema ------------------------------------------------------------------------


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class RefusalPart(BaseModel):
    """An assistant message's refusal, as OpenAI's replies may carry one in the history."""

    type: Literal["refusal"]
    refusal: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: (str | list[Annotated[TextPart | ImagePart | RefusalPart,
                                   Field(discriminator="type")]] | None) = None
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # top_p, stop, seed, ...: accepted, no effect

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    # OpenAI's schema lets clients send null for "not set"; "yes" or 1 is no boolean there
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(1, ge=1, description="one answer per request (more: refused)")
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    user: str | None = None
    metadata: dict[str, str | None] | None = None
    # Asked of a model that samples tokens and calls tools; refused (``unsupported``)
    # rather than ignored, since a client relying on them would break on the reply.
    response_format: dict[str, Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """(param, why) for a request this service cannot honour: the reply is quoted
        text, with no JSON mode, no tool calls and no token log-probabilities."""
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            return "response_format", (f"response_format {kind!r} is not supported: replies "
                                       "are quoted text with citations (use 'text')")
        if self.tool_choice not in (None, "auto", "none"):
            return "tool_choice", ("tool_choice must be 'auto' or 'none': this service "
                                   "calls no tools")
        extra = self.model_extra or {}
        if extra.get("function_call") not in (None, "auto", "none"):  # tool_choice's forebear
            return "function_call", ("function_call must be 'auto' or 'none': this service "
                                     "calls no functions")
        modalities = extra.get("modalities")
        if extra.get("audio") is not None or (modalities is not None and (
                not isinstance(modalities, list) or any(m != "text" for m in modalities))):
            return ("audio" if extra.get("audio") is not None else "modalities",
                    "replies are text only: no audio (modalities must be [\"text\"])")
        if self.n is not None and self.n > 1:
            return "n", f"n must be 1: one answer per request, not {self.n}"
        if self.logprobs or self.top_logprobs:
            return "logprobs", ("logprobs are not available: answers are quoted, not "
                                "sampled token by token")
        return None


# -- errors --------------------------------------------------------------------------------


def openai_error(status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": code}}, status_code=status)


_PARTS = "'text' or 'image_url' parts (or 'refusal', in an assistant message)"


def _content_error(errors: Sequence[Any]) -> tuple[str, str] | None:
    """(param, message) for a message's content that is no string and no list of the parts
    this API reads; pydantic's own words name every alternative of the union. Its errors'
    locations run messages, i, content, the union's branch, then (list branch) the part's
    index, its type and the field."""
    found = [tuple(e.get("loc", ())) for e in errors]
    content = [(loc, e) for loc, e in zip(found, errors, strict=True)
               if len(loc) >= 4 and loc[0] == "messages" and loc[2] == "content"]
    if not content:
        return None
    for loc, error in content:
        if len(loc) < 5:
            continue  # the string branch: said below if no part is at fault
        part = f"messages[{loc[1]}].content[{loc[4]}]"
        if error.get("type") == "union_tag_invalid":
            tag = (error.get("ctx") or {}).get("tag")
            return f"{part}.type", f"{part}: content part type {tag!r} is not supported: " \
                                   f"send {_PARTS}"
        if len(loc) > 6:
            field = ".".join(str(p) for p in loc[6:])
            hint = (" (an image_url part holds an object: {\"url\": \"data:...\"})"
                    if loc[6:] == ("image_url",) else "")
            return f"{part}.{field}", f"{part}.{field}: {error.get('msg', 'invalid')}{hint}"
        return part, f"{part} must be an object with its \"type\": {_PARTS}"
    where = f"messages[{content[0][0][1]}].content"
    return where, f"{where} must be a string, null, or a list of {_PARTS}"


def _validation_error(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    if not first.get("loc"):  # the body itself: a JSON array, a string, a number
        return openai_error(400, "the request body must be a JSON object (the chat "
                                 "completion request)", code="invalid_value")
    content = _content_error(exc.errors())
    if content is not None:
        return openai_error(400, content[1], param=content[0], code="invalid_value")
    param = ".".join(str(p) for p in first.get("loc", ()))
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
             for e in exc.errors()[:5]]
    return openai_error(400, "; ".join(parts), param=param or None, code="invalid_value")


def _service_error(exc: ServiceError) -> JSONResponse:
    """A service-side refusal (not ready, busy) in OpenAI's shape, with ``Retry-After``
    on a 503."""
    status, kind = service_error_status(exc)
    response = openai_error(status, str(exc), "server_error", code=kind)
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _image_error(exc: ImageInputError) -> JSONResponse:
    status, kind = image_error_status(exc)
    return openai_error(status, str(exc), param="messages", code=kind)


# -- turning the request into turns ----------------------------------------------------------


def to_turns(messages: Sequence[ChatMessage], max_image_bytes: int) -> list[Turn]:
    """Text and decoded images of each message; images count only in user messages. An
    image of the last message that cannot be decoded is the client's error; one earlier in
    the history was refused when it was sent, and is left out (clients resend the whole
    thread, refused images included)."""
    turns = []
    last = len(messages) - 1
    for i, message in enumerate(messages):
        if message.content is None or isinstance(message.content, str):
            turns.append(Turn(message.role, message.content or ""))
            continue
        texts: list[str] = []
        images: list[Image] = []
        for j, part in enumerate(message.content):
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif isinstance(part, ImagePart) and message.role == "user":
                try:
                    images.append(decode_data_url(part.image_url.url, max_image_bytes,
                                                  f"messages[{i}].content[{j}].image_url.url"))
                except ChatInputError:
                    if i == last:
                        raise
        turns.append(Turn(message.role, "\n".join(texts), tuple(images)))
    return turns


def check_limits(messages: list[ChatMessage], limits: Limits) -> None:
    """413 for more messages, or a longer message, than the limits allow (before any image
    in them is decoded)."""
    if len(messages) > limits.max_chat_messages:
        raise ChatInputError(f"the request has {len(messages)} messages; the limit is "
                             f"{limits.max_chat_messages}", "messages", "too_large", 413)
    for i, message in enumerate(messages):
        if isinstance(message.content, list):
            chars = sum(len(p.text) for p in message.content if isinstance(p, TextPart))
        else:
            chars = len(message.content or "")
        if chars > limits.max_chat_message_chars:
            raise ChatInputError(f"messages[{i}] has {chars} characters of text; the limit "
                                 f"is {limits.max_chat_message_chars}",
                                 f"messages[{i}].content", "too_large", 413)


def _words(text: str) -> int:
    return len(text.split())


def _usage(request: ChatRequest, reply: str) -> dict[str, int]:
    prompt = sum(_words(m.content) if isinstance(m.content, str) else
                 sum(_words(p.text) for p in m.content if isinstance(p, TextPart))
                 for m in request.messages if m.content)
    return {"prompt_tokens": prompt, "completion_tokens": _words(reply),
            "total_tokens": prompt + _words(reply)}


# -- the engine ------------------------------------------------------------------------------


def open_chat(app: FastAPI, settings: Settings) -> None:
    """Open the conversation store (the lifespan calls this); the engine is made on the
    first request after the models load, sharing the service's pipeline and searcher."""
    assert settings.chat.db_path is not None  # Settings resolves it
    app.state.chat_store = ConversationStore(settings.chat.db_path)
    app.state.chat = None
    log.info("chat: conversations in %s; %s", settings.chat.db_path,
             generation_status(settings))


def close_chat(app: FastAPI) -> None:
    store: ConversationStore | None = getattr(app.state, "chat_store", None)
    if store is not None:
        store.close()


def chat_engine(request: Request) -> ChatEngine | None:
    """The engine, made once the service's components have loaded (the literature may
    have failed: knowledge questions then say so); None until then."""
    state = request.app.state
    engine: ChatEngine | None = getattr(state, "chat", None)
    if engine is not None:
        return engine
    services: Services = state.services
    if (services.pipeline is None or services.components.get(VISION) != OK
            or services.components.get(RETRIEVAL) == LOADING):
        return None
    with _ENGINE_LOCK:
        if getattr(state, "chat", None) is None:
            settings: Settings = state.settings
            # /v1/search's lock: the embedder's tokenizer is not thread-safe.
            state.chat = ChatEngine(state.chat_store, services.pipeline, services.searcher,
                                    services.pipeline.retrieval_note, settings.chat.citations,
                                    generation_status(settings), services.search_lock,
                                    _batched(services))
    chat: ChatEngine = state.chat
    return chat


def _batched(services: Services) -> Callable[[bytes], Analysis]:
    """The chat's image analyses through the service's micro-batcher (``prepare`` runs in
    a worker thread): the queue, its cap (503 ``busy``) and the batches of
    ``/v1/analyze``."""
    def analyze(data: bytes) -> Analysis:
        return anyio.from_thread.run(services.analyze, data)

    return analyze


# -- routes ----------------------------------------------------------------------------------


@router.get("/v1/models")
async def list_models() -> dict[str, Any]:
    return {"object": "list", "data": [_model_card()]}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str) -> Any:
    if model_id != MODEL_ID:
        return openai_error(404, f"unknown model {model_id!r}; this service serves "
                                 f"{MODEL_ID!r}", param="model", code="model_not_found")
    return _model_card()


def _model_card() -> dict[str, Any]:
    return {"id": MODEL_ID, "object": "model", "created": _CREATED, "owned_by": "assistant"}


@router.post("/v1/chat/completions",
             responses={400: {"description": "malformed request"},
                        404: {"description": "unknown conversation"},
                        413: {"description": "image too large"},
                        415: {"description": "unsupported image"},
                        422: {"description": "unreadable image"},
                        503: {"description": "models still loading"}})
async def chat_completions(request: Request) -> Any:
    """An answer to the conversation's last user message (see the module's docstring)."""
    try:
        body = ChatRequest.model_validate(await request.json())
    except ValueError as exc:  # not JSON, or ValidationError (a ValueError)
        if isinstance(exc, ValidationError):
            return _validation_error(exc)
        return openai_error(400, f"the body must be a JSON object ({exc})", code="invalid_json")
    refused = body.unsupported()
    if refused is not None:
        return openai_error(400, refused[1], param=refused[0], code="unsupported_parameter")
    engine = chat_engine(request)
    if engine is None:
        return _service_error(NotReadyError("the models are still loading: retry shortly"))
    settings: Settings = request.app.state.settings
    conversation = (body.metadata or {}).get("conversation_id")
    try:
        check_limits(body.messages, settings.limits)
        turns = to_turns(body.messages, settings.limits.max_upload_bytes)
        prepared = await run_in_threadpool(engine.prepare, turns, conversation, body.user)
    except ChatInputError as exc:
        return openai_error(exc.status, str(exc), param=exc.param, code=exc.code)
    except ImageInputError as exc:
        return _image_error(exc)
    except ServiceError as exc:  # the analyses' queue is full (503 busy), or not ready
        return _service_error(exc)
    if prepared.study is not None:
        note_analysis(request, prepared.study.analysis)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        return StreamingResponse(
            _stream(engine, prepared, body, completion_id), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                     "X-Conversation-Id": prepared.conversation_id})
    composed = await run_in_threadpool(engine.compose, prepared)
    answer = await run_in_threadpool(engine.finish, prepared, composed)
    return JSONResponse(_completion(body, answer, completion_id),
                        headers={"X-Conversation-Id": answer.conversation_id})


def _extras(composed: Composed, conversation_id: str) -> dict[str, Any]:
    """What a reply carries beyond OpenAI's fields."""
    return {"conversation_id": conversation_id, "study_id": composed.study_id,
            "citations": [c.to_dict() for c in composed.citations]}


def _completion(body: ChatRequest, answer: ChatAnswer, completion_id: str) -> dict[str, Any]:
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()),
            "model": MODEL_ID, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text,
                                                 "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(body, answer.text),
            **_extras(answer.composed, answer.conversation_id)}


def _chunk(completion_id: str, created: int, delta: dict[str, Any],
           finish_reason: str | None = None, **extra: Any) -> str:
    data = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": MODEL_ID, "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}], **extra}
    return f"data: {json.dumps(data)}\n\n"


def pieces(text: str) -> list[str]:
    """``text`` cut into words, each with the white space after it (a chunk per word)."""
    out: list[str] = []
    word = ""
    for char in text:
        if word and not char.isspace() and word[-1].isspace():
            out.append(word)
            word = ""
        word += char
    return [*out, word] if word else out


async def _stream(engine: ChatEngine, prepared: Prepared, body: ChatRequest,
                  completion_id: str) -> AsyncIterator[str]:
    created = int(time.time())
    cid = prepared.conversation_id
    yield _chunk(completion_id, created, {"role": "assistant", "content": ""},
                 conversation_id=cid)
    for piece in pieces(head()):  # the draft notice: known before the answer
        yield _chunk(completion_id, created, {"content": piece})
    try:
        composed = await run_in_threadpool(engine.compose, prepared)
        answer = await run_in_threadpool(engine.finish, prepared, composed)
    except Exception as exc:  # the stream has started: report in-band, as OpenAI does
        log.exception("chat answer failed mid-stream")
        error = {"message": f"the answer failed: {exc}", "type": "server_error",
                 "param": None, "code": "internal_error"}
        yield f"data: {json.dumps({'error': error})}\n\n"
        yield "data: [DONE]\n\n"
        return
    for piece in pieces(tail(composed, cid)):
        yield _chunk(completion_id, created, {"content": piece})
    yield _chunk(completion_id, created, {}, "stop", **_extras(composed, cid))
    if body.stream_options is not None and body.stream_options.include_usage:
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                "model": MODEL_ID, "choices": [], "usage": _usage(body, answer.text)}
        yield f"data: {json.dumps(data)}\n\n"
    yield "data: [DONE]\n\n"

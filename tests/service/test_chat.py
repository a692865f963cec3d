"""``/v1/chat/completions`` through the official ``openai`` client against a real uvicorn
server, with the release vision model, real Br35H images and a small real literature index.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from assistant.chat import NOTICE, REFUSAL
from tests.chat.conftest import (
    Images,
    chat_index_dir,
    find_images,
    indexed_records,
    topic_question,
)
from tests.service.conftest import run_server

pytestmark = [pytest.mark.data, pytest.mark.slow]

UPLOAD_LIMIT = 300_000


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chat_index_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def chat_server(index_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("chat-server")
    with run_server(folder, {"ASSISTANT_INDEX_DIR": str(index_dir),
                             "ASSISTANT_LIMITS__MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)}) as base:
        yield base


@pytest.fixture(scope="module")
def client(chat_server: str) -> OpenAI:
    return OpenAI(base_url=f"{chat_server}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def images() -> Images:
    return find_images()


def _data_url(data: bytes, media: str = "image/jpeg") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def _with_image(text: str, url: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text},
                                        {"type": "image_url", "image_url": {"url": url}}]}


def _ask(client: OpenAI, messages: list[Any], **kwargs: Any) -> Any:
    return client.chat.completions.create(model="medical-imaging-assistant",
                                          messages=messages, **kwargs)


def test_models(client: OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["medical-imaging-assistant"]
    assert client.models.retrieve("medical-imaging-assistant").owned_by == "assistant"


def test_an_attached_study_then_a_follow_up(client: OpenAI, images: Images) -> None:
    question = _with_image("What does this scan show?", _data_url(images.tumour.read_bytes()))
    reply = _ask(client, [question])
    assert reply.object == "chat.completion" and reply.model == "medical-imaging-assistant"
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    text = choice.message.content
    assert text.startswith(NOTICE) and "showing a tumour" in text
    extra = reply.model_extra or {}
    assert extra["study_id"] in text and text.endswith(f"(conversation {extra['conversation_id']})")
    assert reply.usage.completion_tokens == len(text.split())

    # The follow-up carries no image: the assistant's earlier reply names the conversation.
    history = [{"role": "user", "content": "What does this scan show?"},
               {"role": "assistant", "content": text},
               {"role": "user", "content": "How confident is the model, and where is it?"}]
    follow = _ask(client, history)
    follow_text = follow.choices[0].message.content
    assert (follow.model_extra or {})["study_id"] == extra["study_id"]
    assert "calibrated probability of tumour" in follow_text and "hottest area" in follow_text


def test_conversation_ids_in_metadata(client: OpenAI, images: Images) -> None:
    url = _data_url(images.no_tumour.read_bytes())
    _ask(client, [_with_image("Result?", url)], metadata={"conversation_id": "ward-3-bed-9"},
         user="dr-a")
    follow = _ask(client, [{"role": "user", "content": "Is there a tumour?"}],
                  metadata={"conversation_id": "ward-3-bed-9"}, user="dr-a")
    assert "showing no tumour" in follow.choices[0].message.content
    with pytest.raises(openai.NotFoundError) as info:
        _ask(client, [{"role": "user", "content": "Is there a tumour?"}],
             metadata={"conversation_id": "ward-3-bed-9"}, user="dr-b")
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "conversation_not_found"
    with pytest.raises(openai.NotFoundError):  # naming no user is not a way in
        _ask(client, [{"role": "user", "content": "Is there a tumour?"}],
             metadata={"conversation_id": "ward-3-bed-9"})


def _analyses(chat_server: str) -> float:
    text = httpx.get(f"{chat_server}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("assistant_analyses_total"))


def test_a_chat_image_goes_through_the_analyses_queue(client: OpenAI, chat_server: str,
                                                      images: Images) -> None:
    """The chat's images share /v1/analyze's micro-batcher: its queue, its cap (503
    busy) and its counts."""
    before = _analyses(chat_server)
    _ask(client, [_with_image("Result?", _data_url(images.no_tumour.read_bytes()))],
         metadata={"conversation_id": "queue-check"})
    assert _analyses(chat_server) == before + 1


def test_an_image_refused_earlier_does_not_fail_the_thread(client: OpenAI, images: Images
                                                          ) -> None:
    first = _ask(client, [_with_image("Result?", _data_url(images.tumour.read_bytes()))])
    # chat front ends keep a refused message in the thread and send it again
    history = [_with_image("Result?", _data_url(images.tumour.read_bytes())),
               {"role": "assistant", "content": first.choices[0].message.content},
               _with_image("And this one?", "https://example.org/scan.png"),
               {"role": "assistant", "content": [{"type": "refusal", "refusal": "refused"}]},
               {"role": "user", "content": "How confident is the model?"}]
    follow = _ask(client, history)
    extra = follow.model_extra or {}
    assert extra["study_id"] == (first.model_extra or {})["study_id"]
    assert "calibrated probability of tumour" in follow.choices[0].message.content


def test_null_for_optional_fields_is_not_set(chat_server: str) -> None:
    body = {"model": "any", "stream": None, "n": None, "metadata": {"conversation_id": None},
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    response = httpx.post(f"{chat_server}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert REFUSAL in response.json()["choices"][0]["message"]["content"]


def test_streaming(client: OpenAI, images: Images) -> None:
    messages = [_with_image("Is there a tumour?", _data_url(images.tumour.read_bytes()))]
    # (time to the first token is a benchmark figure, scripts/bench_service.py, not a test)
    chunks = list(_ask(client, messages, stream=True, stream_options={"include_usage": True}))
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # streamed
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    assert chunks[-1].usage is not None and not chunks[-1].choices
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith(NOTICE) and "showing a tumour" in text
    assert (finals[0].model_extra or {})["study_id"] in text


def test_the_stream_is_server_sent_events_ending_with_done(chat_server: str) -> None:
    body = {"model": "any", "stream": True,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    with httpx.stream("POST", f"{chat_server}/v1/chat/completions", json=body,
                      timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    deltas = [json.loads(e[6:])["choices"][0]["delta"] for e in events[:-1]]
    assert REFUSAL in "".join(d.get("content", "") for d in deltas)


def test_knowledge_answers_cite_the_index(client: OpenAI, index_dir: Path) -> None:
    reply = _ask(client, [{"role": "user", "content": topic_question(index_dir)}])
    text = reply.choices[0].message.content
    citations = (reply.model_extra or {})["citations"]
    assert citations and text.startswith(NOTICE)
    records = indexed_records(index_dir)
    for citation in citations:
        record = records[citation["id"]]  # exists in the index
        assert citation["citation"] == record["citation"]
        assert f"[{citation['number']}] {citation['quote']}" in text
        assert f"[{citation['number']}] {record['citation']}" in text


def test_unsupported_questions_are_refused(client: OpenAI) -> None:
    for question in ("What is the capital of France?", "What does this scan show?"):
        reply = _ask(client, [{"role": "user", "content": question}])
        text = reply.choices[0].message.content
        assert REFUSAL in text and text.startswith(NOTICE)
        assert (reply.model_extra or {})["citations"] == []


def _image_part(url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]


def test_a_temperature_that_is_no_number_is_named_so(chat_server: str) -> None:
    # the official client cannot send NaN; a hand-written body can (it was told "less
    # than or equal to 2")
    import httpx

    body = ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
            '"temperature": NaN}')
    reply = httpx.post(f"{chat_server}/v1/chat/completions", content=body,
                       headers={"Content-Type": "application/json"}, timeout=60)
    assert reply.status_code == 400, reply.text
    assert "finite" in reply.json()["error"]["message"]


@pytest.mark.parametrize(("messages", "extra", "status", "words"), [
    ([], {}, 400, "at least 1"),
    ([{"role": "assistant", "content": "hi"}], {}, 400, "must come from the user"),
    ([{"role": "user", "content": "hi"}], {"n": 2}, 400, "n must be 1"),
    # what a client relies on and cannot get is refused, not silently ignored
    ([{"role": "user", "content": "hi"}], {"response_format": {"type": "json_object"}}, 400,
     "response_format"),
    ([{"role": "user", "content": "hi"}], {"tool_choice": "required", "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {}}}]}, 400,
     "tool_choice"),
    ([{"role": "user", "content": "hi"}], {"logprobs": True}, 400, "logprobs"),
    # tool_choice's forebear, and audio replies (both had been accepted and ignored)
    ([{"role": "user", "content": "hi"}], {"extra_body": {
        "functions": [{"name": "f", "parameters": {"type": "object", "properties": {}}}],
        "function_call": {"name": "f"}}}, 400, "function_call"),
    ([{"role": "user", "content": "hi"}], {"extra_body": {
        "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}},
     400, "text only"),
    # an unknown part type is named, not pydantic's union of every alternative
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], {}, 400,
     "content part type 'input_audio' is not supported"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": "data:x"}]}], {}, 400,
     "an image_url part holds an object"),
    ([{"role": "user", "content": "hi"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "input_audio"}]}],
     {}, 400, "messages[1].content[1]"),  # the message at fault, not the first
    ([{"role": "user", "content": "hi"}], {"extra_body": {"modalities": [{"type": "text"}]}},
     400, "text only"),  # had been a 500: a dict is no set member
    # no boolean, no number: OpenAI refuses them too (before: streamed, and "less than 2")
    ([{"role": "user", "content": "hi"}], {"stream": "yes"}, 400, "stream"),
    (_image_part("https://example.org/a.png"), {}, 400, "data URLs"),
    (_image_part("data:image/png;base64,%%%"), {}, 400, "base64"),
    (_image_part("data:image/gif;base64,R0lGODlhAQABAAAAACw="), {}, 415, "unsupported image"),
    (_image_part(_data_url(b"plain text, not pixels", "image/png")), {}, 415, "format"),
    (_image_part(_data_url(b"plain text, not pixels", "image/png")), {"stream": True}, 415,
     "format"),  # checked before a stream starts
    (_image_part(_data_url(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png")), {}, 422, ""),
    (_image_part(_data_url(b"\x00" * (UPLOAD_LIMIT + 1), "image/png")), {}, 413, "limit"),
])
def test_bad_requests(client: OpenAI, messages: list[Any], extra: dict[str, Any], status: int,
                      words: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, messages, **extra)
    assert info.value.status_code == status
    error = info.value.body
    assert isinstance(error, dict) and words.lower() in error["message"].lower()
    assert error["type"]


def test_a_body_that_is_not_json(chat_server: str) -> None:
    response = httpx.post(f"{chat_server}/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(("body", "words"), [
    (b"[1, 2]", "must be a JSON object"),  # had been ": Input should be a valid dictionary"
    # a compressed body: "'utf-8' codec can't decode byte 0x8b" before
    (__import__("gzip").compress(b'{"model": "m", "messages": []}'), "looks compressed"),
])
def test_bodies_that_are_not_a_request_say_so(chat_server: str, body: bytes,
                                               words: str) -> None:
    response = httpx.post(f"{chat_server}/v1/chat/completions", content=body,
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400
    assert words in response.json()["error"]["message"]


def test_a_data_url_in_capitals_is_read(client: OpenAI, images: Images) -> None:
    """RFC 2397's scheme and ";base64" are case-insensitive; "DATA:IMAGE/JPEG;BASE64,..."
    had been told that the service fetches no URLs."""
    url = _data_url(images.tumour.read_bytes(), "IMAGE/JPEG").replace("data:", "DATA:")
    reply = _ask(client, [_with_image("What does it show?", url.replace(";base64,",
                                                                         ";BASE64,"))])
    assert "showing a tumour" in reply.choices[0].message.content

"""The chat's message count and length limits: 413 with OpenAI's error shape, before any
image in the request is decoded."""

import httpx

from assistant.config import Limits

LIMITS = Limits()


def _post(server: str, messages: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(f"{server}/v1/chat/completions",
                      json={"model": "m", "messages": messages}, timeout=60)


def test_too_many_messages(server: str) -> None:
    turns = [{"role": "user", "content": "hi"}] * (LIMITS.max_chat_messages + 1)
    refused = _post(server, turns)
    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert error["code"] == "too_large" and error["param"] == "messages"
    assert f"the limit is {LIMITS.max_chat_messages}" in error["message"]


def test_too_long_a_message(server: str) -> None:
    text = "a" * (LIMITS.max_chat_message_chars + 1)
    parts = [{"type": "text", "text": text},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    for content in (text, parts):
        refused = _post(server, [{"role": "user", "content": content}])
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["param"] == "messages[0].content"
    at_limit = _post(server, [{"role": "user", "content": "what is a glioma? " + "b" * 100}])
    assert at_limit.status_code == 200

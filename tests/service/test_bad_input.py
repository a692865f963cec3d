"""Hostile uploads against the real server: each crafted input gets its 4xx with a JSON body
(a size refused from the header in well under a second), wrong content types are 4xx, and
property tests send mutated images, arbitrary form fields and arbitrary chat bodies: never
a 5xx, and the server stays up."""

from __future__ import annotations

import base64
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import data_dir
from tests.malformed import crafted, mutate, seeds
from tests.service.conftest import run_server

SEEDS = seeds(data_dir())
SEED_NAMES = sorted(SEEDS)
CRAFTED = crafted(data_dir())
HTTP_PROPERTY = settings(max_examples=120, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.function_scoped_fixture])
CLIENT_ERRORS = (400, 404, 413, 415, 422)
STALL_S = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """No index (not required) and no rate limit: the property tests send hundreds."""
    folder = tmp_path_factory.mktemp("bad-input")
    env = {"ASSISTANT_INDEX_DIR": str(folder / "no-index"),
           "ASSISTANT_SERVICE__REQUIRE_INDEX": "false",
           "ASSISTANT_LIMITS__REQUESTS_PER_MINUTE": "0",
           "ASSISTANT_LIMITS__BODY_STALL_S": str(STALL_S)}
    with run_server(folder, env) as base:
        yield base


def assert_json_error(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and (error.get("type") or error.get("code"))


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_upload(server: str, name: str) -> None:
    data, expected = CRAFTED[name]
    started = time.perf_counter()
    response = httpx.post(f"{server}/v1/images/inspect",
                          files={"file": ("upload.bin", data, "application/octet-stream")})
    elapsed = time.perf_counter() - started
    assert response.status_code == expected, response.text
    assert_json_error(response)
    if expected == 413:
        assert elapsed < 1.0


@pytest.mark.parametrize("name", ["png-claims-100000x100000", "dicom-rows-100000-as-ul",
                                  "png-deflate-bomb-8000x8000", "dicom-polyglot-mz-preamble",
                                  "empty"])
def test_crafted_analyze(server: str, name: str) -> None:
    data, expected = CRAFTED[name]
    started = time.perf_counter()
    response = httpx.post(f"{server}/v1/analyze", files={"file": ("x", data)}, timeout=60)
    assert response.status_code == expected and time.perf_counter() - started < 2.0
    assert_json_error(response)


def test_content_types_do_not_decide(server: str) -> None:
    png = SEEDS["grey.png"]
    as_text = httpx.post(f"{server}/v1/images/inspect",
                         files={"file": ("notes.txt", png, "text/plain")})
    assert as_text.status_code == 200 and as_text.json()["format"] == "png"
    text_as_png = httpx.post(f"{server}/v1/images/inspect",
                             files={"file": ("scan.png", b"hello, world", "image/png")})
    assert text_as_png.status_code == 415
    for kwargs in ({"content": png, "headers": {"Content-Type": "image/png"}},
                   {"json": {"file": base64.b64encode(png).decode()}},
                   {"data": {"file": "not a file"}},
                   {"content": b"--x\r\nbroken", "headers": {
                       "Content-Type": "multipart/form-data; boundary=x"}}):
        response = httpx.post(f"{server}/v1/analyze", **kwargs)  # type: ignore[arg-type]
        assert response.status_code in (400, 422), response.text
        assert_json_error(response)
    gif = httpx.post(f"{server}/v1/chat/completions", json=_chat_body(
        "data:image/gif;base64," + base64.b64encode(b"GIF89a" + bytes(20)).decode()))
    assert gif.status_code == 415


def _chat_body(url: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url",
                                                     "image_url": {"url": url}}]}]}


@pytest.mark.slow
@HTTP_PROPERTY
@given(name=st.sampled_from(SEED_NAMES), seed=st.integers(0, 2**32 - 1),
       route=st.sampled_from(["/v1/images/inspect", "/v1/analyze"]))
def test_mutated_uploads_never_fail_the_server(server: str, name: str, seed: int,
                                                route: str) -> None:
    data = mutate(random.Random(seed), SEEDS[name], list(SEEDS.values()))
    response = httpx.post(f"{server}{route}", files={"file": (name, data)}, timeout=60)
    assert response.status_code in (200, *CLIENT_ERRORS), response.text
    assert_json_error(response)


_FIELD = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(
    ["-1", "131", "61", "1e9", "nan", "female", "MALE", "x" * 5000, '{"age": "x"}',
     '{"indication": 5}', "[]", "null", '{"age": 1e400}']))


@pytest.mark.slow
@HTTP_PROPERTY
@given(indication=_FIELD, age=_FIELD, sex=_FIELD, context=_FIELD,
       fmt=st.sampled_from(["json", "fhir", "xml", ""]))
def test_arbitrary_form_fields_never_fail_the_server(
        server: str, indication: str | None, age: str | None, sex: str | None,
        context: str | None, fmt: str) -> None:
    fields = {k: v for k, v in {"indication": indication, "age": age, "sex": sex,
                                "context": context}.items() if v is not None}
    response = httpx.post(f"{server}/v1/analyze", params={"format": fmt}, data=fields,
                          files={"file": ("a.png", SEEDS["grey.png"])}, timeout=60)
    assert response.status_code in (200, 422), response.text
    assert_json_error(response)


_JSON = st.recursive(st.none() | st.booleans() | st.integers()
                     | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=20),
                     lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(st.text(max_size=10), children, max_size=4),
                     max_leaves=12)
_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system",
                                                            "tool", "nobody"]),
                                  "content": st.one_of(st.text(max_size=50), _JSON)})


@pytest.mark.slow
@HTTP_PROPERTY
@given(body=st.one_of(_JSON, st.fixed_dictionaries(
    {"model": st.text(max_size=10), "messages": st.lists(_MESSAGE, max_size=4)},
    optional={"stream": st.booleans(), "metadata": _JSON, "user": _JSON, "n": _JSON})))
def test_arbitrary_chat_bodies_never_fail_the_server(server: str, body: object) -> None:
    response = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code in (200, *CLIENT_ERRORS), response.text
    assert_json_error(response)


_HI = b'"messages": [{"role": "user", "content": "What is glioma?"}]'
_DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize(("route", "body", "status", "words"), [
    # as a client writes text cut in the middle of an emoji: json.loads takes it, UTF-8 not
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": '
     b'"What is glioma? \\ud83e"}]}', 400, "surrogate"),
    ("/v1/chat/completions", b'{"model": "m", "user": "dr \\ud800", ' + _HI + b"}", 400,
     "surrogate"),
    ("/v1/chat/completions", b'{"model": "m", "x": ' + _DEEP + b", " + _HI + b"}", 400,
     "nested too deeply"),
    ("/v1/reports/draft", b'{"findings": [{"code": "normal"}], "indication": "cough '
     b'\\udc00"}', 422, "surrogate"),
    ("/v1/reports/draft", b'{"findings": ' + _DEEP + b"}", 422, "nested too deeply"),
    ("/v1/batches", b'{"folder": "/tmp/\\ud800"}', 422, "json"),
    ("/v1/batches", b'{"folder": ' + _DEEP + b"}", 422, "json"),
])
def test_json_bodies_the_service_cannot_take_are_malformed(server: str, route: str,
                                                           body: bytes, status: int,
                                                           words: str) -> None:
    response = httpx.post(f"{server}{route}", content=body, timeout=60,
                          headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert_json_error(response)
    assert words in response.json()["error"]["message"].lower()


def test_a_context_field_with_an_unpaired_surrogate_is_invalid(server: str) -> None:
    response = httpx.post(f"{server}/v1/analyze", data={"context": '{"indication": "\\ud800"}'},
                          files={"file": ("a.png", SEEDS["grey.png"])}, timeout=60)
    assert response.status_code == 422, response.text
    assert "surrogate" in response.json()["error"]["message"]


def _half_sent(server: str, path: str, content_type: str) -> socket.socket:
    """A connection that sent the headers and the first 10 of 1,000 body bytes."""
    host, port = server.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=30)
    conn.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                 f"Content-Length: 1000\r\n\r\n".encode() + b'{"model": ')
    return conn


@pytest.mark.parametrize(("path", "content_type"), [
    ("/v1/chat/completions", "application/json"), ("/v1/batches", "application/json"),
    ("/v1/batches", "application/zip"), ("/v1/reports/draft", "application/json")])
def test_a_client_that_leaves_mid_body_is_no_server_error(server: str, path: str,
                                                          content_type: str) -> None:
    _half_sent(server, path, content_type).close()  # the user cancels the upload
    time.sleep(0.5)
    assert httpx.get(f"{server}/healthz").status_code == 200
    # (test_the_server_is_up_and_counted_no_5xx, last, checks no 5xx was counted)


def test_an_upload_cut_short_is_counted_as_the_client_leaving(server: str) -> None:
    """FastAPI answers a multipart body it could not finish parsing with a 400; when the
    client left, that is a 499 (no one to answer), not a bad request."""
    def analyze_499s() -> float:
        for family in text_string_to_metric_families(httpx.get(f"{server}/metrics").text):
            for sample in family.samples:
                if (sample.name == "assistant_http_requests_total"
                        and sample.labels.get("route") == "/v1/analyze"):
                    counts[sample.labels["status"]] = sample.value
        return counts.get("499", 0.0)

    counts: dict[str, float] = {}
    before = analyze_499s()
    bad_requests = counts.get("400", 0.0)  # other tests' uploads may have been 400s
    host, port = server.removeprefix("http://").split(":")
    part = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="scan.png"\r\n'
            b"Content-Type: image/png\r\n\r\n\x89PNG\r\n")
    with socket.create_connection((host, int(port)), timeout=30) as conn:  # then cancelled
        conn.sendall(f"POST /v1/analyze HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                     "multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n"
                     .encode() + part)
        time.sleep(0.3)  # the server has begun reading the form
    deadline = time.perf_counter() + 10
    while analyze_499s() == before and time.perf_counter() < deadline:
        time.sleep(0.1)
    assert analyze_499s() == before + 1, counts
    assert counts.get("400", 0.0) == bad_requests, counts


def test_a_body_that_stalls_is_answered_408(server: str) -> None:
    """A client that stops half way through its body holds the connection (and the
    service's shutdown) for body_stall_s at most."""
    conn = _half_sent(server, "/v1/chat/completions", "application/json")
    started = time.perf_counter()
    reply = b""
    while not reply.endswith(b"}"):  # the headers, then the JSON body
        part = conn.recv(4096)
        if not part:
            break
        reply += part
    conn.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"sent nothing for 2 s" in reply and b"connection: close" in reply.lower()
    assert STALL_S - 0.5 < time.perf_counter() - started < STALL_S + 5


def test_the_server_is_up_and_counted_no_5xx(server: str) -> None:
    assert httpx.get(f"{server}/healthz").status_code == 200
    metrics = httpx.get(f"{server}/metrics").text
    assert 'status="5' not in metrics.replace('status="503"', "")

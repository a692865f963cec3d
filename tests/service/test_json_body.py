"""JSON bodies that ``json.loads`` takes and the service could not (an unpaired surrogate,
nesting past the recursion limit) are refused as malformed."""

from __future__ import annotations

import json

import pytest

from assistant.service.json_body import has_unpaired_surrogate, parse_json


@pytest.mark.parametrize("body", [
    b'{"q": "glioma \\ud800"}',  # a lone high surrogate, as an escape
    b'{"q": "\\udc00 x"}',  # a lone low surrogate
    b'{"q": "\\ude00\\ud83d"}',  # a pair in the wrong order
    b'{"\\ud800": 1}',  # in a key
    b'{"q": ["a", {"b": "\\ud83e"}]}',  # nested
    b'{"q": "\xed\xa0\x80"}',  # a surrogate in UTF-8-style bytes, which json.loads passes
    '{"q": "\\ud800"}',  # a str body
    '{"q": "abc \\ud83e"}'.encode("utf-16"),  # json.loads reads UTF-16 and UTF-32 too
    '{"q": "abc \\ud83e"}'.encode("utf-16-le"),
    '{"q": "abc \\ud83e"}'.encode("utf-32"),
])
def test_unpaired_surrogates_are_malformed_json(body: bytes | str) -> None:
    with pytest.raises(json.JSONDecodeError, match="surrogate"):
        parse_json(body)


def test_valid_text_passes_unchanged() -> None:
    body = '{"q": "\\ud83d\\ude00 gli\\u00f4me", "k": [1, 2.5, null, true], "é": "ü"}'
    value = parse_json(body.encode())
    assert value == json.loads(body) and value["q"] == "\U0001f600 gliôme"
    assert not has_unpaired_surrogate(value)


def test_nesting_past_the_recursion_limit_is_malformed_json() -> None:
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        parse_json(b"[" * 100_000 + b"]" * 100_000)
    assert parse_json(b"[" * 50 + b"]" * 50) == json.loads(b"[" * 50 + b"]" * 50)

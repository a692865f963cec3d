"""Turns, data URLs and conversation references."""

from __future__ import annotations

import base64

import pytest

from assistant.chat.messages import (
    ChatInputError,
    Image,
    Turn,
    UnsupportedImageError,
    decode_data_url,
    last_user_turn,
    referenced_conversation,
)

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20


def _url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def test_data_urls_decode() -> None:
    image = decode_data_url(_url(PNG_BYTES), 1000)
    assert image == Image(PNG_BYTES, "image/png")
    wrapped = "data:image/jpeg;name=x.jpg;base64," + "\n".join(
        base64.b64encode(PNG_BYTES).decode()[i:i + 8] for i in range(0, 40, 8))
    assert decode_data_url(wrapped, 1000).data == PNG_BYTES  # parameters and line breaks
    assert decode_data_url("data:;base64," + base64.b64encode(b"x").decode(), 10).media_type \
        == "application/octet-stream"


@pytest.mark.parametrize(("url", "words", "status"), [
    ("https://example.org/scan.png", "does not fetch", 400),
    ("data:image/png,rawbytes", "base64", 400),
    ("data:image/png;base64,@@@@", "not valid base64", 400),
    ("data:image/png;base64,", "no data", 400),
    ("data:image/gif;base64,R0lGODlh", "unsupported image type", 415),
    ("data:text/plain;base64,aGVsbG8=", "unsupported image type", 415),
])
def test_bad_data_urls(url: str, words: str, status: int) -> None:
    with pytest.raises(ChatInputError, match=words) as info:
        decode_data_url(url, 1000, param="messages[0].content[1].image_url.url")
    assert info.value.status == status
    assert info.value.param == "messages[0].content[1].image_url.url"
    assert isinstance(info.value, UnsupportedImageError) == (status == 415)


def test_too_large_images_are_refused_before_decoding() -> None:
    with pytest.raises(ChatInputError, match="larger than 10 bytes") as info:
        decode_data_url(_url(b"x" * 100), 10)
    assert info.value.status == 413


def test_the_last_turn_must_be_a_users_question() -> None:
    image = Image(PNG_BYTES, "image/png")
    assert last_user_turn([Turn("user", "hi")]).text == "hi"
    assert last_user_turn([Turn("user", "", (image,))]).images == (image,)
    for turns, words in (([], "empty"), ([Turn("user", "a"), Turn("assistant", "b")],
                                          "must come from the user"),
                         ([Turn("user", "  ")], "no text and no image"),
                         ([Turn("user", "two", (image, image))], "one image")):
        with pytest.raises(ChatInputError, match=words):
            last_user_turn(turns)


def test_references_come_from_the_latest_assistant_reply() -> None:
    first = Image(b"one", "image/png")
    second = Image(b"two", "image/png")
    turns = [Turn("user", "a", (first,)), Turn("assistant", "x\n\n(conversation abc123)"),
             Turn("user", "b", (second,)), Turn("assistant", "y\n\n(conversation def456)"),
             Turn("user", "c"), Turn("system", "(conversation zzz)")]
    assert referenced_conversation(turns) == "def456"  # the latest assistant reply's
    assert referenced_conversation([Turn("user", "(conversation abc123)")]) is None

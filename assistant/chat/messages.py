"""A conversation as the chat API receives it, without the web layer: turns of text and
attached images, and the ``data:`` URLs images arrive in.

OpenAI clients send the whole history with every request. The assistant's own earlier
replies end with a reference line, ``(conversation <id>)``, which is how a follow-up finds
its conversation (and so its study) again when the client sends no
``metadata.conversation_id``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "developer", "user", "assistant", "tool"]

# Media types accepted in a data URL; the bytes decide the format in the end.
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/jpg", "application/dicom",
                     "image/dicom", "application/octet-stream")
# The scheme and ";base64" in any case (RFC 2397: "DATA:IMAGE/PNG;BASE64," is the same URL).
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)"
                       r"(?P<b64>;base64)?,(?P<data>.*)", re.DOTALL | re.IGNORECASE)
REFERENCE = re.compile(r"\(conversation (?P<id>[A-Za-z0-9_-]{1,64})\)")


class ChatInputError(ValueError):
    """A request the chat cannot take; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None,
                 code: str = "invalid_request", status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        self.status = status


class UnsupportedImageError(ChatInputError):
    """An attachment that is not an image this service reads (PNG, JPEG, DICOM)."""


@dataclass(frozen=True)
class Image:
    data: bytes
    media_type: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str = ""
    images: tuple[Image, ...] = field(default_factory=tuple)


def decode_data_url(url: str, max_bytes: int, param: str = "image_url.url") -> Image:
    """``data:image/png;base64,...`` -> its bytes. Other URLs are refused: the service
    fetches nothing from the network."""
    if url[:5].lower() != "data:":
        raise ChatInputError("images must be sent as data URLs (data:image/png;base64,...); "
                             "this service does not fetch URLs", param, "invalid_image_url")
    match = _DATA_URL.fullmatch(url)
    if match is None or match["b64"] is None:
        raise ChatInputError("a data URL must look like data:<media type>;base64,<data>",
                             param, "invalid_image_url")
    media_type = (match["type"] or "application/octet-stream").lower()
    if media_type not in IMAGE_MEDIA_TYPES:
        raise UnsupportedImageError(
            f"unsupported image type {media_type!r}: send PNG, JPEG or DICOM "
            f"({', '.join(IMAGE_MEDIA_TYPES)})", param, "unsupported_image", 415)
    payload = re.sub(r"\s+", "", match["data"])
    if len(payload) * 3 // 4 > max_bytes:
        raise ChatInputError(f"the image is larger than {max_bytes} bytes", param, "too_large",
                             413)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ChatInputError(f"the data URL is not valid base64 ({exc})", param,
                             "invalid_image_url") from exc
    if not data:
        raise ChatInputError("the data URL holds no data", param, "invalid_image_url")
    return Image(data, media_type)


def last_user_turn(turns: list[Turn]) -> Turn:
    if not turns:
        raise ChatInputError("messages is empty: send at least one user message", "messages")
    if turns[-1].role != "user":
        raise ChatInputError(f"the last message must come from the user, not "
                             f"{turns[-1].role!r}", "messages")
    turn = turns[-1]
    if not turn.text.strip() and not turn.images:
        raise ChatInputError("the last user message has no text and no image", "messages")
    if len(turn.images) > 1:
        raise ChatInputError(f"the last user message carries {len(turn.images)} images: "
                             "attach one image (one study) per message", "messages")
    return turn


def referenced_conversation(turns: list[Turn]) -> str | None:
    """The conversation id in the latest assistant turn that carries one."""
    for turn in reversed(turns):
        if turn.role == "assistant" and (found := REFERENCE.findall(turn.text)):
            return str(found[-1])
    return None

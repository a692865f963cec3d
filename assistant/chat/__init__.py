"""Chat over a study and the literature, without the web layer.

``ChatEngine`` answers a conversation's latest user turn from the study's analysis (the
pipeline) or from retrieved passages with numbered citations, and stores conversations
in SQLite (``ConversationStore``). Every answer is extractive: quoted, never invented.
"""

from assistant.chat.compose import NOTICE, REFUSAL, Citation, Composed, classify
from assistant.chat.engine import ChatAnswer, ChatEngine, Prepared, generation_status
from assistant.chat.messages import (
    ChatInputError,
    Image,
    Turn,
    UnsupportedImageError,
    decode_data_url,
)
from assistant.chat.store import ConversationStore, StoreError
from assistant.chat.support import Support, support

__all__ = [
    "NOTICE",
    "REFUSAL",
    "ChatAnswer",
    "ChatEngine",
    "ChatInputError",
    "Citation",
    "Composed",
    "ConversationStore",
    "Image",
    "Prepared",
    "StoreError",
    "Support",
    "Turn",
    "UnsupportedImageError",
    "classify",
    "decode_data_url",
    "generation_status",
    "support",
]

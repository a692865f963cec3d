"""Words in, words out: the decoder's text and conditioning vocabularies.

Reports are tokenised into lower-case words and punctuation (``tokenize``); scoring uses
the words alone (``words``: punctuation dropped, as the COCO caption tokenizer does).
``detokenize`` turns tokens back into sentences. The conditioning vocabulary holds one
token per finding term (``T:``), modifier (``M:``) and indication word (``I:``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from assistant.report.decoder.data import Finding

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
UNK_ID = SPECIALS.index(UNK)
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
_PUNCT = re.compile(r"[^a-z0-9]")
REDACTED = "xxxx"  # the collection's de-identification mark, kept as the reports have it
INDICATION_WORDS = 24  # indication tokens kept, at most


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def words(text: str) -> list[str]:
    """Scoring tokens: lower-case words, no punctuation."""
    return [t for t in tokenize(text) if not _PUNCT.fullmatch(t)]


def detokenize(tokens: Iterable[str]) -> str:
    """Tokens -> text: punctuation attached, sentences capitalised, redactions as XXXX."""
    out: list[str] = []
    start = True
    for tok in tokens:
        word = "XXXX" if tok == REDACTED else tok
        if _PUNCT.fullmatch(tok) and tok not in "(":
            out.append(word)
        else:
            if start and word[:1].isalpha():
                word = word[:1].upper() + word[1:]
            out.append((" " if out and not out[-1].endswith(("(", "-", "/")) else "") + word)
        start = tok in ".?!" or (start and _PUNCT.fullmatch(tok) is not None)
    return "".join(out).strip()


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokens[:len(SPECIALS)] != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}, got {self.tokens[:4]}")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], min_count: int = 2) -> Vocab:
        counts = Counter(t for seq in sequences for t in seq)
        kept = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        return cls((*SPECIALS, *kept))

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        return self._index.get(token, UNK_ID)  # type: ignore[attr-defined]

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self.id(t) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        out = []
        for i in ids:
            if i == 2:  # EOS
                break
            if i > 3:
                out.append(self.tokens[i])
        return out


# --- conditioning ---------------------------------------------------------------------

TERM, MODIFIER, INDICATION, IMAGE, RETRIEVED = 1, 2, 3, 4, 5  # token kinds (0: padding)
MAX_FINDINGS = 16
MAX_MODIFIERS = 6  # read per finding


@dataclass(frozen=True)
class Condition:
    """A report's conditioning as parallel token lists: id, kind, finding slot (1-based;
    0 for indication), position within its finding or the indication, probability."""

    ids: tuple[int, ...]
    kinds: tuple[int, ...]
    slots: tuple[int, ...]
    positions: tuple[int, ...]
    probabilities: tuple[float, ...]
    retrieved: tuple[int, ...] = ()  # neighbour reports' word ids (retrieval decoders)


def condition_tokens(findings: Sequence[Finding], indication: str | None,
                     ) -> list[tuple[str, int, int, int, float]]:
    """(token, kind, slot, position, probability) for the findings then the indication."""
    out: list[tuple[str, int, int, int, float]] = []
    for slot, f in enumerate(findings[:MAX_FINDINGS], start=1):
        out.append((f"T:{f.term.lower()}", TERM, slot, 0, f.probability))
        out.extend((f"M:{m}", MODIFIER, slot, j, f.probability)
                   for j, m in enumerate(f.modifiers[:MAX_MODIFIERS], start=1))
    for j, w in enumerate([w for w in words(indication or "") if w != REDACTED]
                          [:INDICATION_WORDS]):
        out.append((f"I:{w}", INDICATION, 0, j, 1.0))
    return out


def encode_neighbours(vocab: Vocab, texts: Sequence[str], limit: int) -> tuple[int, ...]:
    """Neighbour reports as word ids of the text vocabulary, each followed by the end
    token, cut to ``limit`` tokens in all (each report gets an equal share first)."""
    if not texts:
        return ()
    share = max(1, limit // len(texts))
    ids: list[int] = []
    for text in texts:
        ids += [*vocab.encode(tokenize(text))[:share - 1], vocab.id(EOS)]
    return tuple(ids[:limit])


def encode_condition(vocab: Vocab, findings: Sequence[Finding], indication: str | None,
                     retrieved: tuple[int, ...] = ()) -> Condition:
    toks = condition_tokens(findings, indication) or [(UNK, TERM, 1, 0, 1.0)]
    ids, kinds, slots, positions, probs = zip(*toks, strict=True)
    return Condition(tuple(vocab.encode(ids)), kinds, slots, positions, probs, retrieved)

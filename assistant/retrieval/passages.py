"""Documents cut into passages for a sentence embedder and BM25.

Passages are cut at sentence boundaries and overlap by whole sentences, so a finding stated
across a boundary is still found; each keeps its document's id, title and year.

Length: all-MiniLM-L6-v2 reads at most 256 word pieces (with [CLS] and [SEP]). Measured on
1,500 MEDLINE abstracts of the corpus, its tokenizer makes 1.6 pieces a word, so with the
title prepended 23.7% of passages exceed 256 pieces at ``max_words=160``, 3.3% at 120, 1.7%
at 110 and 0.5% at 100. The embedder truncates the excess; choose ``max_words`` with that
in mind.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from assistant.retrieval.corpus import Document, Source

# A boundary: sentence-ending punctuation, optional closing quotes or brackets, white
# space, then something that can start a sentence (a capital, a digit, an opening mark).
_BOUNDARY = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s+(?=[A-Z0-9\"'\u201c\u2018(\[])")
# Words whose trailing period is not a sentence end.
_ABBREVIATION = re.compile(
    r"\b(?:e\.g|i\.e|al|vs|cf|viz|approx|ca|resp|incl|fig|figs|tab|eq|eqs|ref|refs|"
    r"vol|suppl|dr|mr|mrs|ms|prof|st|jr|sr|inc|ltd|dept|univ|ph\.d)\.$",
    re.IGNORECASE)
_INITIAL = re.compile(r"\b[A-Z]\.$")  # "J. Smith", "U.S. Army", "vitamin D. Levels" (kept)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, white space normalised, in order; line breaks always end one.

    Does not cut after abbreviations ("e.g.", "et al.", "Fig."), single capital initials
    ("J.", "U.S.") or inside numbers ("3.5"); cuts only where the next sentence starts with a
    capital, a digit or an opening quote or bracket.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        start = 0
        for match in _BOUNDARY.finditer(line):
            head = line[start:match.start() + 1]
            if line[match.start()] == "." and (_ABBREVIATION.search(head) or _INITIAL.search(head)):
                continue
            sentences.append(line[start:match.end()].strip())
            start = match.end()
        if tail := line[start:].strip():
            sentences.append(tail)
    return sentences


@dataclass(frozen=True)
class Passage:
    """A piece of one document's text, the unit that is embedded, indexed and returned."""

    id: str  # "<doc id>#<position>", e.g. "PMID:123#0"
    doc_id: str
    source: Source
    title: str
    text: str
    year: int | None
    position: int  # 0, 1, ... within the document
    overlap_words: int = 0  # leading words of ``text`` repeated from the previous passage

    def embed_text(self) -> str:
        """``"Title. text"``: what the embedder reads (the title only once if ``text``
        already begins with it, as for title-only documents)."""
        if not self.title or self.text.startswith(self.title):
            return self.text
        separator = " " if self.title.endswith((".", "?", "!")) else ". "
        return f"{self.title}{separator}{self.text}" if self.text else self.title

    @property
    def new_text(self) -> str:
        """``text`` without the words repeated from the previous passage."""
        return " ".join(self.text.split()[self.overlap_words:])


def _pieces(sentences: list[str], max_words: int) -> list[list[str]]:
    """Sentences as word lists; one longer than ``max_words`` is cut into word runs."""
    pieces: list[list[str]] = []
    for sentence in sentences:
        words = sentence.split()
        pieces.extend(words[i:i + max_words] for i in range(0, len(words), max_words))
    return pieces


def _windows(pieces: list[list[str]], max_words: int,
             overlap: int) -> list[tuple[list[list[str]], int]]:
    """Greedy runs of pieces of at most ``max_words`` words; each run after the first starts
    with up to ``overlap`` pieces of the run before it, as many as fit. Returns
    (pieces, number of leading words repeated)."""
    windows: list[tuple[list[list[str]], int]] = []
    current: list[list[str]] = []
    repeated = 0
    count = 0
    for piece in pieces:
        if current and count + len(piece) > max_words:
            windows.append((current, repeated))
            tail = current[len(current) - overlap:] if overlap > 0 else []
            # Drop leading pieces of the repeat until the new piece fits beside it (the whole
            # previous run never does, so every passage adds at least one new piece).
            while tail and sum(map(len, tail)) + len(piece) > max_words:
                tail = tail[1:]
            current, repeated = list(tail), sum(map(len, tail))
            count = repeated
        current.append(piece)
        count += len(piece)
    if current:
        windows.append((current, repeated))
    return windows


def split_passages(doc: Document, max_words: int = 160,
                   overlap_sentences: int = 1) -> list[Passage]:
    """Cut ``doc`` into passages of at most ``max_words`` words at sentence boundaries.

    Consecutive passages share up to ``overlap_sentences`` whole sentences. A single
    sentence longer than ``max_words`` is cut into runs of words. A document without text
    (a citation without abstract) gives one passage holding its title; one with neither
    gives none.
    """
    if max_words < 1 or overlap_sentences < 0:
        raise ValueError(f"need max_words >= 1 and overlap_sentences >= 0, got {max_words} "
                         f"and {overlap_sentences}")
    sentences = split_sentences(doc.text) or split_sentences(doc.title)
    windows = _windows(_pieces(sentences, max_words), max_words, overlap_sentences)
    return [
        Passage(id=f"{doc.id}#{position}", doc_id=doc.id, source=doc.source, title=doc.title,
                text=" ".join(word for piece in pieces for word in piece), year=doc.year,
                position=position, overlap_words=repeated)
        for position, (pieces, repeated) in enumerate(windows)
    ]


def corpus_sha256(passages: Iterable[Passage]) -> str:
    """A digest over the passages' ids and texts, in order: what an index records it was
    built from."""
    digest = hashlib.sha256()
    for passage in passages:
        digest.update(passage.id.encode())
        digest.update(b"\x00")
        digest.update(passage.text.encode())
        digest.update(b"\x01")
    return digest.hexdigest()

"""Training reports ranked by how similar their codes are to a study's.

Similarity is the Jaccard overlap of the full codes (``Opacity/lung/base/left``), then of
the terms alone (``Opacity``). Codes are often shared by many training reports
(``normal`` by hundreds); among the reports tied at the top, the first TIE_POOL (in
training order) are ordered by typicality: the mean word-set Jaccard of a text to the
other tied texts, most typical first.

Two users: the nearest-neighbour baseline returns the first text; the retrieval-augmented
decoder reads the first few distinct texts as part of its memory. In training, a
report's own entry is excluded (``exclude``), so the decoder learns from neighbours as a
held-out study would get them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from assistant.report.decoder.data import Finding, ReportRecord
from assistant.report.decoder.vocab import words

TIE_POOL = 50  # tied candidates compared for typicality, at most
CACHE_SIZE = 4096  # rankings kept (least recently used dropped): requests choose the codes


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def by_typicality(texts: Sequence[str]) -> list[int]:
    """Indices of ``texts``, highest mean word-set Jaccard to the others first (stable)."""
    if len(texts) <= 2:
        return list(range(len(texts)))
    bags = [frozenset(words(t)) for t in texts]
    mean = [sum(jaccard(bags[i], bags[j]) for j in range(len(bags)) if j != i)
            for i in range(len(bags))]
    return sorted(range(len(texts)), key=lambda i: -mean[i])


class ReportNeighbours:
    """The training reports (uid, codes, text) and their ranking for a study's findings."""

    def __init__(self, records: Sequence[ReportRecord]) -> None:
        self.uids = [r.uid for r in records]
        self.texts = [r.target for r in records]
        self.codes = [frozenset(f.code.lower() for f in r.findings) for r in records]
        self.terms = [frozenset(f.term.lower() for f in r.findings) for r in records]
        self._cache: OrderedDict[tuple[frozenset[str], str | None, int], list[str]] = (
            OrderedDict())
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.texts)

    def nearest(self, findings: Sequence[Finding], k: int = 1, exclude: str | None = None,
                ) -> list[str]:
        """Up to ``k`` distinct training texts, nearest first; ``exclude``: a training
        report's uid that must not be returned (the study itself, in training)."""
        codes = frozenset(f.code.lower() for f in findings)
        key = (codes, exclude, k)
        with self._lock:  # the service and ``Drafter.draft_many`` draft on several threads
            ranked = self._cache.get(key)
            if ranked is not None:
                self._cache.move_to_end(key)
                return list(ranked)
        ranked = self._rank(codes, frozenset(f.term.lower() for f in findings), k, exclude)
        with self._lock:
            self._cache[key] = ranked
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return list(ranked)

    def _rank(self, codes: frozenset[str], terms: frozenset[str], k: int,
              exclude: str | None) -> list[str]:
        sims = [(jaccard(codes, c), jaccard(terms, t))
                for c, t in zip(self.codes, self.terms, strict=True)]
        order = sorted((i for i in range(len(sims)) if self.uids[i] != exclude),
                       key=lambda i: sims[i], reverse=True)  # stable: training order on ties
        out: list[str] = []
        start = 0
        while start < len(order) and len(out) < k:
            end = start
            while end < len(order) and sims[order[end]] == sims[order[start]]:
                end += 1
            group = [self.texts[i] for i in order[start:end]]
            ranked = [group[i] for i in by_typicality(group[:TIE_POOL])] + group[TIE_POOL:]
            for text in ranked:
                if text not in out:
                    out.append(text)
                    if len(out) == k:
                        break
            start = end
        return out

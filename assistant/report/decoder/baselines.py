"""The two baselines every decoder figure is printed beside.

- Nearest neighbour: the training report whose codes are most similar to the study's
  (Jaccard over the full codes, then over the terms). Codes are often shared by many
  training reports (``normal`` by hundreds); among those tied, the one whose words
  overlap most with the other tied reports (the most typical wording) is returned.
- Fixed normal report: the most frequent report text among the training reports coded
  ``normal``, whatever the study.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from assistant.report.decoder.data import Finding, ReportRecord
from assistant.report.decoder.vocab import words

TIE_POOL = 50  # tied candidates compared for typicality, at most


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _typical(texts: Sequence[str]) -> str:
    """The text with the highest mean word-set Jaccard to the others (first on ties)."""
    if len(texts) <= 2:
        return texts[0]
    bags = [frozenset(words(t)) for t in texts]
    return texts[max(range(len(texts)), key=lambda i: sum(
        _jaccard(bags[i], bags[j]) for j in range(len(bags)) if j != i))]


class NearestNeighbour:
    def __init__(self, train: Sequence[ReportRecord]) -> None:
        self.train = list(train)
        self.codes = [frozenset(f.code.lower() for f in r.findings) for r in self.train]
        self.terms = [frozenset(f.term.lower() for f in r.findings) for r in self.train]
        self._cache: dict[frozenset[str], str] = {}

    def __call__(self, findings: Sequence[Finding]) -> str:
        codes = frozenset(f.code.lower() for f in findings)
        if codes not in self._cache:
            terms = frozenset(f.term.lower() for f in findings)
            sims = [(_jaccard(codes, c), _jaccard(terms, t))
                    for c, t in zip(self.codes, self.terms, strict=True)]
            best = max(sims)
            tied = [self.train[i].target for i, s in enumerate(sims) if s == best]
            self._cache[codes] = _typical(tied[:TIE_POOL])
        return self._cache[codes]


def fixed_normal_report(train: Sequence[ReportRecord]) -> str:
    counts = Counter(r.target for r in train if r.is_normal)
    if not counts:
        raise ValueError("no normal report in the training set")
    return counts.most_common(1)[0][0]

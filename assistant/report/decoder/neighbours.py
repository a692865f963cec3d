"""Training reports ranked by how similar their codes (and indications) are to a study's.

Similarity is the Jaccard overlap of the full codes (``Opacity/lung/base/left``), then of
the terms alone (``Opacity``). Codes are often shared by many training reports
(``normal`` by hundreds); among the reports tied at the top, the first TIE_POOL (in
training order) are ordered by typicality: the mean word-set Jaccard of a text to the
other tied texts, most typical first.

With an ``indication_weight`` w, a study that has an indication is ranked by one score
instead, ``Jaccard(codes) + TERM_WEIGHT * Jaccard(terms) + w * cosine(indications)``, the
cosine of the indications' TF-IDF vectors over their words as written (case and
punctuation kept), the most typical wording first among exact ties; a study without one
gets the codes-only ranking. The wording of an indication ("XXXX-year-old male with
dyspnea." against "Chest pain" or "721.3") tells which reporting practice, and so which
report template, a study comes from: the nearest report's scores rise by the README's
figures (report decoder section), and lower-cased words lost most of that.

Two users: the nearest-neighbour baseline returns the first text; the retrieval-augmented
decoder reads the first few distinct texts as part of its memory. In training, a
report's own entry is excluded (``exclude``), so the decoder learns from neighbours as a
held-out study would get them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from assistant.report.decoder.data import Finding, ReportRecord
from assistant.report.decoder.vocab import words

TIE_POOL = 50  # tied candidates compared for typicality, at most
TERM_WEIGHT = 0.5  # of the terms' Jaccard, beside the codes', with an indication weight
CACHE_SIZE = 4096  # rankings kept (least recently used dropped): requests choose the codes


def check_indication_weight(weight: float) -> None:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"indication_weight must be within [0, 1], got {weight}")


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
    """The training reports (uid, codes, indication, text) and their ranking for a
    study's findings (and, with ``indication_weight``, its indication)."""

    def __init__(self, records: Sequence[ReportRecord], indication_weight: float = 0.0,
                 ) -> None:
        check_indication_weight(indication_weight)
        self.uids = [r.uid for r in records]
        self.texts = [r.target for r in records]
        self.codes = [frozenset(f.code.lower() for f in r.findings) for r in records]
        self.terms = [frozenset(f.term.lower() for f in r.findings) for r in records]
        self.indication_weight = indication_weight
        self._by_text: dict[str, list[int]] = {}
        for i, text in enumerate(self.texts):
            self._by_text.setdefault(text, []).append(i)
        self._by_term: dict[str, list[int]] = {}
        for i, terms in enumerate(self.terms):
            for term in terms:
                self._by_term.setdefault(term, []).append(i)
        self._indications = (IndicationSimilarity([r.indication for r in records])
                             if indication_weight else None)
        self._cache: OrderedDict[tuple[frozenset[str], str | None, str | None, int],
                                 list[str]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.texts)

    def source(self, text: str, terms: frozenset[str]) -> str | None:
        """The first training report (uid) with this text whose codes carry one of
        ``terms`` (lower-case MeSH terms); None when none does."""
        return next((self.uids[i] for i in self._by_text.get(text, ())
                     if self.terms[i] & terms), None)

    def carrying(self, findings: Sequence[Finding], terms: frozenset[str],
                 ) -> list[tuple[str, str]]:
        """(text, uid) of every training report whose codes carry one of ``terms``
        (lower-case MeSH terms), those whose codes are most like ``findings``' first: the
        Jaccard of the codes, then of the terms, training order on ties. No indication and
        no typicality: a cheap order over all of them, where ``nearest`` ranks a few."""
        codes = frozenset(f.code.lower() for f in findings)
        study_terms = frozenset(f.term.lower() for f in findings)
        rows = sorted({i for term in terms for i in self._by_term.get(term, ())})
        rows.sort(key=lambda i: (-jaccard(codes, self.codes[i]),
                                 -jaccard(study_terms, self.terms[i])))
        return [(self.texts[i], self.uids[i]) for i in rows]

    def nearest(self, findings: Sequence[Finding], k: int = 1, exclude: str | None = None,
                indication: str | None = None) -> list[str]:
        """Up to ``k`` distinct training texts, nearest first; ``exclude``: a training
        report's uid that must not be returned (the study itself, in training);
        ``indication``: the study's, read only with an ``indication_weight``."""
        codes = frozenset(f.code.lower() for f in findings)
        if self._indications is None or not (indication or "").strip():
            indication = None  # the codes-only ranking, one cache entry for it
        key = (codes, indication, exclude, k)
        with self._lock:  # the service and ``Drafter.draft_many`` draft on several threads
            ranked = self._cache.get(key)
            if ranked is not None:
                self._cache.move_to_end(key)
                return list(ranked)
        terms = frozenset(f.term.lower() for f in findings)
        ranked = self._rank(codes, terms, indication, k, exclude)
        with self._lock:
            self._cache[key] = ranked
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return list(ranked)

    def _rank(self, codes: frozenset[str], terms: frozenset[str], indication: str | None,
              k: int, exclude: str | None) -> list[str]:
        code_sims = [jaccard(codes, c) for c in self.codes]
        term_sims = [jaccard(terms, t) for t in self.terms]
        keys: Sequence[tuple[float, float] | float]
        if self._indications is None or indication is None:
            keys = list(zip(code_sims, term_sims, strict=True))  # codes, then terms
        else:
            keys = (np.asarray(code_sims) + TERM_WEIGHT * np.asarray(term_sims)
                    + self.indication_weight * self._indications.cosine(indication)).tolist()
        order = sorted((i for i in range(len(keys)) if self.uids[i] != exclude),
                       key=lambda i: keys[i], reverse=True)  # stable: training order on ties
        out: list[str] = []
        start = 0
        while start < len(order) and len(out) < k:
            end = start
            while end < len(order) and keys[order[end]] == keys[order[start]]:
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


class IndicationSimilarity:
    """Cosine similarity of an indication to each training report's, over TF-IDF vectors
    of their whitespace-separated words as written (sublinear term frequency, smoothed
    idf, unit length; scikit-learn's ``TfidfVectorizer``)."""

    def __init__(self, indications: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._reports = len(indications)
        self._vectorizer: TfidfVectorizer | None = None
        if not any(ind.split() for ind in indications):
            return  # no words to compare: every similarity is 0
        self._vectorizer = TfidfVectorizer(token_pattern=r"[^\s]+", lowercase=False,
                                           sublinear_tf=True)
        self._matrix = self._vectorizer.fit_transform(indications).T.tocsr()  # (terms, reports)

    def cosine(self, indication: str) -> np.ndarray:
        """(reports,) similarities; zeros for an empty indication or unseen words."""
        if self._vectorizer is None or not indication.strip():
            return np.zeros(self._reports)
        query = self._vectorizer.transform([indication])
        return np.asarray((query @ self._matrix).todense()).ravel()

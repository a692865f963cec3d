"""Choosing one report among the decoder's candidates.

``most_consistent`` keeps the candidates whose asserted findings agree best with the
conditioning (F1 of the finding classes); ``consensus`` is minimum-Bayes-risk selection:
the candidate with the highest mean smoothed sentence BLEU against all the others, the
others standing in for the decoder's distribution over how the report could be worded.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from assistant.report.decoder.data import Finding
from assistant.report.decoder.findings import asserted, code_classes
from assistant.report.decoder.vocab import words


def agreement(text: str, findings: Sequence[Finding]) -> float:
    want, got = code_classes(findings), asserted(text)
    return 2 * len(want & got) / (len(want) + len(got))


def most_consistent(texts: Sequence[str], findings: Sequence[Finding]) -> str:
    """The first (best-ranked) text whose findings agree best with the conditioning."""
    return max(texts, key=lambda t: agreement(t, findings))


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(hyp: Sequence[str], ref: Sequence[str]) -> float:
    """BLEU-4 of one hypothesis against one reference, add-one smoothed for n > 1."""
    if not hyp or not ref:
        return 0.0
    log_p = 0.0
    for n in range(1, 5):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        match = sum(min(c, r[g]) for g, c in h.items())
        total = max(sum(h.values()), 0)
        if n == 1:
            if match == 0:
                return 0.0
            log_p += math.log(match / total)
        else:
            log_p += math.log((match + 1) / (total + 1))
    bp = min(0.0, 1 - len(ref) / len(hyp))
    return math.exp(log_p / 4 + bp)


def consensus(texts: Sequence[str], findings: Sequence[Finding] | None = None) -> str:
    """Minimum-Bayes-risk choice among ``texts`` (first on ties); with ``findings``, only
    among the texts that agree best with them."""
    if not texts:
        raise ValueError("no candidate texts")
    pool = list(texts)
    keep = list(range(len(pool)))
    if findings is not None:
        scores = [agreement(t, findings) for t in pool]
        keep = [i for i, s in enumerate(scores) if s == max(scores)]
    tokens = [words(t) for t in pool]
    if len(pool) == 1:
        return pool[0]

    def risk(i: int) -> float:
        return sum(sentence_bleu(tokens[i], tokens[j]) for j in range(len(pool)) if j != i)

    return pool[max(keep, key=risk)]

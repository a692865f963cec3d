"""Caption metrics from pycocoevalcap (BLEU-1..4, METEOR, ROUGE-L, CIDEr), with intervals.

Texts are scored as lower-case words without punctuation (``vocab.words``), one
reference per report. BLEU is the corpus BLEU of pycocoevalcap ("closest" reference
length), recomputed exactly for each bootstrap resample from per-report n-gram counts;
ROUGE-L and CIDEr are means of per-report scores (CIDEr's document frequencies from the
whole reference set, as pycocoevalcap computes them); METEOR is the METEOR jar's corpus
score, and for each resample the jar aggregates the resampled per-report statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from assistant.report.decoder.vocab import words

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


@dataclass(frozen=True)
class Scored:
    point: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    n: int

    def to_dict(self) -> dict[str, object]:
        return {"n": self.n, **{m: {"value": self.point[m], "low": self.low[m],
                                    "high": self.high[m]} for m in METRICS}}


def _bleu_stats(refs: Sequence[str], hyps: Sequence[str]) -> np.ndarray:
    """Per report: hyp length, closest ref length, then (correct, guess) for n = 1..4."""
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    rows = []
    for ref, hyp in zip(refs, hyps, strict=True):
        comps = cook_test(hyp, cook_refs([ref]), eff="closest")
        rows.append([comps["testlen"], comps["reflen"], *[
            v for k in range(4) for v in (comps["correct"][k], comps["guess"][k])]])
    return np.asarray(rows, dtype=np.float64)


def corpus_bleu(stats: np.ndarray) -> list[float]:
    """BLEU-1..4 from summed per-report counts (pycocoevalcap's formula)."""
    tiny, small = 1e-15, 1e-9
    total = stats.sum(axis=0)
    testlen, reflen = total[0], total[1]
    ratio = (testlen + tiny) / (reflen + small)
    log_bp = min(0.0, 1 - 1 / ratio) if ratio < 1 else 0.0
    out, log_sum = [], 0.0
    for k in range(4):
        correct, guess = total[2 + 2 * k], total[3 + 2 * k]
        log_sum += math.log((correct + tiny) / (guess + small))
        out.append(math.exp(log_sum / (k + 1) + log_bp))
    return out


def _prepare(texts: Sequence[str]) -> dict[int, list[str]]:
    return {i: [" ".join(words(t)) or "empty"] for i, t in enumerate(texts)}


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]],
            resamples: Sequence[np.ndarray]) -> tuple[float, list[float]]:
    """The jar's corpus METEOR, and the same for each resample of the reports: the jar
    aggregates per-report statistics (pycocoevalcap's ``_stat`` lines) on an EVAL line."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    proc = scorer.meteor_p

    def aggregate(lines: Sequence[str]) -> float:
        proc.stdin.write(("EVAL ||| " + " ||| ".join(lines) + "\n").encode())
        proc.stdin.flush()
        for _ in lines:  # per-report scores, not needed here
            proc.stdout.readline()
        return float(proc.stdout.readline().strip())

    try:
        stats = [scorer._stat(res[i][0], gts[i]) for i in gts]
        corpus = aggregate(stats)
        return corpus, [aggregate([stats[j] for j in idx]) for idx in resamples]
    finally:  # the scorer runs the METEOR jar in a Java process
        proc.kill()
        proc.wait()


def score(refs: Sequence[str], hyps: Sequence[str], n_boot: int = 1000, seed: int = 0,
          meteor: bool = True) -> Scored:
    """Every metric with a 95% bootstrap interval (``n_boot`` resamples of reports)."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(refs) != len(hyps) or not refs:
        raise ValueError(f"{len(refs)} references for {len(hyps)} hypotheses")
    gts, res = _prepare(refs), _prepare(hyps)
    stats = _bleu_stats([g[0] for g in gts.values()], [r[0] for r in res.values()])
    per: dict[str, np.ndarray] = {}
    point = dict(zip(METRICS[:4], corpus_bleu(stats), strict=True))
    point["ROUGE-L"], rouge = Rouge().compute_score(gts, res)
    point["CIDEr"], cider = Cider().compute_score(gts, res)
    per["ROUGE-L"], per["CIDEr"] = np.asarray(rouge), np.asarray(cider)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in METRICS}
    resamples = [rng.integers(0, len(refs), len(refs)) for _ in range(n_boot)]
    point["METEOR"] = math.nan
    if meteor:
        point["METEOR"], draws["METEOR"] = _meteor(gts, res, resamples)
    for idx in resamples:
        for m, v in zip(METRICS[:4], corpus_bleu(stats[idx]), strict=True):
            draws[m].append(v)
        for m, values in per.items():
            draws[m].append(float(values[idx].mean()))
    if not resamples:
        return Scored({m: float(point[m]) for m in METRICS}, {m: math.nan for m in METRICS},
                      {m: math.nan for m in METRICS}, len(refs))
    low = {m: float(np.percentile(v, 2.5)) if v else math.nan for m, v in draws.items()}
    high = {m: float(np.percentile(v, 97.5)) if v else math.nan for m, v in draws.items()}
    return Scored({m: float(point[m]) for m in METRICS}, low, high, len(refs))

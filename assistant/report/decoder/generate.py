"""Decoding: greedy and beam search over a batch, with the decoder's key-value cache.

Every step feeds only the newest token; earlier positions come from the cache. Beams are
rows of one batch (B * beam), so a batch of studies decodes together; a study whose search
is done leaves the batch, so a report never depends on the other studies beside it. Repetition is
controlled by forbidding any repeated n-gram (``no_repeat_ngram``) and by a repetition
penalty on tokens already written; ``max_tokens`` caps the length; padding, BOS and the
unknown token are never produced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from assistant.report.decoder.model import KV, Memory, ReportDecoder

BOS_ID, EOS_ID, BANNED = 1, 2, (0, 1, 3)


@dataclass(frozen=True)
class DecodeConfig:
    beam: int = 4
    max_tokens: int = 120
    min_tokens: int = 0  # the end of the report is not allowed before this many tokens
    no_repeat_ngram: int = 3
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0  # beam score = log p / length ** length_penalty
    # Among the finished beams, prefer the best-scored one whose asserted findings agree
    # best with the conditioning findings (``findings.asserted``).
    consistent: bool = True
    # With ``consistent`` (or ``samples``): the first this-many distinct nearest training
    # reports (``neighbours.py``) join the candidates after the decoder's own, so a
    # training report's text is returned only when its findings agree better with the
    # conditioning than every decoded candidate's (a beam wins ties). Needs a drafter with
    # the training reports; 0: the decoder's candidates only.
    neighbour_candidates: int = 0
    # Minimum-Bayes-risk decoding: with ``samples`` > 0, that many reports are also drawn
    # from the decoder and the report returned is the candidate (beams and samples) that
    # agrees best with the others (expected BLEU), among those whose findings agree best
    # with the conditioning.
    samples: int = 0
    # With the training reports (``neighbours``): drop the chosen report's sentences that
    # assert a finding not given or deny one given, and borrow a sentence for each given
    # finding it leaves out, from the nearest training reports, where one is backed by the
    # codes (``complete.py``).
    complete: bool = False
    temperature: float = 1.0
    top_p: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.beam < 1 or self.max_tokens < 1:
            raise ValueError("beam and max_tokens must be at least 1")
        if self.neighbour_candidates < 0:
            raise ValueError(f"neighbour_candidates {self.neighbour_candidates} is negative")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens {self.min_tokens} must be within [0, max_tokens]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _banned_ngrams(seqs: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens that would complete an n-gram already present in a row of seqs (R, T),
    as (rows, tokens): row ``rows[j]`` may not write ``tokens[j]`` next."""
    none = torch.zeros(0, dtype=torch.long)
    if n <= 0 or seqs.shape[1] < n:
        return none, none
    windows = seqs.unfold(1, n, 1)  # (R, T - n + 1, n)
    prefix = seqs[:, seqs.shape[1] - n + 1:]  # (R, n - 1): the n-gram being completed
    rows, at = (windows[:, :, :n - 1] == prefix[:, None, :]).all(-1).nonzero(as_tuple=True)
    return rows, windows[rows, at, n - 1]


def _step(model: ReportDecoder, seqs: torch.Tensor, mem: Memory, step: int,
          caches: list[KV] | None, cfg: DecodeConfig, limit: int,
          ) -> tuple[torch.Tensor, list[KV]]:
    """One decoding step over the cache: the next token's log-probabilities (R, V) for
    each row of ``seqs`` after the bans, the length floor and the cap (at ``limit`` only
    the end may follow), and the new caches."""
    logits, caches = model.decode(seqs[:, -1:], mem, start=step, caches=caches)
    logp = _adjust(logits[:, -1].float().log_softmax(-1), seqs, cfg)
    if step < cfg.min_tokens:
        logp[:, EOS_ID] = -torch.inf
    if step == limit:
        eos = logp[:, EOS_ID].clone()
        logp.fill_(-torch.inf)
        logp[:, EOS_ID] = torch.where(torch.isfinite(eos), eos, 0.0)
    return logp, caches


def _reorder(cache: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The cache (R, nh, T, hs) of the rows ``index``, with room for one more position
    (which the next step writes in place). One copy per step instead of a reorder and an
    append; ``index_select``, because ``cache[index]`` made a forced 100-token report
    about a fifth slower on this CPU."""
    _, heads, t, size = cache.shape
    out = cache.new_empty(len(index), heads, t + 1, size)
    torch.index_select(cache, 0, index, out=out[:, :, :t])
    return out


def _keep_best(finished: list[tuple[float, list[int]]], hyp: tuple[float, list[int]],
               k: int) -> None:
    """Add a finished hypothesis, keeping the ``k`` best by normalised score."""
    finished.append(hyp)
    finished.sort(key=lambda f: -f[0])
    del finished[k:]


def _done(finished: list[tuple[float, list[int]]], best_running: float, length: int,
          cfg: DecodeConfig, k: int) -> bool:
    """A study is done when it has ``k`` finished hypotheses and its best running beam,
    normalised at the next length, cannot beat the worst of them."""
    if len(finished) < k:
        return best_running == -torch.inf
    return best_running / length ** cfg.length_penalty <= finished[-1][0]


def _adjust(logp: torch.Tensor, seqs: torch.Tensor, cfg: DecodeConfig) -> torch.Tensor:
    """Log-probabilities (R, V) after the bans and the repetition penalty."""
    logp[:, list(BANNED)] = -torch.inf
    if cfg.repetition_penalty != 1.0 and seqs.shape[1] > 1:
        seen = torch.zeros_like(logp, dtype=torch.bool).scatter_(1, seqs, True)
        seen[:, EOS_ID] = False
        logp = torch.where(seen, logp * cfg.repetition_penalty, logp)
    rows, toks = _banned_ngrams(seqs, cfg.no_repeat_ngram)
    logp[rows, toks] = -torch.inf
    return logp


def generate(model: ReportDecoder, memory: Memory, cfg: DecodeConfig) -> list[list[int]]:
    """Token ids (without BOS and EOS) of the best hypothesis for each study in ``memory``."""
    return [c[0] for c in candidates(model, memory, cfg)]


@torch.inference_mode()
def candidates(model: ReportDecoder, memory: Memory, cfg: DecodeConfig) -> list[list[list[int]]]:
    """Per study in ``memory`` (batch B): up to ``beam`` finished hypotheses (token ids
    without BOS and EOS), best score first.

    A study leaves the batch as soon as it is done, so the studies still decoding pay
    for no finished ones, and each study gets what it would get decoded alone.
    """
    model.eval()
    b, k = memory.states.shape[0], cfg.beam
    limit = min(cfg.max_tokens, model.config.max_len - 1)
    active = list(range(b))  # the study each group of k rows decodes
    mem = memory.shared(k)  # a study's k beams read its one memory entry
    seqs = torch.full((b * k, 1), BOS_ID, dtype=torch.long)
    scores = torch.zeros(b, k)
    scores[:, 1:] = -torch.inf  # all beams start identical: keep one
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    unfinished: dict[int, list[int]] = {}  # a study that ended with no finished hypothesis
    caches: list[KV] | None = None
    for step in range(limit + 1):  # ``limit`` tokens, then the end
        logp, caches = _step(model, seqs, mem, step, caches, cfg, limit)  # (n*k, V)
        n, vocab = len(active), logp.shape[1]
        total = (scores.view(-1, 1) + logp).view(n, k * vocab)
        top, idx = total.topk(2 * k, dim=1)  # (n, 2k)
        rows, toks = idx // vocab, idx % vocab
        next_rows, next_toks, next_scores = [], [], []
        length = seqs.shape[1]  # tokens so far, BOS included: an EOS now makes it final
        for g, study in enumerate(active):
            kept = 0
            for rank, (s, r, t) in enumerate(zip(top[g].tolist(), rows[g].tolist(),
                                                 toks[g].tolist(), strict=True)):
                if s == -torch.inf or kept == k:
                    break
                src = g * k + r
                if t == EOS_ID:
                    if rank < k:  # as in common beam search: only a top-k EOS finishes
                        _keep_best(finished[study], (s / length ** cfg.length_penalty,
                                                     seqs[src, 1:].tolist()), k)
                    continue
                next_rows.append(src)
                next_toks.append(t)
                next_scores.append(s)
                kept += 1
            while kept < k:  # pad with a dead beam
                next_rows.append(g * k)
                next_toks.append(EOS_ID)
                next_scores.append(-torch.inf)
                kept += 1
        scores = torch.tensor(next_scores).view(n, k)
        ended = [_done(finished[study], float(scores[g].max()), length + 1, cfg, k)
                 for g, study in enumerate(active)]
        for g, study in enumerate(active):
            if ended[g] and not finished[study]:  # every beam died without an end
                unfinished[study] = seqs[g * k, 1:].tolist()
        going = [g for g, e in enumerate(ended) if not e]
        if not going:  # at the latest at ``limit``, where only the end may follow
            break
        keep = torch.tensor(going)
        index = torch.tensor(next_rows).view(n, k)[keep].flatten()
        if len(going) < n:  # drop the studies that are done
            active = [active[g] for g in going]
            scores = scores[keep]
            mem = mem.select(keep)
        new = torch.tensor(next_toks).view(n, k)[keep].view(-1, 1)
        seqs = torch.cat([seqs.index_select(0, index), new], dim=1)
        caches = [(_reorder(kc, index), _reorder(vc, index)) for kc, vc in caches]
    out = []
    for i in range(b):
        done = sorted(finished[i], key=lambda f: -f[0])
        out.append([f[1] for f in done] or [unfinished.get(i, [])])
    return out


@torch.inference_mode()
def sample(model: ReportDecoder, memory: Memory, cfg: DecodeConfig) -> list[list[list[int]]]:
    """Per study: ``cfg.samples`` reports drawn from the decoder (temperature, nucleus
    ``top_p``), with a generator seeded by ``cfg.seed``, so a call is reproducible."""
    model.eval()
    b, n = memory.states.shape[0], cfg.samples
    limit = min(cfg.max_tokens, model.config.max_len - 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    mem = memory.shared(n)  # a study's n samples read its one memory entry
    seqs = torch.full((b * n, 1), BOS_ID, dtype=torch.long)
    alive = torch.ones(b * n, dtype=torch.bool)
    caches: list[KV] | None = None
    for step in range(limit + 1):
        logp, caches = _step(model, seqs, mem, step, caches, cfg, limit)
        probs = (logp / cfg.temperature).softmax(-1)
        probs = torch.nan_to_num(probs, nan=0.0)
        ranked, order = probs.sort(dim=-1, descending=True)
        drop = ranked.cumsum(-1) - ranked > cfg.top_p  # keep the smallest nucleus
        ranked[drop] = 0.0
        ranked[ranked.sum(-1) == 0, 0] = 1.0  # a fully banned row: take its best token
        pick = order.gather(1, torch.multinomial(ranked, 1, generator=gen))  # (B*n, 1)
        pick[~alive] = EOS_ID
        seqs = torch.cat([seqs, pick], dim=1)
        alive &= pick[:, 0] != EOS_ID
        if not bool(alive.any()):
            break
    out: list[list[list[int]]] = []
    for i in range(b):
        group = []
        for row in seqs[i * n:(i + 1) * n, 1:].tolist():
            group.append(row[:row.index(EOS_ID)] if EOS_ID in row else row)
        out.append(group)
    return out

"""A trained report decoder as a product: weights, vocabularies, decoding settings and
provenance (split manifest sha256, data record, training config, command, metrics) in
one file; ``Drafter`` turns findings (+ indication, + image tokens) into report text."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from assistant.checkpoint_io import CheckpointError, read_payload, write_payload
from assistant.report.decoder.complete import Completed, complete
from assistant.report.decoder.data import Finding
from assistant.report.decoder.generate import DecodeConfig, candidates, sample
from assistant.report.decoder.model import DecoderConfig, ReportDecoder
from assistant.report.decoder.neighbours import ReportNeighbours
from assistant.report.decoder.select import consensus, most_consistent
from assistant.report.decoder.vocab import (
    MAX_MODIFIERS,
    UNK_ID,
    Condition,
    Vocab,
    detokenize,
    encode_condition,
    encode_neighbours,
    words,
)

FORMAT = "assistant-report-checkpoint/1"
RELEASE_NAME = "report-iu-xray.pt"
T = TypeVar("T")


class ReportCheckpointError(CheckpointError):
    """A report checkpoint is missing, corrupt, of another format or inconsistent."""


def collate_conditions(conds: Sequence[Condition]) -> dict[str, torch.Tensor]:
    """Pad conditions to one batch: ids, kinds, slots, positions (B, M), probs (B, M) and,
    when any condition has neighbour reports, retrieved (B, R)."""
    m = max(len(c.ids) for c in conds)
    out = {k: torch.zeros(len(conds), m, dtype=torch.long)
           for k in ("ids", "kinds", "slots", "positions")}
    out["probs"] = torch.ones(len(conds), m)
    for i, c in enumerate(conds):
        n = len(c.ids)
        out["ids"][i, :n] = torch.tensor(c.ids)
        out["kinds"][i, :n] = torch.tensor(c.kinds)
        out["slots"][i, :n] = torch.tensor(c.slots)
        out["positions"][i, :n] = torch.tensor(c.positions)
        out["probs"][i, :n] = torch.tensor(c.probabilities, dtype=torch.float32)
    r = max(len(c.retrieved) for c in conds)
    if r:
        out["retrieved"] = torch.zeros(len(conds), r, dtype=torch.long)
        for i, c in enumerate(conds):
            out["retrieved"][i, :len(c.retrieved)] = torch.tensor(c.retrieved)
    return out


@dataclass
class ReportBundle:
    model: ReportDecoder
    text_vocab: Vocab
    cond_vocab: Vocab
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def name(self) -> str:
        return str(self.provenance.get("name", "report-decoder"))

    @property
    def reads_training_reports(self) -> str | None:
        """Why drafting with this decoder needs its training reports (``neighbours``), or
        None when it does not."""
        if self.model.config.retrieved:
            return "reads its nearest training reports"
        if self.decode.neighbour_candidates:
            return "chooses among its nearest training reports too"
        if self.decode.complete:
            return "completes its drafts from its nearest training reports"
        return None

    def vocabulary(self) -> dict[str, list[str]]:
        """The finding terms and modifiers this decoder was trained with (lower case):
        a code made of anything else would reach it as the unknown token."""
        return {kind: sorted(t[2:] for t in self.cond_vocab.tokens if t.startswith(prefix))
                for kind, prefix in (("terms", "T:"), ("modifiers", "M:"))}

    def unknown_parts(self, finding: Finding) -> list[str]:
        """The parts of ``finding``'s code this decoder never saw in training (the
        modifiers it reads: the first six), each with the closest known spelling."""
        parts = [("term", "terms", finding.term.lower())] + [
            ("modifier", "modifiers", m) for m in finding.modifiers[:MAX_MODIFIERS]]
        unknown = [(kind, group, value) for kind, group, value in parts
                   if self.cond_vocab.id(f"{kind[0].upper()}:{value}") == UNK_ID]
        if not unknown:  # the common case: no vocabulary listing needed
            return []
        known = self.vocabulary()
        out = []
        for kind, group, value in unknown:
            close = difflib.get_close_matches(value, known[group], n=1, cutoff=0.6)
            out.append(f"{kind} {value!r}" + (f", did you mean {close[0]!r}?" if close else ""))
        return out

    def save(self, path: Path) -> str:
        payload = {"format": FORMAT, "config": self.model.config.to_dict(),
                   "state_dict": {k: v.detach().clone()
                                  for k, v in self.model.state_dict().items()},
                   "text_vocab": list(self.text_vocab.tokens),
                   "cond_vocab": list(self.cond_vocab.tokens),
                   "decode": self.decode.to_dict(), "provenance": self.provenance}
        self.sha256 = write_payload(payload, path)
        return self.sha256


def load_report_bundle(path: Path) -> ReportBundle:
    payload, digest = read_payload(path, FORMAT, "report checkpoint", ReportCheckpointError)
    try:
        config = DecoderConfig.from_dict(payload["config"])
        text_vocab, cond_vocab = Vocab(tuple(payload["text_vocab"])), Vocab(
            tuple(payload["cond_vocab"]))
        if (len(text_vocab), len(cond_vocab)) != (config.text_vocab, config.cond_vocab):
            raise ValueError("vocabulary sizes differ from the model config")
        model = ReportDecoder(config)
        model.load_state_dict(payload["state_dict"])
        return ReportBundle(model.eval(), text_vocab, cond_vocab,
                            DecodeConfig(**payload["decode"]), dict(payload["provenance"]),
                            digest)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ReportCheckpointError(f"{path}: checkpoint content is inconsistent: {exc}"
                                    ) from exc


def _indications(findings: Sequence[object], indications: Sequence[str | None] | None,
                 ) -> Sequence[str | None]:
    """One indication (or None) per study."""
    if indications is None:
        return [None] * len(findings)
    if len(indications) != len(findings):
        raise ValueError(f"{len(indications)} indications for {len(findings)} studies")
    return indications


class Drafter:
    """Findings (+ indication, + image tokens when the model takes them) -> report text.

    A retrieval decoder (``config.retrieved`` > 0) also reads the nearest training
    reports, and ``decode.neighbour_candidates`` chooses among them, so either needs
    ``neighbours``: the training reports it was trained beside."""

    def __init__(self, bundle: ReportBundle, neighbours: ReportNeighbours | None = None,
                 ) -> None:
        reason = bundle.reads_training_reports
        if reason and neighbours is None:
            raise ValueError(f"{bundle.name} {reason}: a drafter for it needs them "
                             "(neighbours)")
        self.bundle, self.neighbours = bundle, neighbours
        bundle.model.eval()

    def condition(self, findings: Sequence[Finding], indication: str | None) -> Condition:
        cfg = self.bundle.model.config
        retrieved: tuple[int, ...] = ()
        if cfg.retrieved and self.neighbours is not None:
            retrieved = encode_neighbours(self.bundle.text_vocab, self.neighbours.nearest(
                findings, cfg.retrieved, indication=indication), cfg.retrieved_len)
        return encode_condition(self.bundle.cond_vocab, findings, indication, retrieved)

    @torch.inference_mode()
    def draft(self, findings: Sequence[Sequence[Finding]],
              indications: Sequence[str | None] | None = None,
              image_tokens: torch.Tensor | None = None,
              decode: DecodeConfig | None = None) -> list[str]:
        """One report text per study; studies decode together as one batch."""
        return [r.text for r in self.draft_reports(findings, indications, image_tokens,
                                                   decode)]

    @torch.inference_mode()
    def draft_reports(self, findings: Sequence[Sequence[Finding]],
                      indications: Sequence[str | None] | None = None,
                      image_tokens: torch.Tensor | None = None,
                      decode: DecodeConfig | None = None) -> list[Completed]:
        """``draft``, with what completion borrowed and dropped for each report."""
        cfg = decode or self.bundle.decode
        pools = self.decoded_candidates(findings, indications, image_tokens, cfg)
        return [self.finish(self.choose(texts, f, cfg, ind), f, cfg, ind) for f, texts, ind
                in zip(findings, pools, _indications(findings, indications), strict=True)]

    @torch.inference_mode()
    def decoded_candidates(self, findings: Sequence[Sequence[Finding]],
                           indications: Sequence[str | None] | None = None,
                           image_tokens: torch.Tensor | None = None,
                           decode: DecodeConfig | None = None) -> list[list[str]]:
        """Per study: the finished beams, best first, then (``samples``) the drawn reports."""
        if not findings:
            return []
        cfg = decode or self.bundle.decode
        model, vocab = self.bundle.model, self.bundle.text_vocab
        indications = _indications(findings, indications)
        conds = [self.condition(f, ind) for f, ind in zip(findings, indications, strict=True)]
        memory = model.encode(collate_conditions(conds), image_tokens)
        pools = candidates(model, memory, cfg)
        if cfg.samples:
            pools = [beams + drawn for beams, drawn in
                     zip(pools, sample(model, memory, cfg), strict=True)]
        return [[detokenize(vocab.decode(seq)) for seq in hyps] for hyps in pools]

    def choose(self, texts: Sequence[str], findings: Sequence[Finding],
               decode: DecodeConfig | None = None, indication: str | None = None) -> str:
        """The report for one study among its decoded ``texts`` (best first) and, with
        ``neighbour_candidates``, its nearest training reports after them (ranked with
        its ``indication`` where the neighbours read indications)."""
        cfg = decode or self.bundle.decode
        pool = list(texts)
        if cfg.neighbour_candidates:
            if self.neighbours is None:
                raise ValueError("neighbour_candidates needs the training reports: "
                                 "a drafter with neighbours")
            pool += self.neighbours.nearest(findings, cfg.neighbour_candidates,
                                            indication=indication)
        if cfg.samples:
            return consensus(pool, findings if cfg.consistent else None)
        return most_consistent(pool, findings) if cfg.consistent else pool[0]

    def finish(self, text: str, findings: Sequence[Finding],
               decode: DecodeConfig | None = None, indication: str | None = None,
               ) -> Completed:
        """The chosen ``text``, completed against the findings where ``complete`` is set
        (``complete.py``)."""
        cfg = decode or self.bundle.decode
        if not cfg.complete:
            return Completed(text)
        if self.neighbours is None:
            raise ValueError("complete needs the training reports: a drafter with neighbours")
        return complete(text, findings, self.neighbours, indication)

    def from_training_report(self, text: str, findings: Sequence[Finding],
                             indication: str | None = None) -> bool:
        """Whether ``text`` is, word for word, one of the training reports the drafter
        reads or offers as a candidate for these findings (another patient's report,
        de-identified)."""
        k = max(self.bundle.model.config.retrieved, self.bundle.decode.neighbour_candidates)
        if self.neighbours is None or not k:
            return False
        target = words(text)
        return any(words(t) == target for t in
                   self.neighbours.nearest(findings, k, indication=indication))

    def draft_many(self, findings: Sequence[Sequence[Finding]],
                   indications: Sequence[str | None] | None = None,
                   decode: DecodeConfig | None = None, batch: int = 32, workers: int = 1,
                   ) -> list[str]:
        """Many studies, in order: batches of ``batch`` studies, ``workers`` batches
        decoding at once on as many threads.

        Each report is what ``draft`` gives for its study alone (a study never depends on
        the others in its batch). A decoding step of a few dozen beams is too small to
        share between cores inside torch's operations, so on a multi-core CPU whole batches
        run side by side instead: keep ``workers`` times torch's thread count within the
        cores (``scripts/bench_report.py`` runs one torch thread per worker)."""
        return self._many(lambda f, ind: self.draft(f, ind, None, decode), findings,
                          indications, batch, workers)

    def candidates_many(self, findings: Sequence[Sequence[Finding]],
                        indications: Sequence[str | None] | None = None,
                        decode: DecodeConfig | None = None, batch: int = 32,
                        workers: int = 1) -> list[list[str]]:
        """``decoded_candidates`` for many studies, batched as ``draft_many`` batches."""
        return self._many(lambda f, ind: self.decoded_candidates(f, ind, None, decode),
                          findings, indications, batch, workers)

    def _many(self, one: Callable[[Sequence[Sequence[Finding]], Sequence[str | None]],
                                  list[T]],
              findings: Sequence[Sequence[Finding]],
              indications: Sequence[str | None] | None, batch: int, workers: int,
              ) -> list[T]:
        if batch < 1 or workers < 1:
            raise ValueError(f"batch ({batch}) and workers ({workers}) must be at least 1")
        indications = _indications(findings, indications)
        starts = range(0, len(findings), batch)

        def part(i: int) -> list[T]:
            return one(findings[i:i + batch], indications[i:i + batch])

        if workers == 1 or len(starts) <= 1:
            return [out for i in starts for out in part(i)]
        with ThreadPoolExecutor(min(workers, len(starts))) as pool:
            return [out for chunk in pool.map(part, starts) for out in chunk]

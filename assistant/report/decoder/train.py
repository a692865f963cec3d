"""Training the report decoder: teacher forcing, AdamW with warm-up and cosine decay,
early stopping on validation loss, a fixed seed, a progress bar.

Augmentation that keeps the meaning: the order of the findings is shuffled, and the
indication is dropped from a share of the training examples (``drop_indication``) so
the model also drafts from findings alone. Image tokens, when examples carry them, are
the frozen image encoder's patch tokens; the decoder learns their projection.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from assistant.report.decoder.bundle import ReportBundle, collate_conditions
from assistant.report.decoder.data import Finding
from assistant.report.decoder.generate import DecodeConfig
from assistant.report.decoder.model import DecoderConfig, ReportDecoder
from assistant.report.decoder.vocab import (
    Vocab,
    condition_tokens,
    encode_condition,
    encode_neighbours,
    tokenize,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    findings: tuple[Finding, ...]
    indication: str
    target: str
    image_tokens: torch.Tensor | None = None  # (P, image_dim)
    neighbours: tuple[str, ...] = ()  # nearest training reports (retrieval decoders)


@dataclass(frozen=True)
class TrainReportConfig:
    width: int = 256
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 3
    dropout: float = 0.1
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    patience: int = 6
    label_smoothing: float = 0.1
    drop_indication: float = 0.2
    # Share of the decoder's input tokens replaced by the unknown token in training, so
    # the decoder leans on the findings rather than on the words before (word dropout).
    token_dropout: float = 0.0
    min_count: int = 2
    max_len: int = 160
    seed: int = 0
    max_minutes: float = 60.0
    # Retrieval: how many nearest training reports the decoder reads (0: none), and at
    # most how many of their tokens in all.
    retrieved: int = 0
    retrieved_len: int = 128
    # Weight of the indications' similarity in ranking the neighbours (0: codes alone).
    retrieved_indication: float = 0.0
    copy: bool = False  # copy words from the neighbours (pointer-generator mixture)
    # Training steps in bfloat16 autocast (weights, optimiser and validation stay float32):
    # 1.28x faster steps on this AVX-512 BF16 CPU, about 1.15x over a whole run (README).
    bf16: bool = False

    def __post_init__(self) -> None:
        checks = ((self.epochs >= 1, "epochs must be at least 1"),
                  (self.width >= self.heads >= 1 and self.width % self.heads == 0,
                   f"width {self.width} must be a positive multiple of heads {self.heads}"),
                  (self.decoder_layers >= 1 and self.encoder_layers >= 1,
                   "there must be at least one encoder and one decoder layer"),
                  (self.lr > 0 and self.max_minutes > 0 and self.batch_size >= 1,
                   "lr, max_minutes and batch_size must be positive"),
                  (0 <= self.token_dropout < 1 and 0 <= self.dropout < 1,
                   "dropout shares must be within [0, 1)"),
                  (self.retrieved >= 0, "retrieved must not be negative"))
        for ok, why in checks:
            if not ok:
                raise ValueError(why)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_vocabs(train: Sequence[Example], min_count: int) -> tuple[Vocab, Vocab]:
    text = Vocab.build((tokenize(e.target) for e in train), min_count=min_count)
    cond = Vocab.build(([t[0] for t in condition_tokens(e.findings, e.indication)]
                        for e in train), min_count=1)
    return text, cond


def _targets(vocab: Vocab, examples: Sequence[Example], max_len: int) -> torch.Tensor:
    """(B, T) ids: BOS, the report's tokens, EOS, padding (0)."""
    seqs = [[1, *vocab.encode(tokenize(e.target))[:max_len - 2], 2] for e in examples]
    out = torch.zeros(len(seqs), max(len(s) for s in seqs), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s)
    return out


def _batch(bundle: ReportBundle, examples: Sequence[Example], rng: random.Random | None,
           cfg: TrainReportConfig) -> tuple[dict[str, torch.Tensor], torch.Tensor,
                                            torch.Tensor | None]:
    conds = []
    for e in examples:
        findings, indication = list(e.findings), e.indication
        if rng is not None:  # augmentation, training only
            rng.shuffle(findings)
            if rng.random() < cfg.drop_indication:
                indication = ""
        retrieved = encode_neighbours(bundle.text_vocab, e.neighbours[:cfg.retrieved],
                                      cfg.retrieved_len) if cfg.retrieved else ()
        conds.append(encode_condition(bundle.cond_vocab, findings, indication, retrieved))
    images = None
    if examples[0].image_tokens is not None:
        images = torch.stack([e.image_tokens for e in examples  # type: ignore[misc]
                              ])
    return collate_conditions(conds), _targets(bundle.text_vocab, examples, cfg.max_len), images


def length_batches(examples: Sequence[Example], size: int, rng: random.Random,
                   ) -> list[list[Example]]:
    """Shuffled batches of similar target length (less padding): examples are shuffled,
    sorted by length within pools of 50 batches, cut into batches, and the batches
    shuffled."""
    order = list(examples)
    rng.shuffle(order)
    pool = 50 * size
    batches: list[list[Example]] = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i:i + pool], key=lambda e: len(e.target))
        batches.extend(chunk[j:j + size] for j in range(0, len(chunk), size))
    rng.shuffle(batches)
    return batches


def _loss(model: ReportDecoder, cond: dict[str, torch.Tensor], targets: torch.Tensor,
          images: torch.Tensor | None, smoothing: float, token_dropout: float = 0.0,
          ) -> torch.Tensor:
    inputs = targets[:, :-1]
    if token_dropout > 0:
        hide = (torch.rand(inputs.shape) < token_dropout) & (inputs > 3)
        inputs = inputs.masked_fill(hide, 3)  # the unknown token
    logits = model(cond, inputs, images)  # (B, T-1, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1),
                           ignore_index=0, label_smoothing=smoothing)


@torch.no_grad()
def evaluate_loss(bundle: ReportBundle, examples: Sequence[Example], cfg: TrainReportConfig,
                  ) -> float:
    bundle.model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), 64):
        chunk = examples[i:i + 64]
        cond, targets, images = _batch(bundle, chunk, None, cfg)
        n = int((targets[:, 1:] > 0).sum())
        total += float(_loss(bundle.model, cond, targets, images, 0.0)) * n
        count += n
    return total / max(count, 1)


def train_decoder(train: Sequence[Example], val: Sequence[Example], cfg: TrainReportConfig,
                  provenance: dict[str, Any] | None = None,
                  decode: DecodeConfig | None = None, progress: bool = True) -> ReportBundle:
    """Train on ``train``, stop early on ``val`` loss; the best epoch's weights are kept."""
    if not train or not val:
        raise ValueError("training needs training and validation examples")
    if cfg.retrieved and not all(e.neighbours for e in (*train, *val)):
        raise ValueError("a retrieval decoder trains on examples with their neighbours")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    text_vocab, cond_vocab = build_vocabs(train, cfg.min_count)
    img = train[0].image_tokens
    mcfg = DecoderConfig(len(text_vocab), len(cond_vocab), cfg.width, cfg.heads,
                         cfg.encoder_layers, cfg.decoder_layers, max_len=cfg.max_len,
                         dropout=cfg.dropout, image_dim=None if img is None else img.shape[-1],
                         retrieved=cfg.retrieved, retrieved_len=cfg.retrieved_len,
                         retrieved_indication=cfg.retrieved_indication, copy=cfg.copy)
    bundle = ReportBundle(ReportDecoder(mcfg), text_vocab, cond_vocab, decode or DecodeConfig(),
                          dict(provenance or {}))
    model = bundle.model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    best, best_state, best_epoch, history = math.inf, None, -1, []
    start = time.monotonic()
    for epoch in range(cfg.epochs):
        model.train()
        bar = tqdm(length_batches(train, cfg.batch_size, rng), desc=f"epoch {epoch + 1}",
                   disable=not progress, leave=False)
        running = 0.0
        for chunk in bar:
            cond, targets, images = _batch(bundle, chunk, rng, cfg)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = _loss(model, cond, targets, images, cfg.label_smoothing,
                             cfg.token_dropout)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            value = float(loss.detach())
            running = 0.9 * running + 0.1 * value if running else value
            bar.set_postfix(loss=f"{running:.3f}")
        val_loss = evaluate_loss(bundle, val, cfg)
        history.append({"epoch": epoch + 1, "train_loss": running, "val_loss": val_loss})
        log.info("epoch %d: train loss %.4f, validation loss %.4f", epoch + 1, running, val_loss)
        if val_loss < best - 1e-4:
            best, best_epoch = val_loss, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch + 1 - best_epoch >= cfg.patience:
            log.info("early stop: no improvement for %d epochs", cfg.patience)
            break
        if (time.monotonic() - start) / 60 > cfg.max_minutes:
            log.warning("stopping at the %.0f-minute budget", cfg.max_minutes)
            break
    if best_state is None:  # no epoch finished with a finite validation loss
        raise ValueError("no epoch of training finished with a validation loss: nothing was "
                         "trained, so nothing is saved")
    model.load_state_dict(best_state)
    model.eval()
    bundle.provenance.update({"train_config": cfg.to_dict(), "best_epoch": best_epoch,
                              "best_val_loss": best, "history": history,
                              "train_seconds": round(time.monotonic() - start, 1),
                              "train_examples": len(train), "val_examples": len(val)})
    return bundle


def with_decode(bundle: ReportBundle, **changes: Any) -> ReportBundle:
    return replace(bundle, decode=replace(bundle.decode, **changes))

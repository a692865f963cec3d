"""A query-side linear adapter for the embedder, trained on MEDLINE's own indexing.

The passages stay embedded as they are (the index and its committed seed do not change);
a query's vector ``q`` becomes ``normalise(q + q A)``, with ``A`` (d x d) trained so that a
MeSH descriptor's name lands near the passages of the citations that NLM's indexers gave it
as a major topic. The descriptors of the relevance benchmark's reported and tuning sets
(``evaluate.mesh_major_queries``) are held out of training, and their identifiers are stored
in the adapter, so that the benchmark can refuse to report on a descriptor it was trained on.

Training is a multi-positive softmax over every MEDLINE passage (a citation scores its best
passage), ``A`` starting at zero with a penalty on its size: with no training the adapter is
the identity. The step count is chosen on the tuning descriptors' dense nDCG@10.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assistant.checkpoint_io import CheckpointError, read_payload, write_payload
from assistant.retrieval.evaluate import ndcg_at

log = logging.getLogger(__name__)

FORMAT = "assistant-query-adapter-v1"
RELEASE_NAME = "query-adapter-medline.pt"


class AdapterError(CheckpointError):
    """An adapter file is unreadable, or made for another embedder."""


@dataclass(frozen=True)
class AdapterConfig:
    steps: int = 300
    batch_size: int = 256
    lr: float = 1e-3
    temperature: float = 0.05
    penalty: float = 1e-2  # times the squared Frobenius norm of A
    eval_every: int = 50  # steps between tuning evaluations (the best is kept)
    seed: int = 0


@dataclass(frozen=True)
class TrainingSet:
    """Query vectors (Q, d) with their positive documents, over passage vectors (P, d)
    grouped into documents by ``passage_doc`` (P,) (document rows 0..D-1)."""

    queries: np.ndarray
    positives: list[list[int]]
    passages: np.ndarray
    passage_doc: np.ndarray


class QueryAdapter:
    """``apply``: (N, d) unit vectors -> (N, d) unit vectors."""

    def __init__(self, matrix: np.ndarray, meta: dict[str, Any]) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"the adapter matrix must be square, got {matrix.shape}")
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self.meta = meta
        self.sha256 = ""

    @property
    def dim(self) -> int:
        return self.matrix.shape[0]

    @property
    def held_out(self) -> frozenset[str]:
        """The descriptor identifiers kept out of training."""
        return frozenset(self.meta.get("held_out_descriptors", ()))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        moved = vectors + vectors @ self.matrix
        norms = np.linalg.norm(moved, axis=-1, keepdims=True)
        return (moved / np.maximum(norms, 1e-12)).astype(np.float32)

    def save(self, path: Path) -> str:
        self.sha256 = write_payload({"format": FORMAT, "matrix": torch.from_numpy(self.matrix),
                                     "meta": self.meta}, path)
        return self.sha256

    @classmethod
    def load(cls, path: Path, embedder_sha256: str | None = None) -> QueryAdapter:
        """The adapter in ``path``; refused when it adapts another embedder."""
        payload, digest = read_payload(path, FORMAT, "query adapter", AdapterError)
        adapter = cls(payload["matrix"].numpy(), dict(payload["meta"]))
        made_for = adapter.meta.get("embedder_sha256")
        if embedder_sha256 is not None and made_for != embedder_sha256:
            raise AdapterError(f"{path} adapts the embedder {made_for}, not the one in use "
                               f"({embedder_sha256}): retrain it (`assistant train "
                               "query-adapter`)")
        adapter.sha256 = digest
        return adapter


class AdaptedEmbedder:
    """An embedder whose queries go through an adapter; passages (``encode``) do not, so
    the index built with the base embedder stays valid (same name and fingerprint)."""

    def __init__(self, base: Any, adapter: QueryAdapter) -> None:
        if adapter.dim != base.dim:
            raise AdapterError(f"the adapter is {adapter.dim}-d, the embedder {base.dim}-d")
        self.base = base
        self.adapter = adapter
        self.name = base.name
        self.dim = base.dim

    @property
    def fingerprint(self) -> str:
        return str(self.base.fingerprint)

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        return np.asarray(self.base.encode(texts, batch_size, progress))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        encode = getattr(self.base, "encode_queries", self.base.encode)
        return self.adapter.apply(np.asarray(encode(texts)))


# -- training ------------------------------------------------------------------------------


def _document_scores(queries: torch.Tensor, passages: torch.Tensor, passage_doc: torch.Tensor,
                     n_docs: int) -> torch.Tensor:
    """(B, d) x (P, d) -> (B, D): a document scores its best passage."""
    scores = queries @ passages.T  # (B, P)
    out = torch.full((queries.shape[0], n_docs), -2.0, dtype=scores.dtype)
    return out.scatter_reduce(1, passage_doc.expand(queries.shape[0], -1), scores,
                              reduce="amax")


def dense_ndcg(matrix: torch.Tensor, queries: np.ndarray, relevant: Sequence[set[int]],
               passages: torch.Tensor, passage_doc: torch.Tensor, n_docs: int) -> float:
    with torch.no_grad():
        q = torch.from_numpy(queries)
        z = torch.nn.functional.normalize(q + q @ matrix, dim=-1)
        scores = _document_scores(z, passages, passage_doc, n_docs)
        top = scores.topk(min(10, n_docs), dim=1).indices.tolist()
    values = [ndcg_at(row, frozenset(rel)) for row, rel in zip(top, relevant, strict=True)]
    return float(np.mean(values)) if values else 0.0


def train_adapter(train: TrainingSet, tune_queries: np.ndarray,
                  tune_relevant: Sequence[set[int]], config: AdapterConfig
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """The adapter matrix (d, d) at the step with the best tuning nDCG@10 (step 0, the
    identity, included), and the history."""
    if not train.positives:
        raise ValueError("no training queries: every descriptor is held out")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    passages = torch.from_numpy(np.ascontiguousarray(train.passages, dtype=np.float32))
    passage_doc = torch.from_numpy(train.passage_doc.astype(np.int64))
    n_docs = int(train.passage_doc.max()) + 1
    queries = torch.from_numpy(np.ascontiguousarray(train.queries, dtype=np.float32))
    d = queries.shape[1]
    matrix = torch.zeros(d, d, requires_grad=True)
    optimizer = torch.optim.Adam([matrix], lr=config.lr)

    def tune_score() -> float:
        return dense_ndcg(matrix.detach(), tune_queries, tune_relevant, passages, passage_doc,
                          n_docs)

    best = (tune_score(), 0, matrix.detach().clone())
    history: list[dict[str, float]] = [{"step": 0, "tune_ndcg10": best[0]}]
    start = time.perf_counter()
    batch = min(config.batch_size, len(queries))
    for step in range(1, config.steps + 1):
        rows = rng.choice(len(queries), batch, replace=False)
        q = queries[rows]
        z = torch.nn.functional.normalize(q + q @ matrix, dim=-1)
        logits = _document_scores(z, passages, passage_doc, n_docs) / config.temperature
        positive = torch.zeros_like(logits, dtype=torch.bool)
        for b, row in enumerate(rows):
            positive[b, train.positives[row]] = True
        loss = (torch.logsumexp(logits, 1)
                - torch.logsumexp(logits.masked_fill(~positive, -1e9), 1)).mean()
        loss = loss + config.penalty * (matrix ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % config.eval_every == 0 or step == config.steps:
            score = tune_score()
            history.append({"step": step, "loss": float(loss.item()), "tune_ndcg10": score,
                            "seconds": round(time.perf_counter() - start, 1)})
            log.info("step %d: loss %.4f, tuning nDCG@10 %.4f", step, loss.item(), score)
            if score > best[0]:
                best = (score, step, matrix.detach().clone())
    return best[2].numpy(), {"history": history, "best_step": best[1],
                             "tune_ndcg10": best[0], "config": asdict(config)}

"""Known-item experiments (not shipped): can a document-level ranking, or a query encoder
fine-tuned on MEDLINE titles, find a title's own abstract more often than the shipped
hybrid ranking?

Both run over the abstract-only index that ``assistant eval retrieval`` builds for set (b)
(``.data/cache/bench/known-item``; 54 min to embed the first time) and report MRR on the
benchmark's 1,000 titles (seed 0), fitting only on other titles (seed 1):

- ``fusion``: features of each candidate abstract (dense best passage and mean of its
  passages, whole-abstract and best-passage BM25, the idf-weighted share of the title's
  terms and of its stemmed word pairs found in the abstract, passage count, the shipped
  rank), a listwise linear ranker and a 16-unit MLP fitted on 3,000 tuning titles.
- ``fine-tune``: MiniLM's top two layers trained as a query encoder on the titles of all
  other citations against the index's fixed passage vectors (softmax over every passage,
  one epoch), then dense and dense + whole-abstract BM25 (0.6 / 0.4, min-max) on 1,000
  validation titles before and after, and on the reported titles after.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/known_item_rankers.py fusion
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/known_item_rankers.py fine-tune
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assistant.config import Settings  # noqa: E402
from assistant.retrieval.benchmark import known_item_searcher  # noqa: E402
from assistant.retrieval.build import query_embedder  # noqa: E402
from assistant.retrieval.corpus import iter_corpus  # noqa: E402
from assistant.retrieval.embed import Embedder, encode_queries, trace_queries  # noqa: E402
from assistant.retrieval.evaluate import (  # noqa: E402
    Query,
    bootstrap_interval,
    known_item_queries,
)
from assistant.retrieval.lexical import LexicalIndex, tokenize_terms  # noqa: E402
from assistant.retrieval.search import Ranking, Searcher, best_per_document  # noqa: E402

DEPTH = 100
FEATURES = ("dense best passage", "dense mean", "dense best - top", "BM25 abstract",
            "BM25 abstract / top", "BM25 best passage / top", "term share", "pair share",
            "log passages", "shipped 1 / rank")
Scorer = Callable[[np.ndarray], np.ndarray]


class Corpus:
    """The abstract-only index and the documents, aligned by row."""

    def __init__(self, settings: Settings, searcher: Searcher) -> None:
        self.searcher = searcher
        self.docs = [d for d in iter_corpus(settings.data_dir, ("medline",)) if d.has_abstract]
        self.row = {d.id: i for i, d in enumerate(self.docs)}
        store = searcher.index.passages
        self.passage_doc = [store.doc_id(i) for i in range(len(store))]
        rows = np.array([self.row[d] for d in self.passage_doc])
        if np.any(np.diff(rows) < 0):
            raise SystemExit("the index's passages are not grouped by document")
        self.starts = np.flatnonzero(np.r_[True, np.diff(rows) != 0])
        self.passage_rows = rows
        dense = searcher.index.dense
        self.vectors = dense.reconstruct_n(0, dense.ntotal).astype(np.float32)
        mean = np.add.reduceat(self.vectors, self.starts, axis=0)  # (D, d), a row per abstract
        self.mean = mean / np.linalg.norm(mean, axis=1, keepdims=True)
        self.lexical = LexicalIndex.build([d.text for d in self.docs])  # whole abstracts

    def split(self, n_tune: int) -> tuple[list[Query], list[Query]]:
        """The reported titles (seed 0) and ``n_tune`` others (seed 1)."""
        test = known_item_queries(self.docs, 1000, 0)
        keys = {q.key for q in test}
        others = [q for q in known_item_queries(self.docs, n_tune + 1200, 1) if q.key not in keys]
        return test, others[:n_tune]

    def dense_best(self, vec: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(self.vectors @ vec, self.starts)

    def target(self, query: Query) -> int:
        return self.row[next(iter(query.relevant))]


def reciprocal_rank(scores: np.ndarray, target_at: int | None) -> float:
    if target_at is None:
        return 0.0
    rank = 1 + int((scores > scores[target_at]).sum())
    return 1.0 / rank if rank <= DEPTH else 0.0


def summary(label: str, rr: Sequence[float]) -> str:
    low, high = bootstrap_interval(list(rr))
    return f"{label}: MRR {np.mean(rr):.4f} ({low:.4f}-{high:.4f}), {len(rr)} titles"


def min_max(x: np.ndarray) -> np.ndarray:
    low, high = x.min(), x.max()
    return (x - low) / (high - low) if high > low else np.ones_like(x)


# -- fusion -------------------------------------------------------------------------------


def features(corpus: Corpus, queries: Sequence[Query], vecs: np.ndarray
             ) -> list[tuple[np.ndarray, np.ndarray, int | None]]:
    """Per title: candidate rows (union of the dense, dense-mean and BM25 top 100), their
    (M, F) features, and where the target is among them (None: not a candidate)."""
    terms = {}
    idf: dict[str, float] = {}
    n_docs = len(corpus.docs)
    out = []
    for query, vec in zip(queries, vecs, strict=True):
        best, avg = corpus.dense_best(vec), corpus.mean @ vec
        bm25 = corpus.lexical.scores(query.text)
        passage_bm25 = np.maximum.reduceat(corpus.searcher.lexical_scores(query.text),
                                           corpus.starts)
        ranked = corpus.searcher.rank(query.text, 3 * DEPTH, Ranking(rerank=False), None, vec)
        shipped = best_per_document(ranked, [corpus.passage_doc[i] for i, _ in ranked], DEPTH)
        shipped_rank = {corpus.row[corpus.passage_doc[i]]: r for r, (i, _) in enumerate(shipped)}
        cand = np.array(sorted(set(np.argsort(-best)[:DEPTH]) | set(np.argsort(-bm25)[:DEPTH])
                               | set(np.argsort(-avg)[:DEPTH])))
        q_terms = tokenize_terms(query.text)
        q_pairs = set(itertools.pairwise(q_terms))
        for t in set(q_terms):
            if t not in idf:
                df = len(corpus.lexical.postings(t)) if t in corpus.lexical else 0
                idf[t] = float(np.log((n_docs + 1) / (df + 0.5)))
        total = sum(idf[t] for t in set(q_terms)) or 1.0
        f = np.zeros((len(cand), len(FEATURES)), np.float32)
        for j, c in enumerate(cand):
            if c not in terms:
                doc_terms = tokenize_terms(corpus.docs[c].text)
                terms[c] = (set(doc_terms), set(itertools.pairwise(doc_terms)))
            words, pairs = terms[c]
            f[j, 6] = sum(idf[t] for t in set(q_terms) if t in words) / total
            f[j, 7] = len(q_pairs & pairs) / len(q_pairs) if q_pairs else 0.0
            f[j, 9] = 1.0 / (1 + shipped_rank[c]) if c in shipped_rank else 0.0
        f[:, 0], f[:, 1], f[:, 2] = best[cand], avg[cand], best[cand] - best.max()
        f[:, 3], f[:, 4] = bm25[cand], bm25[cand] / (bm25.max() or 1.0)
        f[:, 5] = passage_bm25[cand] / (passage_bm25.max() or 1.0)
        f[:, 8] = np.log(np.diff(np.r_[corpus.starts, len(corpus.passage_rows)])[cand])
        hit = np.flatnonzero(cand == corpus.target(query))
        out.append((cand, f, int(hit[0]) if hit.size else None))
    return out


def fit_ranker(data: Sequence[tuple[np.ndarray, np.ndarray, int | None]], hidden: int,
               epochs: int) -> Scorer:
    """Listwise softmax over each title's candidates, features standardised."""
    torch.manual_seed(0)
    x = [torch.from_numpy(f) for _, f, t in data if t is not None]
    y = [t for _, _, t in data if t is not None]
    allx = torch.cat(x)
    mu, sd = allx.mean(0), allx.std(0) + 1e-6
    dim = allx.shape[1]
    model: torch.nn.Module = (torch.nn.Linear(dim, 1) if not hidden else torch.nn.Sequential(
        torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)))
    opt = torch.optim.Adam(model.parameters(), lr=0.01 if hidden else 0.05, weight_decay=1e-3)
    for _ in range(epochs):
        opt.zero_grad()
        loss = sum(torch.nn.functional.cross_entropy(model((xi - mu) / sd).squeeze(1)[None],
                                                     torch.tensor([yi]))
                   for xi, yi in zip(x, y, strict=True)) / len(x)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    model.eval()

    def score(f: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model((torch.from_numpy(f) - mu) / sd).squeeze(1).numpy()

    return score


def run_fusion(corpus: Corpus, embedder: object, n_tune: int) -> None:
    test, tune = corpus.split(n_tune)
    start = time.perf_counter()
    tune_f = features(corpus, tune, encode_queries(embedder, [q.text for q in tune]))
    test_f = features(corpus, test, encode_queries(embedder, [q.text for q in test]))
    print(f"features of {len(tune)} tuning and {len(test)} reported titles in "
          f"{time.perf_counter() - start:.0f} s; the target among the candidates for "
          f"{np.mean([t is not None for *_, t in test_f]):.3f} of the reported titles")
    for i, name in enumerate(FEATURES):
        print(summary(f"  {name} alone", [reciprocal_rank(f[:, i], t) for _, f, t in test_f]))
    print(summary("  dense best passage 0.6 + BM25 abstract 0.4 (min-max)",
                  [reciprocal_rank(0.6 * min_max(f[:, 0]) + 0.4 * min_max(f[:, 3]), t)
                   for _, f, t in test_f]))
    for label, cols, hidden in (("linear, dense best passage + BM25 abstract", [0, 3], 0),
                                ("linear, every feature", list(range(len(FEATURES))), 0),
                                ("MLP (16 units), every feature", list(range(len(FEATURES))), 16)):
        picked = [(c, f[:, cols], t) for c, f, t in tune_f]
        score = fit_ranker(picked, hidden, 400 if hidden else 300)
        print(summary(f"  {label}", [reciprocal_rank(score(f[:, cols]), t)
                                     for _, f, t in test_f]))


# -- fine-tuning --------------------------------------------------------------------------


def run_fine_tune(corpus: Corpus, settings: Settings, layers: int, epochs: float,
                  lr: float) -> None:
    test, val = corpus.split(1000)
    held = {q.key for q in [*test, *val]}
    train = [(d.title, i) for i, d in enumerate(corpus.docs)
             if d.key not in held and d.title.strip()]
    model = Embedder(settings.data_dir).model
    tokenizer, bert = model.tokenizer, model[0].auto_model
    for p in bert.parameters():
        p.requires_grad = False
    for block in bert.encoder.layer[-layers:]:
        for p in block.parameters():
            p.requires_grad = True
    params = [p for p in bert.parameters() if p.requires_grad]
    vectors = torch.from_numpy(corpus.vectors)
    passage_rows = torch.from_numpy(corpus.passage_rows)

    def encode(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=64,
                          return_tensors="pt")
        hidden = bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    def evaluate(queries: Sequence[Query], label: str) -> None:
        bert.eval()
        with torch.no_grad():
            vecs = torch.cat([encode([q.text for q in queries[i:i + 128]])
                              for i in range(0, len(queries), 128)]).numpy()
        bert.train()
        dense, fused = [], []
        for query, vec in zip(queries, vecs, strict=True):
            best, bm25 = corpus.dense_best(vec), corpus.lexical.scores(query.text)
            cand = np.union1d(np.argsort(-best)[:DEPTH], np.argsort(-bm25)[:DEPTH])
            hit = np.flatnonzero(cand == corpus.target(query))
            at = int(hit[0]) if hit.size else None
            dense.append(reciprocal_rank(best[cand], at))
            fused.append(reciprocal_rank(0.6 * min_max(best[cand]) + 0.4 * min_max(bm25[cand]),
                                         at))
        print(summary(f"  {label}, dense", dense))
        print(summary(f"  {label}, dense 0.6 + BM25 abstract 0.4", fused))

    print(f"training on {len(train)} titles; {sum(p.numel() for p in params)} parameters "
          f"in the top {layers} layers", flush=True)
    evaluate(val, "validation titles before")
    torch.manual_seed(0)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    batch, steps = 64, int(len(train) * epochs / 64)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 50) * max(0.0, 1 - i / steps))
    rng, order = random.Random(0), []  # type: ignore[var-annotated]
    start = time.perf_counter()
    for step in range(steps):
        if len(order) < batch:
            order += rng.sample(range(len(train)), len(train))
        idx, order = order[:batch], order[batch:]
        logits = encode([train[i][0] for i in idx]) @ vectors.T / 0.05  # (B, passages)
        own = passage_rows[None, :] == torch.tensor([train[i][1] for i in idx])[:, None]
        loss = (torch.logsumexp(logits, 1)
                - torch.logsumexp(logits.masked_fill(~own, -1e9), 1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"  step {step}/{steps}: loss {loss.item():.3f}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    print(f"trained in {time.perf_counter() - start:.0f} s")
    evaluate(val, "validation titles after")
    evaluate(test, "reported titles after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=("fusion", "fine-tune"))
    parser.add_argument("--tune", type=int, default=3000, help="tuning titles (fusion)")
    parser.add_argument("--layers", type=int, default=2, help="top layers fine-tuned")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    embedder = query_embedder(settings)  # queries embedded as the service embeds them
    trace_queries(embedder)
    corpus = Corpus(settings, known_item_searcher(settings, embedder))
    if args.experiment == "fusion":
        run_fusion(corpus, embedder, args.tune)
    else:
        run_fine_tune(corpus, settings, args.layers, args.epochs, args.lr)


if __name__ == "__main__":
    main()

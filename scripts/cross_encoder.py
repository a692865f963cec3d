"""A cross-encoder re-ranker for literature search, trained on a lent GPU: MiniLM reads a
query and a candidate citation together and scores them. An experiment: does reading the
pair (rather than comparing two vectors) close the known-item gap (MRR 0.934 against
0.97) or lift set (a) nDCG@10, and what would it cost a search on two CPU cores? The steps:

    .venv/bin/python scripts/cross_encoder.py bundle     # here: texts, candidates, hold-outs
    python3 scripts/cross_encoder.py train               # on the GPU machine (about 5 min)
    .venv/bin/python scripts/cross_encoder.py cpu-cost   # here: a re-ranking's time

``bundle`` writes ``.devrun/ce-bundle.json.xz`` and MiniLM's files (``.devrun/ce-minilm``,
the word-piece table in 8 bits per row, the rest float16: one device call carries 64 MiB).

Training pairs, none drawn from a reported judgment:
- known item: each citation's title against its own abstract, the negatives from the
  title's BM25 and dense top 30 over the abstract-only passages. Held out: the benchmark's
  reported titles (seed 0), its validation titles (seed 1), and every citation whose
  PMID's sha256 is 0 modulo 10 (as ``adapt_embedder.py`` holds them out).
- set (a): MeSH descriptor names (at least 2 major-topic citations) against those
  citations ("Title. Abstract"), the negatives from the shipped search's top 30. Held out:
  the benchmark's 300 reported and 300 tuning descriptors.

Chosen on validation only (seed-1 titles, the tuning descriptors): the epoch, how many of
the first stage's candidates are re-read, and the share of the first-stage score mixed in.
The reported titles and descriptors are scored once, with that choice.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / ".devrun"
BUNDLE = RUN / "ce-bundle.json.xz"
MODEL_DIR = RUN / "ce-minilm"
MAX_LEN = 256
POOL = 30  # first-stage candidates per channel
sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapt_embedder import progress, training_titles, write_bundle  # noqa: E402


def dequantise(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The word-piece table as both sides use it: int8 rows times their float32 scale."""
    return q.astype(np.float32) * scale[:, None]


# -- here: the bundle ------------------------------------------------------------------------


def bundle(_: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from assistant.config import Settings
    from assistant.retrieval.benchmark import abstract_mask
    from assistant.retrieval.build import CorpusSpec, iter_passages, open_searcher
    from assistant.retrieval.evaluate import (
        Method,
        Query,
        document_ranker,
        major_topics,
        mesh_major_queries,
    )
    from assistant.retrieval.lexical import LexicalIndex, top_k
    from assistant.retrieval.search import Ranking, best_per_document

    settings = Settings()
    docs, doc_index, reported, validation, train = training_titles(settings.data_dir)
    ki_spec = CorpusSpec.make(["medline"], titles=False, abstracts_only=True)
    known = [p for p, _ in iter_passages(settings.data_dir, ki_spec)]
    known_texts = [ki_spec.text(p) for p in known]
    known_doc = [doc_index[p.doc_id] for p in known]
    lexical = LexicalIndex.build(known_texts)

    def bm25_docs(title: str) -> list[list[float]]:
        scores, ids = top_k(lexical.scores(title), 3 * POOL)
        ranked = best_per_document(list(zip(ids.tolist(), scores.tolist(), strict=True)),
                                   [known_doc[i] for i in ids], POOL)
        return [[known_doc[i], round(s, 4)] for i, s in ranked]

    known_sets = {"train": train,
                  "validation": [[q.text, doc_index[next(iter(q.relevant))]]
                                 for q in validation],
                  "reported": [[q.text, doc_index[next(iter(q.relevant))]] for q in reported]}
    bm25 = {name: [bm25_docs(t) for t, _ in tqdm(rows, desc=f"BM25 {name}")]
            for name, rows in known_sets.items()}

    searcher = open_searcher(settings, rebuild=False)
    mask = abstract_mask(searcher, set(doc_index))
    sets = mesh_major_queries(docs, 5, 300, 300, 0)
    names, relevant = major_topics(docs)
    held = {q.key for q in [*sets.test, *sets.tune]}
    train_desc = sorted(ui for ui, ids in relevant.items() if ui not in held and len(ids) >= 2)
    random.Random(0).shuffle(train_desc)
    train_desc = train_desc[:3000]
    shipped = document_ranker(searcher, Method("shipped", Ranking()), mask, depth=100)
    empty = np.zeros(0, dtype=np.float32)

    def mesh_rows(queries: list[Query], depth: int, label: str) -> list[dict]:  # type: ignore[type-arg]
        rows = []
        for q in tqdm(queries, desc=label):
            ranked = shipped(q, empty)[:depth]
            rows.append({"text": q.text, "relevant": sorted(doc_index[i] for i in q.relevant),
                         "shipped": [doc_index[i] for i in ranked]})
        return rows

    mesh = {"train": mesh_rows([Query(ui, names[ui], frozenset(relevant[ui]))
                                for ui in train_desc], POOL, "MeSH train"),
            "tune": mesh_rows(sets.tune, 100, "MeSH tune"),
            "reported": mesh_rows(sets.test, 100, "MeSH reported")}
    payload = {
        "titles": [d.title for d in docs],
        "abstracts": [d.text for d in docs],
        "known_texts": known_texts,
        "known_doc": known_doc,
        "known": known_sets,
        "bm25": bm25,
        "mesh": mesh,
        "held_out_descriptors": sorted(held),
    }
    weights = write_bundle(payload, BUNDLE, settings.data_dir, MODEL_DIR)
    table = weights.pop("embeddings.word_embeddings.weight").float().numpy()
    scale = np.abs(table).max(1) / 127.0
    q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
    np.savez(MODEL_DIR / "word_embeddings.npz", q=q, scale=scale.astype(np.float32))
    save_file({k: v.to(torch.float16) for k, v in weights.items()},
              str(MODEL_DIR / "model.safetensors"))
    print(f"{len(docs)} citations with an abstract; {len(train)} training titles; "
          f"{len(train_desc)} training descriptors; {len(known)} known-item passages; "
          f"bundle {BUNDLE.stat().st_size / 2**20:.1f} MiB")


# -- the model (both sides) -----------------------------------------------------------------


def minilm(model_dir: Path):  # type: ignore[no-untyped-def]
    """The bundled MiniLM as a BERT without pooler, float32, its word-piece table as both
    sides dequantise it; and its tokenizer."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    bert = BertModel(BertConfig.from_pretrained(str(model_dir)), add_pooling_layer=False)
    state = {k: v.float() for k, v in load_file(str(model_dir / "model.safetensors")).items()
             if not k.startswith("pooler.") and not k.endswith("position_ids")}
    table = np.load(model_dir / "word_embeddings.npz")
    state["embeddings.word_embeddings.weight"] = torch.from_numpy(
        dequantise(table["q"], table["scale"]))
    missing, unexpected = bert.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return bert, AutoTokenizer.from_pretrained(str(model_dir))


class CrossEncoder:
    """BERT (MiniLM's weights) over "[CLS] query [SEP] document [SEP]", a linear score of
    the [CLS] state. The word-piece table stays as bundled (8 bits a row), frozen."""

    def __init__(self, model_dir: Path, device: str, trained: dict | None = None) -> None:  # type: ignore[type-arg]
        import torch

        self.torch = torch
        self.device = device
        self.bert, self.tokenizer = minilm(model_dir)
        head = torch.nn.Linear(self.bert.config.hidden_size, 1)
        if trained is not None:
            head.load_state_dict({"weight": trained.pop("head.weight").float(),
                                  "bias": trained.pop("head.bias").float()})
            _, unexpected = self.bert.load_state_dict(
                {k: v.float() for k, v in trained.items()}, strict=False)
            assert not unexpected, unexpected
        self.bert.to(device)
        self.head = head.to(device)
        self.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        self.cls = self.tokenizer.cls_token_id
        self.sep = self.tokenizer.sep_token_id

    def tokenize(self, texts: list[str], limit: int) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, truncation=True,
                              max_length=limit)["input_ids"]

    def parameters(self) -> list:  # type: ignore[type-arg]
        return [p for p in [*self.bert.parameters(), *self.head.parameters()]
                if p.requires_grad]

    def train(self, on: bool) -> None:
        self.bert.train(on)

    def score(self, queries: list[list[int]], docs: list[list[int]]):  # type: ignore[no-untyped-def]
        torch = self.torch
        rows = []
        for q, d in zip(queries, docs, strict=True):
            q = q[:64]
            rows.append(([self.cls, *q, self.sep], [*d[:MAX_LEN - len(q) - 3], self.sep]))
        width = max(len(a) + len(b) for a, b in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        types = torch.zeros_like(ids)
        mask = torch.zeros_like(ids)
        for r, (a, b) in enumerate(rows):
            n = len(a) + len(b)
            ids[r, :n] = torch.tensor(a + b)
            types[r, len(a):n] = 1
            mask[r, :n] = 1
        hidden = self.bert(input_ids=ids.to(self.device), token_type_ids=types.to(self.device),
                           attention_mask=mask.to(self.device)).last_hidden_state
        return self.head(hidden[:, 0]).squeeze(-1).float()

    def score_many(self, pairs: list[tuple[list[int], list[int]]], batch: int = 512,
                   bf16: bool = True) -> np.ndarray:
        torch = self.torch
        out = np.zeros(len(pairs), dtype=np.float32)
        order = np.argsort([len(q) + len(d) for q, d in pairs])
        self.train(False)
        with torch.inference_mode(), torch.autocast(self.device.split(":")[0],
                                                    dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, len(pairs), batch):
                rows = order[start:start + batch]
                s = self.score([pairs[i][0] for i in rows], [pairs[i][1] for i in rows])
                out[rows] = s.cpu().numpy()
        return out


# -- there: first-stage dense, training, choice, report -------------------------------------


def mean_pool_embed(torch, bert, tokenizer, texts, device, batch=1024):  # type: ignore[no-untyped-def]
    """MiniLM's sentence vectors (mean over word pieces, unit length), in bfloat16."""
    ids = tokenizer(texts, truncation=True, max_length=MAX_LEN)["input_ids"]
    order = np.argsort([len(x) for x in ids])
    out = torch.empty((len(ids), bert.config.hidden_size), device=device)
    bert.eval()
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16,
                                                enabled=device == "cuda"):
        for start in range(0, len(ids), batch):
            rows = order[start:start + batch]
            width = max(len(ids[i]) for i in rows)
            tok = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros_like(tok)
            for r, i in enumerate(rows):
                tok[r, :len(ids[i])] = torch.tensor(ids[i])
                mask[r, :len(ids[i])] = 1
            tok, mask = tok.to(device), mask.to(device)
            hidden = bert(input_ids=tok, attention_mask=mask).last_hidden_state
            w = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)
            out[torch.as_tensor(rows, device=device)] = torch.nn.functional.normalize(
                pooled.float(), dim=-1)
    return out


def dense_known(torch, data, device):  # type: ignore[no-untyped-def]
    """Each title's dense top POOL documents (best passage), with MiniLM as shipped."""
    bert, tokenizer = minilm(MODEL_DIR)
    bert.to(device)
    passages = mean_pool_embed(torch, bert, tokenizer, data["known_texts"], device)
    pdoc = torch.as_tensor(data["known_doc"], device=device)
    n_docs = len(data["titles"])
    result = {}
    for name, rows in data["known"].items():
        q = mean_pool_embed(torch, bert, tokenizer, [t for t, _ in rows], device)
        tops = []
        for start in range(0, len(rows), 512):
            s = q[start:start + 512] @ passages.T
            best = torch.full((s.shape[0], n_docs), -math.inf, device=device)
            best = best.scatter_reduce(1, pdoc.unsqueeze(0).expand_as(s), s, reduce="amax")
            v, i = best.topk(POOL, dim=1)
            tops += [[[int(d), round(float(x), 5)] for d, x in zip(ii, vv, strict=True)
                      if math.isfinite(float(x))]
                     for ii, vv in zip(i.cpu(), v.cpu(), strict=True)]
        result[name] = tops
    del bert, passages
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def minmax(values: dict[int, float]) -> dict[int, float]:
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    return {k: (v - lo) / (hi - lo) if hi > lo else 1.0 for k, v in values.items()}


def known_pools(data, dense):  # type: ignore[no-untyped-def]
    """Per title: the union of its BM25 and dense candidates with a first-stage score
    (min-max weighted fusion, 0.4 dense as the search ships), best first."""
    pools = {}
    for name, rows in data["known"].items():
        out = []
        for r in range(len(rows)):
            b = minmax({d: s for d, s in data["bm25"][name][r]})
            v = minmax({d: s for d, s in dense[name][r]})
            fused = {d: 0.6 * b.get(d, 0.0) + 0.4 * v.get(d, 0.0) for d in {*b, *v}}
            out.append(sorted(fused.items(), key=lambda x: (-x[1], x[0])))
        pools[name] = out
    return pools


def rank_of(order: list[int], target: int) -> int | None:
    try:
        return order.index(target) + 1
    except ValueError:
        return None


def rerank(pool: list[tuple[int, float]], ce: np.ndarray, depth: int, mix: float) -> list[int]:
    """The first ``depth`` candidates re-ordered by their cross-encoder score (z-scored
    within the query) plus ``mix`` times the first-stage score; the rest keep their order."""
    head, tail = pool[:depth], pool[depth:]
    z = ce[:len(head)]
    z = (z - z.mean()) / (z.std() + 1e-6) if len(z) > 1 else z * 0
    scored = sorted(range(len(head)), key=lambda i: -(z[i] + mix * head[i][1] * 4))
    return [head[i][0] for i in scored] + [d for d, _ in tail]


def mrr(orders: list[list[int]], targets: list[int]) -> float:
    rr = []
    for order, t in zip(orders, targets, strict=True):
        r = rank_of(order, t)
        rr.append(1.0 / r if r is not None and r <= 100 else 0.0)
    return float(np.mean(rr))


def ndcg10(orders: list[list[int]], relevant: list[list[int]]) -> float:
    out = []
    for order, rel in zip(orders, relevant, strict=True):
        rs = set(rel)
        dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(order[:10]) if d in rs)
        ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(rs))))
        out.append(dcg / ideal)
    return float(np.mean(out))


def bootstrap(values: list[float], n: int = 2000) -> list[float]:
    rng = np.random.default_rng(0)
    v = np.asarray(values)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(1)
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


def train(args: argparse.Namespace) -> None:
    import torch

    t0 = time.perf_counter()
    out = Path(os.environ.get("OUT", "/tmp/ce-out"))
    out.mkdir(parents=True, exist_ok=True)
    dev = args.device
    log: dict = {"device": (torch.cuda.get_device_name(0)  # type: ignore[type-arg]
                            if dev == "cuda" else dev), "epochs": [], "args": vars(args)}
    log["args"].pop("fn")

    say = progress(t0, out / "ce-log.json", log)

    torch.backends.cuda.matmul.allow_tf32 = True
    with lzma.open(BUNDLE, "rt") as fh:
        data = json.load(fh)
    if args.limit:
        for name in data["known"]:
            data["known"][name] = data["known"][name][:args.limit]
            data["bm25"][name] = [r[:8] for r in data["bm25"][name][:args.limit]]
        for name in data["mesh"]:
            data["mesh"][name] = data["mesh"][name][:args.limit // 10 or 1]
        wanted = {d for rows in data["known"].values() for _, d in rows}
        wanted |= {d for rows in data["bm25"].values() for r in rows for d, _ in r}
        keep = [i for i, d in enumerate(data["known_doc"]) if d in wanted]
        data["known_texts"] = [data["known_texts"][i] for i in keep]
        data["known_doc"] = [data["known_doc"][i] for i in keep]
    dense = dense_known(torch, data, dev)
    pools = known_pools(data, dense)
    targets = {n: [d for _, d in rows] for n, rows in data["known"].items()}
    for name in ("validation", "reported"):
        first = [[d for d, _ in p] for p in pools[name]]
        log[f"first_stage_{name}"] = {
            "fused_mrr": mrr(first, targets[name]),
            "bm25_mrr": mrr([[d for d, _ in r] for r in data["bm25"][name]], targets[name]),
            "dense_mrr": mrr([[d for d, _ in r] for r in dense[name]], targets[name]),
            "pool_recall": float(np.mean([t in set(o) for o, t in zip(first, targets[name],
                                                                      strict=True)]))}
    say(f"first stage: { {k: v for k, v in log.items() if k.startswith('first')} }")

    ce = CrossEncoder(MODEL_DIR, dev)
    abstracts = ce.tokenize(data["abstracts"], MAX_LEN)
    titled = ce.tokenize([f"{t} {a}" for t, a in zip(data["titles"], data["abstracts"],
                                                      strict=True)], MAX_LEN)
    qtok = {n: ce.tokenize([t for t, _ in rows], 64) for n, rows in data["known"].items()}
    mtok = {n: ce.tokenize([r["text"] for r in rows], 64) for n, rows in data["mesh"].items()}
    say("tokenised")

    # training groups: (query tokens, positive doc, negatives, which text)
    groups = []
    for r, (_, d) in enumerate(data["known"]["train"]):
        negs = [x for x, _ in pools["train"][r] if x != d]
        if len(negs) >= args.negatives:
            groups.append(("k", qtok["train"][r], d, negs))
    n_known = len(groups)
    for r, row in enumerate(data["mesh"]["train"]):
        rel = set(row["relevant"])
        negs = [x for x in row["shipped"] if x not in rel]
        if len(negs) >= args.negatives:
            for _ in range(args.mesh_repeats):
                groups.append(("m", mtok["train"][r], row["relevant"], negs))
    say(f"{n_known} known-item groups, {len(groups) - n_known} MeSH groups")

    def evaluate(final: bool = False) -> dict:  # type: ignore[type-arg]
        names = ["validation", "reported"] if final else ["validation"]
        res: dict = {}  # type: ignore[type-arg]
        for name in names:
            pairs = [(qtok[name][r], abstracts[d]) for r, p in enumerate(pools[name])
                     for d, _ in p]
            s = ce.score_many(pairs, bf16=dev == "cuda")
            at, scores = 0, []
            for p in pools[name]:
                scores.append(s[at:at + len(p)])
                at += len(p)
            res[f"known_{name}"] = {"scores": scores}
        mnames = ["tune", "reported"] if final else ["tune"]
        for name in mnames:
            rows = data["mesh"][name]
            pairs = [(mtok[name][r], titled[d]) for r, row in enumerate(rows)
                     for d in row["shipped"]]
            s = ce.score_many(pairs, bf16=dev == "cuda")
            at, scores = 0, []
            for row in rows:
                scores.append(s[at:at + len(row["shipped"])])
                at += len(row["shipped"])
            res[f"mesh_{name}"] = {"scores": scores}
        return res

    def known_figures(name: str, scores, depth: int, mix: float) -> list[float]:  # type: ignore[no-untyped-def]
        rr = []
        for p, s, t in zip(pools[name], scores, targets[name], strict=True):
            r = rank_of(rerank(p, s, depth, mix), t)
            rr.append(1.0 / r if r is not None else 0.0)
        return rr

    def mesh_figures(name: str, scores, depth: int, mix: float) -> list[float]:  # type: ignore[no-untyped-def]
        out_ = []
        for row, s in zip(data["mesh"][name], scores, strict=True):
            n = len(row["shipped"])
            pool = [(d, 1.0 - i / max(n, 1)) for i, d in enumerate(row["shipped"])]
            order = rerank(pool, s, depth, mix)
            out_.append(ndcg10([order], [row["relevant"]]))
        return out_

    depths_k, depths_m, mixes = [10, 20, 40, 60], [10, 20, 50, 100], [0.0, 0.25, 0.5, 1.0]

    def choose(res) -> dict:  # type: ignore[no-untyped-def,type-arg]
        kv = {(d, m): float(np.mean(known_figures("validation", res["known_validation"]["scores"],
                                                 d, m))) for d in depths_k for m in mixes}
        mt = {(d, m): float(np.mean(mesh_figures("tune", res["mesh_tune"]["scores"], d, m)))
              for d in depths_m for m in mixes}
        kb, mb = max(kv, key=kv.get), max(mt, key=mt.get)  # type: ignore[arg-type]
        return {"known": {"depth": kb[0], "mix": kb[1], "mrr": kv[kb]},
                "mesh": {"depth": mb[0], "mix": mb[1], "ndcg10": mt[mb]},
                "known_grid": {f"{d}/{m}": round(v, 4) for (d, m), v in kv.items()},
                "mesh_grid": {f"{d}/{m}": round(v, 4) for (d, m), v in mt.items()}}

    params = ce.parameters()
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    per_epoch = len(groups) // args.batch
    steps = args.epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (
        min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, (steps - s) / steps)))
    rng = random.Random(0)
    best, best_state = -1.0, None
    mesh_tune_base = float(np.mean([ndcg10([r["shipped"]], [r["relevant"]])
                                     for r in data["mesh"]["tune"]]))
    log["shipped_tune_ndcg10"] = mesh_tune_base
    for epoch in range(1, args.epochs + 1):
        ce.train(True)
        order = list(range(len(groups)))
        rng.shuffle(order)
        losses = []
        for step in range(per_epoch):
            if step % 50 == 0 and time.perf_counter() - t0 > args.budget_s:
                log["stopped_early"] = f"epoch {epoch} step {step} of {per_epoch}"
                say(f"time budget spent: {log['stopped_early']}")
                break
            qs, ds = [], []
            for g in order[step * args.batch:(step + 1) * args.batch]:
                kind, q, pos, negs = groups[g]
                texts = abstracts if kind == "k" else titled
                p = pos if kind == "k" else rng.choice(pos)
                chosen = rng.sample(negs[:POOL], args.negatives)
                for d in [p, *chosen]:
                    qs.append(q)
                    ds.append(texts[d])
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                s = ce.score(qs, ds).view(-1, 1 + args.negatives)
            loss = torch.nn.functional.cross_entropy(
                s, torch.zeros(s.shape[0], dtype=torch.long, device=dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.detach())
        if not losses:
            break
        res = evaluate()
        picked = choose(res)
        score = picked["known"]["mrr"] + picked["mesh"]["ndcg10"]
        log["epochs"].append({"epoch": epoch, "loss": float(torch.stack(losses).mean()),
                              **picked})
        say(f"epoch {epoch}: loss {log['epochs'][-1]['loss']:.4f} known {picked['known']} "
            f"mesh {picked['mesh']}")
        if score > best:
            best = score
            best_state = {"epoch": epoch, "picked": picked,
                          "bert": {k: v.detach().half().cpu().clone()
                                   for k, v in ce.bert.state_dict().items()
                                   if k != "embeddings.word_embeddings.weight"},
                          "head": {k: v.detach().cpu().clone()
                                   for k, v in ce.head.state_dict().items()}}
    assert best_state is not None
    ce.bert.load_state_dict({k: v.float() for k, v in best_state["bert"].items()}, strict=False)
    ce.head.load_state_dict(best_state["head"])
    res = evaluate(final=True)
    k, m = best_state["picked"]["known"], best_state["picked"]["mesh"]
    rr = known_figures("reported", res["known_reported"]["scores"], k["depth"], k["mix"])
    nd = mesh_figures("reported", res["mesh_reported"]["scores"], m["depth"], m["mix"])
    ce_only_k = known_figures("reported", res["known_reported"]["scores"], k["depth"], 0.0)
    nd_base = [ndcg10([r["shipped"]], [r["relevant"]]) for r in data["mesh"]["reported"]]
    log["chosen_epoch"] = best_state["epoch"]
    log["reported"] = {
        "known_item_mrr": round(float(np.mean(rr)), 4), "known_item_ci95": bootstrap(rr),
        "known_item_mrr_ce_only": round(float(np.mean(ce_only_k)), 4),
        "known_item_at_1": float(np.mean([x == 1.0 for x in rr])),
        "mesh_ndcg10": round(float(np.mean(nd)), 4), "mesh_ci95": bootstrap(nd),
        "mesh_ndcg10_shipped_same_run": round(float(np.mean(nd_base)), 4),
        "mesh_shipped_ci95": bootstrap(nd_base),
        "queries": {"known": len(rr), "mesh": len(nd)}}
    say(f"reported: {log['reported']}")
    from safetensors.torch import save_file
    state = {**best_state["bert"], **{f"head.{k}": v for k, v in best_state["head"].items()}}
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "ce-weights.safetensors"))
    say("written")


# -- here: what re-reading candidates costs on two cores --------------------------------------


def cpu_cost(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    trained = None
    if args.weights:
        trained = dict(load_file(args.weights))
    ce = CrossEncoder(MODEL_DIR, "cpu", trained)
    with lzma.open(BUNDLE, "rt") as fh:
        data = json.load(fh)
    abstracts = ce.tokenize(data["abstracts"][:2000], MAX_LEN)
    titles = ce.tokenize(data["titles"][:200], 64)
    for depth in args.depths:
        times = []
        for r in range(args.queries):
            pairs = [(titles[r], abstracts[(r * 37 + i) % len(abstracts)]) for i in range(depth)]
            t = time.perf_counter()
            ce.score_many(pairs, batch=depth, bf16=args.bf16)
            times.append(time.perf_counter() - t)
        times = times[2:]
        print(f"depth {depth}: median {1000 * float(np.median(times)):.0f} ms, "
              f"p90 {1000 * float(np.quantile(times, 0.9)):.0f} ms "
              f"({args.threads} threads, bf16 {args.bf16}, {len(times)} queries)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("bundle").set_defaults(fn=bundle)
    t = sub.add_parser("train")
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--lr", type=float, default=4e-5)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--negatives", type=int, default=7)
    t.add_argument("--mesh-repeats", type=int, default=3)
    t.add_argument("--limit", type=int, default=0, help="smoke test: the first rows only")
    t.add_argument("--device", default="cuda")
    t.add_argument("--budget-s", type=float, default=400.0,
                   help="stop training after this many seconds from the start")
    t.set_defaults(fn=train)
    c = sub.add_parser("cpu-cost")
    c.add_argument("--weights", default="")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--depths", type=int, nargs="+", default=[10, 20])
    c.add_argument("--queries", type=int, default=12)
    c.add_argument("--bf16", action="store_true")
    c.set_defaults(fn=cpu_cost)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()

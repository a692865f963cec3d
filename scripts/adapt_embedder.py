"""Adapting MiniLM to MEDLINE without labels, on a lent GPU: each citation's title is a
query for its own abstract's passages, the other abstracts in the batch are the negatives
(symmetric InfoNCE). An experiment, not shipped (README, retrieval results: +0.004
known-item MRR, inside the interval). The steps:

    .venv/bin/python scripts/adapt_embedder.py bundle      # here: texts and hold-outs
    python3 scripts/adapt_embedder.py train                # on the GPU machine (4-5 min)
    python3 scripts/adapt_embedder.py ship-full            # there: the index's vectors
    .venv/bin/python scripts/adapt_embedder.py install     # here: weights and vectors
    .venv/bin/python scripts/adapt_embedder.py compare     # the benchmark, both embedders

``bundle`` writes into ``.devrun/`` (kept out of git; it travels as a carried path):
MiniLM's files with its weights in float16, and one xz-compressed JSON holding the texts
of the literature index's 166,072 passages ("Title. passage"), of the known-item
benchmark's 82,476 abstract-only passages, the training titles, and the two validation
sets. Held out of training: the known-item benchmark's reported titles (seed 0) and
validation titles (seed 1), and every citation whose PMID's sha256 is 0 modulo 10
(``held_out``), so that a known-item set drawn with any other seed could be restricted to
citations the embedder never trained on.

``train`` fine-tunes every layer except the word-piece embeddings (frozen: 28k titles are
too few to move a 30,522-row table, and leaving it out halves what comes back). It runs
three learning rates for three epochs each, measures every epoch's checkpoint on the
validation sets (dense known-item MRR on seed-1 titles; dense nDCG@10 on the tuning
descriptors of set (a), never the reported ones) and keeps the checkpoint with the highest
sum of the two. It writes the kept weights (float16) and the known-item index's vectors
(uint8, per-dimension range) to $OUT, the literature index's vectors to /tmp/adapt, and
``train-log.json`` with every figure; ``ship-full`` copies those vectors to $OUT.
"""

from __future__ import annotations

import argparse
import hashlib
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
BUNDLE = RUN / "bundle.json.xz"
MODEL_DIR = RUN / "minilm"
SCRATCH = Path("/tmp/adapt")
MAX_LEN = 256
HOLD_OUT_MODULUS = 10


def held_out(pmid: str) -> bool:
    """True for the citations no adapted embedder trains on (about one in ten)."""
    return int(hashlib.sha256(pmid.encode()).hexdigest(), 16) % HOLD_OUT_MODULUS == 0


# -- here: the bundle ------------------------------------------------------------------------


def training_titles(data_dir: Path):  # type: ignore[no-untyped-def]
    """The MEDLINE citations with an abstract, their rows, the known-item benchmark's
    reported (seed 0) and validation (seed 1) queries, and the [title, row] pairs an
    adapted model may train on: every other citation not ``held_out``."""
    from assistant.retrieval.corpus import iter_corpus
    from assistant.retrieval.evaluate import known_item_queries

    docs = [d for d in iter_corpus(data_dir, ("medline",)) if d.has_abstract]
    doc_index = {d.id: i for i, d in enumerate(docs)}
    reported = known_item_queries(docs, 1000, 0)
    validation = known_item_queries(docs, 1000, 1)
    excluded = {next(iter(q.relevant)) for q in [*reported, *validation]}
    train = [[d.title, doc_index[d.id]] for d in docs
             if d.id not in excluded and not held_out(d.key) and d.title.strip()]
    return docs, doc_index, reported, validation, train


def write_bundle(payload: dict, bundle: Path, data_dir: Path, model_dir: Path) -> dict:  # type: ignore[type-arg]
    """``payload`` as xz-compressed JSON at ``bundle``, and MiniLM's tokenizer and config
    copied into ``model_dir``; its weights returned (float32 tensors) for the caller to
    store as the device call can carry them (also ``cross_encoder.py``)."""
    from safetensors.torch import load_file

    bundle.parent.mkdir(exist_ok=True)
    with lzma.open(bundle, "wt", preset=9 | lzma.PRESET_EXTREME) as fh:
        json.dump(payload, fh)
    source = data_dir / "models" / "all-MiniLM-L6-v2"
    model_dir.mkdir(exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        (model_dir / name).write_bytes((source / name).read_bytes())
    return dict(load_file(str(source / "model.safetensors")))


def bundle(_: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    import torch
    from safetensors.torch import save_file

    from assistant.config import Settings
    from assistant.retrieval.build import CorpusSpec, index_path, iter_passages
    from assistant.retrieval.evaluate import mesh_major_queries
    from assistant.retrieval.index import IndexManifest
    from assistant.retrieval.passages import corpus_sha256

    settings = Settings()
    docs, doc_index, _, validation, train = training_titles(settings.data_dir)
    manifest = IndexManifest.load(index_path(settings) / "manifest.json")
    full_spec = CorpusSpec.from_dict(manifest.corpus)
    full = [p for p, _ in iter_passages(settings.data_dir, full_spec)]
    if corpus_sha256(full) != manifest.corpus_sha256:
        raise SystemExit("the literature index is not of this corpus: rebuild it first")
    ki_spec = CorpusSpec.make(["medline"], titles=False, abstracts_only=True)
    known = [p for p, _ in iter_passages(settings.data_dir, ki_spec)]
    sets = mesh_major_queries(docs, 5, 300, 300, 0)
    payload = {
        "documents": len(docs),
        "full_texts": [full_spec.text(p) for p in full],
        "full_doc": [doc_index.get(p.doc_id, -1) for p in full],
        "known_texts": [ki_spec.text(p) for p in known],
        "known_doc": [doc_index[p.doc_id] for p in known],
        "train": train,
        "validation": [[q.text, doc_index[next(iter(q.relevant))]] for q in validation],
        "tune_mesh": [[q.text, sorted(doc_index[i] for i in q.relevant)] for q in sets.tune],
        "full_corpus_sha256": manifest.corpus_sha256,
        "known_corpus_sha256": corpus_sha256(known),
    }
    weights = write_bundle(payload, BUNDLE, settings.data_dir, MODEL_DIR)
    save_file({k: v.to(torch.float16) for k, v in weights.items()},
              str(MODEL_DIR / "model.safetensors"))
    print(f"{len(docs)} citations with an abstract; {len(train)} training titles; "
          f"{len(full)} index passages, {len(known)} known-item passages; "
          f"bundle {BUNDLE.stat().st_size / 2**20:.1f} MiB")


# -- there: training -------------------------------------------------------------------------


class Encoder:
    """MiniLM as sentence-transformers runs it: BERT, mean over the word pieces, unit length."""

    def __init__(self, model_dir: Path, device: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).to(device)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=MAX_LEN,
                              add_special_tokens=True)["input_ids"]

    def batch(self, ids: list[list[int]]):  # type: ignore[no-untyped-def]
        torch = self.torch
        width = max(len(x) for x in ids)
        tokens = torch.zeros((len(ids), width), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            tokens[row, :len(x)] = torch.tensor(x)
            mask[row, :len(x)] = 1
        return tokens.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)

    def forward(self, ids: list[list[int]]):  # type: ignore[no-untyped-def]
        tokens, mask = self.batch(ids)
        hidden = self.model(input_ids=tokens, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return self.torch.nn.functional.normalize(pooled.float(), dim=-1)

    def embed(self, ids: list[list[int]], batch: int = 1024, bf16: bool = True) -> np.ndarray:
        torch = self.torch
        order = np.argsort([len(x) for x in ids])
        out = torch.empty((len(ids), 384), dtype=torch.float32, device=self.device)
        self.model.eval()
        with torch.inference_mode(), torch.autocast(self.device.split(":")[0],
                                                    dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, len(ids), batch):
                rows = order[start:start + batch]
                out[torch.as_tensor(rows, device=self.device)] = self.forward(
                    [ids[i] for i in rows])
        return out  # type: ignore[return-value]


def doc_scores(torch, queries, passages, passage_doc, n_docs):  # type: ignore[no-untyped-def]
    """(Q, n_docs): each document's best passage score (-inf for documents not present)."""
    scores = queries @ passages.T  # (Q, P)
    index = passage_doc.unsqueeze(0).expand_as(scores)
    best = torch.full((queries.shape[0], n_docs), -math.inf, device=scores.device)
    return best.scatter_reduce(1, index, scores, reduce="amax")


def evaluate(enc: Encoder, data: dict, tok: dict) -> dict[str, float]:  # type: ignore[type-arg]
    torch = enc.torch
    n_docs = data["documents"]
    known = enc.embed(tok["known"])
    val = enc.embed(tok["validation"])
    best = doc_scores(torch, val, known, tok["known_doc"], n_docs)
    truth = torch.as_tensor([d for _, d in data["validation"]], device=enc.device)
    own = best.gather(1, truth.unsqueeze(1))
    rank = (best > own).sum(1) + 1
    rr = torch.where(rank <= 100, 1.0 / rank.float(), torch.zeros_like(rank, dtype=torch.float))
    masked = enc.embed(tok["full_masked"])
    tune = enc.embed(tok["tune"])
    best = doc_scores(torch, tune, masked, tok["full_masked_doc"], n_docs)
    top = best.topk(10, dim=1).indices.cpu().numpy()
    ndcg = []
    for row, (_, relevant) in enumerate(data["tune_mesh"]):
        rel = set(relevant)
        dcg = sum(1 / math.log2(r + 2) for r, d in enumerate(top[row]) if d in rel)
        ideal = sum(1 / math.log2(r + 2) for r in range(min(10, len(rel))))
        ndcg.append(dcg / ideal)
    return {"known_item_mrr": float(rr.mean()), "tune_ndcg10": float(np.mean(ndcg))}


def progress(t0: float, path: Path, log: dict):  # type: ignore[no-untyped-def,type-arg]
    """``say(msg)``: print ``msg`` with the seconds since ``t0``, and write ``log`` to
    ``path`` as it stands (what comes back from the device even if the run is cut short)."""
    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", flush=True)
        path.write_text(json.dumps(log, indent=1))

    return say


def train(args: argparse.Namespace) -> None:
    import torch

    t0 = time.perf_counter()
    out = Path(os.environ.get("OUT", SCRATCH / "out"))
    out.mkdir(parents=True, exist_ok=True)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    log: dict = {"runs": [], "device": (torch.cuda.get_device_name(0)  # type: ignore[type-arg]
                                        if args.device == "cuda" else args.device)}

    say = progress(t0, out / "train-log.json", log)

    torch.backends.cuda.matmul.allow_tf32 = True
    with lzma.open(BUNDLE, "rt") as fh:
        data = json.load(fh)
    if args.limit:  # a smoke test: the first rows of everything
        for key in ("full_texts", "full_doc", "known_texts", "known_doc", "train",
                    "validation", "tune_mesh"):
            data[key] = data[key][:args.limit]
        present = set(data["known_doc"])
        data["train"] = [t for t in data["train"] if t[1] in present]
    enc = Encoder(MODEL_DIR, args.device)
    base = {k: v.detach().clone() for k, v in enc.model.state_dict().items()}
    dev = enc.device
    keep = [i for i, d in enumerate(data["full_doc"]) if d >= 0]
    tok = {
        "known": enc.tokenize(data["known_texts"]),
        "validation": enc.tokenize([t for t, _ in data["validation"]]),
        "full_masked": enc.tokenize([data["full_texts"][i] for i in keep]),
        "tune": enc.tokenize([t for t, _ in data["tune_mesh"]]),
        "known_doc": torch.as_tensor(data["known_doc"], device=dev),
        "full_masked_doc": torch.as_tensor([data["full_doc"][i] for i in keep], device=dev),
    }
    titles = enc.tokenize([t for t, _ in data["train"]])
    by_doc: dict[int, list[int]] = {}
    for row, d in enumerate(data["known_doc"]):
        by_doc.setdefault(d, []).append(row)
    say(f"tokenised; {len(titles)} training titles")
    parity = enc.embed(tok["known"][:2048], bf16=False).cpu().numpy()
    np.save(out / "parity-base.npy", parity.astype(np.float16))
    log["base"] = evaluate(enc, data, tok)
    say(f"base model: {log['base']}")
    best_score, best_state, best_name = -1.0, None, "base"
    for lr in args.lrs:
        enc.model.load_state_dict(base)
        for p in enc.model.parameters():
            p.requires_grad_(True)
        enc.model.embeddings.word_embeddings.weight.requires_grad_(False)
        params = [p for p in enc.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        steps = args.epochs * (len(titles) // args.batch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s, n=steps: (
            min(1.0, (s + 1) / (0.1 * n)) * max(0.0, (n - s) / n)))  # warm-up, linear decay
        rng = random.Random(0)
        for epoch in range(1, args.epochs + 1):
            enc.model.train()
            order = list(range(len(titles)))
            rng.shuffle(order)
            losses = []
            for start in range(0, len(order) - args.batch + 1, args.batch):
                rows = order[start:start + args.batch]
                passages = [tok["known"][rng.choice(by_doc[data["train"][r][1]])] for r in rows]
                with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16):
                    q = enc.forward([titles[r] for r in rows])
                    p = enc.forward(passages)
                logits = args.scale * q @ p.T
                target = torch.arange(len(rows), device=dev)
                loss = (torch.nn.functional.cross_entropy(logits, target)
                        + torch.nn.functional.cross_entropy(logits.T, target)) / 2
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(loss.detach())
            # measure the weights as they would ship: rounded to float16
            trained = {k: v.detach().clone() for k, v in enc.model.state_dict().items()}
            enc.model.load_state_dict({k: v.half().float() for k, v in trained.items()})
            figures = evaluate(enc, data, tok)
            enc.model.load_state_dict(trained)
            name = f"lr {lr:g} epoch {epoch}"
            score = figures["known_item_mrr"] + figures["tune_ndcg10"]
            mean_loss = float(torch.stack(losses).mean())
            log["runs"].append({"name": name, "loss": mean_loss, **figures})
            say(f"{name}: loss {mean_loss:.4f} {figures}")
            if score > best_score:
                best_score, best_name = score, name
                best_state = {k: v.half().cpu() for k, v in trained.items()}
    log["chosen"] = best_name
    say(f"chosen: {best_name}")
    assert best_state is not None
    enc.model.load_state_dict({k: v.float() for k, v in best_state.items()})
    from safetensors.torch import save_file
    changed = {k: v.contiguous() for k, v in best_state.items()
               if k != "embeddings.word_embeddings.weight"}
    names = sorted(changed)
    half = len(names) // 2
    save_file({k: changed[k] for k in names[:half]}, str(out / "weights-1.safetensors"))
    save_file({k: changed[k] for k in names[half:]}, str(out / "weights-2.safetensors"))
    word = best_state["embeddings.word_embeddings.weight"]
    log["word_embeddings_unchanged"] = bool(torch.equal(word, base[
        "embeddings.word_embeddings.weight"].half().cpu()))
    known = enc.embed(tok["known"], bf16=False).cpu().numpy()
    write_uint8(out, "known", known)
    say("known-item vectors written")
    full = enc.embed(enc.tokenize(data["full_texts"]), bf16=False).cpu().numpy()
    write_uint8(SCRATCH, "full", full)
    say(f"done in {time.perf_counter() - t0:.0f} s")


def write_uint8(folder: Path, name: str, vectors: np.ndarray) -> None:
    """Per-dimension range quantisation to 8 bits, split into files of at most 15 MiB."""
    lo, hi = vectors.min(0), vectors.max(0)
    codes = np.round((vectors - lo) / np.maximum(hi - lo, 1e-12) * 255).astype(np.uint8)
    np.save(folder / f"{name}-range.npy", np.stack([lo, hi]).astype(np.float32))
    rows = (15 * 2**20) // codes.shape[1]
    for part, start in enumerate(range(0, len(codes), rows)):
        np.save(folder / f"{name}-{part}.npy", codes[start:start + rows])


def ship_full(_: argparse.Namespace) -> None:
    out = Path(os.environ["OUT"])
    for path in sorted(SCRATCH.glob("full-*.npy")):
        path.replace(out / path.name)
    print(sorted(p.name for p in out.iterdir()))


# -- here: installing what came back, and the comparison -------------------------------------

ADAPTED_DIR_NAME = "all-MiniLM-L6-v2-medline"


def read_uint8(folder: Path, name: str) -> np.ndarray:
    """The vectors ``write_uint8`` stored, decoded and renormalised: (N, 384) float32."""
    lo, hi = np.load(folder / f"{name}-range.npy")
    parts = sorted(folder.glob(f"{name}-[0-9]*.npy"), key=lambda p: int(p.stem.split("-")[1]))
    codes = np.concatenate([np.load(p) for p in parts])
    vectors = codes.astype(np.float32) / 255 * (hi - lo) + lo
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def folder_embedder(settings, folder: Path):  # type: ignore[no-untyped-def]
    """An ``Embedder`` that reads MiniLM's files from ``folder`` (its fingerprint: the sha256
    of that folder's weights)."""
    sys.path.insert(0, str(REPO))
    from assistant.retrieval.embed import Embedder

    embedder = Embedder(settings.data_dir)
    embedder.folder = folder
    embedder._fingerprint = hashlib.sha256((folder / "model.safetensors").read_bytes()
                                           ).hexdigest()
    return embedder


def install(args: argparse.Namespace) -> None:
    """Assemble the adapted model's folder beside MiniLM's and put the vectors that came
    back where an index build looks for vectors already computed."""
    sys.path.insert(0, str(REPO))
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from assistant.config import Settings
    from assistant.retrieval.build import embedding_cache_dir, texts_sha256

    settings = Settings()
    back = Path(args.back)
    source = settings.data_dir / "models" / "all-MiniLM-L6-v2"
    target = settings.data_dir / "models" / ADAPTED_DIR_NAME
    shutil.copytree(source, target, dirs_exist_ok=True)
    # the GPU ran on MiniLM's weights rounded to float16; so does this copy
    weights = load_file(str(MODEL_DIR / "model.safetensors"))
    changed: dict[str, torch.Tensor] = {}
    for part in sorted(back.glob("weights-*.safetensors")):
        changed.update(load_file(str(part)))
    unknown = set(changed) - set(weights)
    if unknown:
        raise SystemExit(f"weights not in MiniLM: {sorted(unknown)[:5]}")
    weights.update(changed)
    (target / "model.safetensors").unlink()
    save_file({k: v.to(torch.float32).contiguous() for k, v in weights.items()},
              str(target / "model.safetensors"))
    embedder = folder_embedder(settings, target)
    with lzma.open(BUNDLE, "rt") as fh:
        data = json.load(fh)
    for name, digest in (("full", texts_sha256(data["full_corpus_sha256"], True)),
                         ("known", texts_sha256(data["known_corpus_sha256"], False))):
        vectors = read_uint8(back, name)
        cache = embedding_cache_dir(settings, embedder, digest)
        cache.mkdir(parents=True, exist_ok=True)
        for part, start in enumerate(range(0, len(vectors), 8192)):
            np.save(cache / f"{part:05d}.npy", vectors[start:start + 8192])
        print(f"{name}: {len(vectors)} vectors into {cache}")
    print(f"adapted model in {target} (sha256 {embedder.fingerprint})")


def compare(args: argparse.Namespace) -> None:
    """``assistant eval retrieval``'s benchmark with MiniLM and with the adapted copy, both
    without the query adapter and the re-ranker (each made for MiniLM's vectors)."""
    sys.path.insert(0, str(REPO))
    from assistant.config import Settings
    from assistant.retrieval.benchmark import BenchmarkConfig, run_benchmark
    from assistant.retrieval.build import build_index, index_path
    from assistant.retrieval.embed import Embedder
    from assistant.retrieval.index import IndexManifest

    base = Settings()
    settings = base.model_copy(update={"query_adapter": False, "reranker": False})
    config = BenchmarkConfig()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {"minilm": (settings, Embedder(settings.data_dir)),
            "adapted": (settings.model_copy(update={"index_dir": base.data_dir / "cache"
                                                    / "adapt-index"}),
                        folder_embedder(settings, base.data_dir / "models" / ADAPTED_DIR_NAME))}
    live = IndexManifest.load(index_path(base) / "manifest.json")
    for name in args.runs:
        run_settings, embedder = runs[name]
        if not (index_path(run_settings) / "manifest.json").exists():  # as the live one
            build_index(run_settings, kind=live.index_kind, embedder=embedder,
                        params=live.index_params, progress=False)
        report = run_benchmark(run_settings, config, out / f"{name}.json", embedder=embedder)
        print(f"== {name}\n" + "\n".join(report["table"]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bundle").set_defaults(run=bundle)
    p = sub.add_parser("train")
    p.add_argument("--lrs", type=float, nargs="+", default=[2e-5, 5e-5, 1e-4])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--limit", type=int, default=0, help="a smoke test on this many rows")
    p.set_defaults(run=train)
    sub.add_parser("ship-full").set_defaults(run=ship_full)
    p = sub.add_parser("install")
    p.add_argument("--back", default=str(RUN / "back"), help="the files $OUT brought back")
    p.set_defaults(run=install)
    p = sub.add_parser("compare")
    p.add_argument("--out", default=str(REPO / ".data" / "reports" / "adapt"))
    p.add_argument("--runs", nargs="+", default=["adapted", "minilm"])
    p.set_defaults(run=compare)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()

"""Report generation warm-started from SmolLM2-135M-Instruct (issue 5: "a small GPT-2-style
decoder trained here, or one warm-started from the SmolLM2-135M weights that ship offline:
measure, then choose"). A measurement on the validation reports, not a release candidate.

SmolLM2 (the registry's GGUF, Q4_1, dequantised by transformers) is fine-tuned on the
training reports to write FINDINGS and IMPRESSION after a prompt of the study's MeSH codes
and indication (variant ``codes``), and also with the nearest training report by codes and
the indication's wording (the release decoder's first neighbour; the study itself left out
in training) in the prompt (variant ``neighbour``). Loss on the report's tokens only;
greedy decoding. On 2 CPU cores one epoch is hours (``cpu-cost`` measures it), so the
fine-tuning runs on a lent GPU:

    .venv/bin/python scripts/smollm2_report.py bundle      # here: prompts, model in 2 parts
    python3 scripts/smollm2_report.py train                # there (the two parts joined)
    .venv/bin/python scripts/smollm2_report.py score       # here: the validation scores
    .venv/bin/python scripts/smollm2_report.py cpu-cost    # here: a training step, a report

Validation only: the test reports are not read. The GGUF (98 MB) is over what one call to
the GPU machine carries, so ``bundle`` cuts it in two (``.devrun/g1``, ``.devrun/g2``): the
first call copies part 1 to /tmp/smol, the next (on the still-warm machine) joins part 2.
Measured in the twentieth session (README, report decoder): below the release decoder on
every validation measure, and 5.95 s a 100-token report on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / ".devrun"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = RUN / "rep" / "reports.json"
MAX_TOKENS = 384
MAX_NEW = 160


def prompt(codes: list[str], indication: str, neighbour: str | None) -> str:
    lines = [f"Findings codes: {'; '.join(codes) or 'none'}",
             f"Indication: {indication or 'not given'}"]
    if neighbour is not None:
        lines.append(f"Similar prior report: {neighbour}")
    return "\n".join(lines) + "\nReport:"


def bundle(_: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    import shutil

    from assistant.config import Settings
    from assistant.report.decoder.commands import load_split
    from assistant.report.decoder.evaluate import NEIGHBOUR_INDICATION
    from assistant.report.decoder.neighbours import ReportNeighbours

    settings = Settings()
    split = load_split(settings)
    train, val = split["train"], split["val"]
    near = ReportNeighbours(train, NEIGHBOUR_INDICATION)

    def rows(records, exclude: bool):  # type: ignore[no-untyped-def]
        out = []
        for r in records:
            codes = [f.code for f in r.findings]
            nn = near.nearest(r.findings, 1, r.uid if exclude else None, r.indication)[0]
            out.append({"uid": r.uid, "target": r.target,
                        "codes": prompt(codes, r.indication, None),
                        "neighbour": prompt(codes, r.indication, nn)})
        return out

    (RUN / "rep").mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps({"train": rows(train, True), "val": rows(val, False)}))
    source = settings.data_dir / "models" / "smollm2" / MODEL_FILE
    data = source.read_bytes()
    half = len(data) // 2
    for n, part in enumerate((data[:half], data[half:]), start=1):
        (RUN / f"g{n}").mkdir(exist_ok=True)
        (RUN / f"g{n}" / f"part{n}").write_bytes(part)
    site = RUN / "rep" / "site"  # the gguf package and its metadata, for the GPU machine
    if not (site / "gguf").exists():
        import importlib.metadata

        import gguf as gguf_package
        shutil.copytree(Path(gguf_package.__file__).parent, site / "gguf")
        dist = Path(str(importlib.metadata.distribution("gguf")._path))  # type: ignore[attr-defined]
        shutil.copytree(dist, site / dist.name)
    print(f"{len(train)} training and {len(val)} validation reports; model in 2 parts")


def train(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    out = Path(os.environ.get("OUT", "/tmp/smol/out"))
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(args.model_dir)
    data = json.loads(DATA.read_text())
    if args.limit:  # a smoke test
        data = {k: v[:args.limit] for k, v in data.items()}
    kind = args.device.split(":")[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=MODEL_FILE)
    tokenizer.pad_token = tokenizer.eos_token
    log: dict = {"runs": {}}  # type: ignore[type-arg]

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", flush=True)
        (out / "smollm2-log.json").write_text(json.dumps(log, indent=1))

    def encode(row: dict, variant: str) -> tuple[list[int], int]:  # type: ignore[type-arg]
        p = tokenizer(row[variant])["input_ids"]
        t = tokenizer(" " + row["target"])["input_ids"] + [tokenizer.eos_token_id]
        ids = (p + t)[:MAX_TOKENS]
        return ids, len(p)

    for variant in args.variants:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=MODEL_FILE,
                                                     dtype=torch.float32).to(args.device)
        say(f"{variant}: model loaded ({sum(p.numel() for p in model.parameters())} params)")
        examples = [encode(r, variant) for r in data["train"]]
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
        steps = args.epochs * (len(examples) // args.batch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s, n=steps: (
            min(1.0, (s + 1) / (0.05 * n)) * max(0.0, (n - s) / n)))
        rng = random.Random(0)
        for epoch in range(1, args.epochs + 1):
            model.train()
            order = list(range(len(examples)))
            rng.shuffle(order)
            losses = []
            for start in range(0, len(order) - args.batch + 1, args.batch):
                batch = [examples[i] for i in order[start:start + args.batch]]
                width = max(len(ids) for ids, _ in batch)
                ids = torch.full((len(batch), width), tokenizer.pad_token_id)
                labels = torch.full((len(batch), width), -100)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, (x, n) in enumerate(batch):
                    ids[row, :len(x)] = torch.tensor(x)
                    labels[row, n:len(x)] = torch.tensor(x[n:])
                    mask[row, :len(x)] = 1
                with torch.autocast(kind, dtype=torch.bfloat16):
                    loss = model(input_ids=ids.to(args.device), labels=labels.to(args.device),
                                 attention_mask=mask.to(args.device)).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                losses.append(loss.detach())
            name = f"{variant} epoch {epoch}"
            log["runs"][name] = {"train_loss": float(torch.stack(losses).mean())}
            if epoch in args.generate_at:
                log["runs"][name]["generated"] = generate(model, tokenizer, data["val"],
                                                          variant, args.gen_batch, args.device)
            say(f"{name}: loss {log['runs'][name]['train_loss']:.4f}")
        del model, opt
        torch.cuda.empty_cache()
    say("done")


def generate(model, tokenizer, rows, variant: str, batch: int,  # type: ignore[no-untyped-def]
             device: str) -> list[str]:
    import torch

    model.eval()
    tokenizer.padding_side = "left"
    texts: list[str] = []
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
        for start in range(0, len(rows), batch):
            enc = tokenizer([r[variant] for r in rows[start:start + batch]],
                            return_tensors="pt", padding=True).to(device)
            got = model.generate(**enc, do_sample=False, max_new_tokens=MAX_NEW,
                                 pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            new = got[:, enc["input_ids"].shape[1]:]
            texts += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return texts


def score_all(args: argparse.Namespace) -> None:
    """Validation BLEU-4 / METEOR / ROUGE-L / CIDEr and findings F1 of each generated set
    (cut at its first line break: the training targets have none), beside the release
    decoder and the nearest-neighbour baseline on the same reports."""
    sys.path.insert(0, str(REPO))
    from assistant.config import Settings
    from assistant.report.decoder.baselines import NearestNeighbour
    from assistant.report.decoder.commands import load_split, release_report_path, report_drafter
    from assistant.report.decoder.evaluate import NEIGHBOUR_INDICATION, draft_all
    from assistant.report.decoder.findings import consistency
    from assistant.report.decoder.scores import score

    settings = Settings()
    split = load_split(settings)
    train, val = split["train"], split["val"]
    log = json.loads(Path(args.log).read_text())
    refs = [r.target for r in val]
    conditions = [r.findings for r in val]
    sets: dict[str, list[str]] = {}
    for name, run in log["runs"].items():
        if "generated" in run:
            texts = run["generated"]
            cut = sum("\n" in t for t in texts)
            sets[f"SmolLM2, {name} ({cut} cut at a line break)"] = [
                t.split("\n")[0].strip() for t in texts]
    styled = NearestNeighbour(train, NEIGHBOUR_INDICATION)
    sets["nearest neighbour, codes + indication"] = [styled(r.findings, r.indication)
                                                     for r in val]
    start = time.perf_counter()
    drafter = report_drafter(settings, release_report_path(settings), train)
    sets["release decoder"] = draft_all(drafter, val)
    log_seconds = time.perf_counter() - start
    results = {}
    print(f"{len(val)} validation reports (release drafted in {log_seconds:.0f} s)")
    print(f"{'method':<62} BLEU-4  METEOR ROUGE-L  CIDEr  F1")
    for name, hyps in sets.items():
        got = score(refs, hyps, n_boot=args.n_boot).to_dict()
        f1 = consistency(hyps, conditions).to_dict()
        results[name] = {"scores": got, "consistency": f1}
        values = [got[m]["value"] for m in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")]  # type: ignore[index]
        print(f"{name:<62} " + " ".join(f"{v:.4f}" for v in values) + f" {f1['f1']:.4f}")
    Path(args.out).write_text(json.dumps(results, indent=1))


def cpu_cost(args: argparse.Namespace) -> None:
    """On this machine's CPU (``torch`` threads as set): seconds per training step of
    ``--batch`` reports (bfloat16 autocast, AdamW), so an epoch's hours; and seconds for a
    100-token report, greedy with the key-value cache (the end token suppressed)."""
    import statistics

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(args.model_dir)
    data = json.loads(DATA.read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=MODEL_FILE)
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=MODEL_FILE,
                                                 dtype=torch.float32)
    rows = data["train"][:args.batch * (args.steps + 1)]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    times = []
    for step in range(args.steps + 1):
        batch = rows[step * args.batch:(step + 1) * args.batch]
        enc = tokenizer([r["codes"] + " " + r["target"] for r in batch], return_tensors="pt",
                        padding=True, truncation=True, max_length=MAX_TOKENS)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**enc, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step:  # the first is a warm-up
            times.append(time.perf_counter() - start)
    per_step = statistics.median(times)
    epoch_h = per_step * len(data["train"]) / args.batch / 3600
    print(f"training: {per_step:.2f} s a step of {args.batch} reports (median of "
          f"{args.steps}), {epoch_h:.1f} h an epoch of {len(data['train'])} reports")
    model.eval()
    enc = tokenizer(data["val"][0]["codes"], return_tensors="pt")
    report_times = []
    with torch.inference_mode():
        for _ in range(args.reports + 1):
            start = time.perf_counter()
            model.generate(**enc, do_sample=False, max_new_tokens=100, min_new_tokens=100,
                           pad_token_id=tokenizer.pad_token_id)
            report_times.append(time.perf_counter() - start)
    print(f"a 100-token report, greedy: median {statistics.median(report_times[1:]):.2f} s "
          f"({min(report_times[1:]):.2f}-{max(report_times[1:]):.2f}, {args.reports} runs, "
          f"{torch.get_num_threads()} threads)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bundle").set_defaults(run=bundle)
    p = sub.add_parser("train")
    p.add_argument("--model-dir", default="/tmp/smol")
    p.add_argument("--variants", nargs="+", default=["codes", "neighbour"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--generate-at", type=int, nargs="+", default=[2, 3])
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--gen-batch", type=int, default=128)
    p.add_argument("--device", default="cuda")
    p.add_argument("--limit", type=int, default=0, help="a smoke test on this many reports")
    p.set_defaults(run=train)
    p = sub.add_parser("cpu-cost")
    p.add_argument("--model-dir", default=str(REPO / ".data" / "models" / "smollm2"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--reports", type=int, default=5)
    p.set_defaults(run=cpu_cost)
    p = sub.add_parser("score")
    p.add_argument("--log", default=str(REPO / ".data" / "reports" / "smollm2"
                                        / "smollm2-log.json"))
    p.add_argument("--out", default=str(REPO / ".data" / "reports" / "smollm2"
                                        / "validation.json"))
    p.add_argument("--n-boot", type=int, default=200)
    p.set_defaults(run=score_all)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()

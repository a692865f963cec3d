"""Generated wording for chat answers, measured: could SmolLM2-135M-Instruct (the model that
ships offline) word a knowledge answer from the passages the extractive answer cites, and
how often would its sentences be in the passages they cite?

The questions and the retrieval are those of ``scripts/eval_chat_citations.py`` ("What is
<X>?" for MeSH major topics of the indexed citations and names of indexed HPO terms, a
seeded sample), each through the chat engine the service runs. For each answered question
the model is given the numbered passages the extractive answer quotes (title and quote)
and asked for one or two sentences, each ending with the number of its passage. Greedy
decoding, at most ``--max-new-tokens``, one torch thread (as the service runs a request).

Each generated sentence is checked as the extractive answers are (``assistant.chat.support``):
supported when its words are contained in a passage it cites (title and text, read from
the index), or when at least 90% of its terms are there; a sentence without a passage
number, or citing one that does not exist, is unsupported. An answer would be kept only if
every sentence is supported (else the service would fall back to the extractive answer).
The control checks each sentence against another question's passages: it shows the check
can fail. Also: how many sentences are a passage's words copied whole, and the time.

Needs the optional ``generation`` packages (transformers reads GGUF files only with
``gguf``, and loads them with ``accelerate``); the set-up does not install them:

    .venv/bin/pip install -e '.[generation]'
    OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 .venv/bin/python scripts/eval_chat_generation.py \\
        --questions 60
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from eval_chat_citations import passages_by_id, questions  # this folder, as a script runs

from assistant.chat import ChatEngine, ConversationStore, Turn
from assistant.chat.support import support
from assistant.config import Settings
from assistant.retrieval.build import open_searcher
from assistant.retrieval.passages import split_sentences

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = ("You answer a clinician's question using only the numbered passages given. Write "
          "one or two sentences. End each sentence with the number of the passage it comes "
          "from in brackets, like [1]. Do not add anything the passages do not say.")
_MARK = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")  # [1] or [1, 2]
_MARK_AFTER_STOP = re.compile(r"([.!?])((?:\s*\[\d+(?:\s*,\s*\d+)*\])+)")  # "cells. [1]"
_ENUMERATOR = re.compile(r"(?m)^\s*\d+[.)]\s+")  # "1. " opening a line of a list


@dataclass
class Sentence:
    question: str
    text: str
    cites: list[int]
    supported: bool
    contained: bool
    in_any_passage: bool  # supported by one of the passages given, whatever it cites
    control_supported: bool = False


def load_model(data_dir: Path) -> tuple[Any, Any]:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: .venv/bin/pip install -e '.[generation]'")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = data_dir / "models" / "smollm2"
    if not (folder / MODEL_FILE).is_file():
        raise SystemExit(f"no {MODEL_FILE} in {folder}: run `assistant data fetch`")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=MODEL_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=MODEL_FILE,
                                                 dtype=torch.float32).eval()
    return tokenizer, model


def generate(tokenizer: Any, model: Any, question: str, quotes: list[str],
             max_new_tokens: int) -> tuple[str, int]:
    passages = "\n".join(f"[{n}] {q}" for n, q in enumerate(quotes, start=1))
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Passages:\n{passages}\n\nQuestion: {question}"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                        return_tensors="pt")
    ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.eos_token_id)
    new = out[0, ids.shape[1]:]
    return tokenizer.decode(new, skip_special_tokens=True).strip(), int(new.shape[0])


def check(question: str, text: str, evidence: dict[int, str], cut: bool) -> list[Sentence]:
    """The generated sentences, each checked against the passages it cites. A passage number
    written after the full stop ("... cells. [1]") belongs to the sentence before it; a line
    ends a sentence; list numbers and text without letters are not sentences; with ``cut``
    (the token limit stopped the model) an unfinished last sentence is left out."""
    text = _ENUMERATOR.sub("", _MARK_AFTER_STOP.sub(lambda m: f"{m[2]}{m[1]}", text))
    parts = [part for line in text.splitlines() for part in split_sentences(line)]
    if cut and parts and not parts[-1].rstrip().endswith((".", "!", "?")):
        parts = parts[:-1]
    out = []
    for sentence in parts:
        cites = [int(n) for group in _MARK.findall(sentence) for n in group.split(",")]
        claim = _MARK.sub("", sentence).strip()
        if not re.search(r"[A-Za-z]", claim):
            continue
        found = [support(claim, evidence[n]) for n in cites if n in evidence]
        out.append(Sentence(question, claim, cites, any(s.supported for s in found),
                            any(s.contained for s in found),
                            any(support(claim, e).supported for e in evidence.values())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=60, help="asked in all, at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--out", type=Path, help="every answer and sentence as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    settings = Settings()
    searcher = open_searcher(settings, rebuild=False)
    by_id = passages_by_id(searcher)
    engine = ChatEngine(ConversationStore(":memory:"), None, searcher,
                        max_citations=settings.chat.citations)
    start = time.perf_counter()
    tokenizer, model = load_model(settings.data_dir)
    print(f"model loaded in {time.perf_counter() - start:.1f} s")
    answers: list[dict[str, Any]] = []
    evidences: list[dict[int, str]] = []
    seconds, tokens = [], []
    for question, _, _ in questions(searcher, settings.data_dir, args.questions, args.seed):
        extractive = engine.answer([Turn("user", question)])
        if not extractive.citations:
            continue  # refused: nothing to word
        evidence = {c.number: f"{by_id[c.id].title} {by_id[c.id].text}"
                    for c in extractive.citations}
        t = time.perf_counter()
        text, n = generate(tokenizer, model, question, [c.quote for c in extractive.citations],
                           args.max_new_tokens)
        seconds.append(time.perf_counter() - t)
        tokens.append(n)
        cut = n >= args.max_new_tokens
        answers.append({"question": question, "generated": text, "cut": cut,
                        "sentences": check(question, text, evidence, cut)})
        evidences.append(evidence)
    for i, answer in enumerate(answers):  # control: the next answer's passages
        other = evidences[(i + 1) % len(evidences)]
        for s in answer["sentences"]:
            s.control_supported = len(answers) > 1 and any(
                support(s.text, e).supported for e in other.values())
        answer["kept"] = bool(answer["sentences"]) and all(
            s.supported for s in answer["sentences"])
    sentences: list[Sentence] = [s for a in answers for s in a["sentences"]]
    n_s = max(len(sentences), 1)
    kept = sum(a["kept"] for a in answers)
    figures = {
        "answers": len(answers), "kept_whole": kept, "sentences": len(sentences),
        "cut_at_token_limit": sum(a["cut"] for a in answers),
        "supported": sum(s.supported for s in sentences) / n_s,
        "copied_whole": sum(s.contained for s in sentences) / n_s,
        "without_citation": sum(not s.cites for s in sentences) / n_s,
        "in_any_passage": sum(s.in_any_passage for s in sentences) / n_s,
        "control_supported": sum(s.control_supported for s in sentences) / n_s,
        "seconds_median": statistics.median(seconds) if seconds else float("nan"),
        "tokens_per_s": sum(tokens) / sum(seconds) if seconds else float("nan")}
    print(f"answers worded: {len(answers)}; every sentence supported (would be kept): {kept}; "
          f"stopped by the token limit: {figures['cut_at_token_limit']} (their unfinished "
          "last sentence left out)")
    print(f"sentences: {len(sentences)}; in a passage they cite: {figures['supported']:.1%} "
          f"(copied whole: {figures['copied_whole']:.1%}); with no passage number: "
          f"{figures['without_citation']:.1%}; in any passage given, whatever the number: "
          f"{figures['in_any_passage']:.1%}")
    print(f"control (each sentence against the next answer's passages): "
          f"{figures['control_supported']:.1%}")
    print(f"time per answer: median {figures['seconds_median']:.2f} s, "
          f"{figures['tokens_per_s']:.1f} tokens generated a second, reading the prompt "
          "included (one thread)")
    if args.out:
        rows = [{**a, "sentences": [asdict(s) for s in a["sentences"]]} for a in answers]
        args.out.write_text(json.dumps({"figures": figures, "answers": rows}, indent=1))


if __name__ == "__main__":
    main()

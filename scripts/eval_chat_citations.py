"""Citation support of chat answers: how often a cited sentence's claim is in the passage
it cites.

Questions come from data nobody here wrote: "What is <X>?" for X the NLM MeSH major-topic
descriptors of the indexed MEDLINE citations and the names of the indexed HPO terms (a
seeded sample of each). Each question goes through the chat engine the service runs, and
each answer is read as a client sees it: every line "[n] Title: "quote"" is split into
sentences (the claims), and each claim is checked against the passage that the answer's
source [n] is (title and text, read from the index by passage id): supported when its words
are contained in it, or when at least 90% of its terms are (``assistant.chat.support``).
A source line that names another citation than the passage's counts every claim of [n] as
unsupported.

More figures keep the first honest. The control checks every claim against the passage
another answer cites (the next claim's, cyclically): it shows the check can fail. On topic:
the share of cited passages that hold the question's terms. Own entry: the share of HPO
questions whose answer cites the asked term's own entry (its definition).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/eval_chat_citations.py \\
        --index-dir indexes --questions 200
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from assistant.chat import ChatEngine, ConversationStore, Turn, support
from assistant.chat.support import covers, focus_terms
from assistant.config import Settings
from assistant.retrieval.build import open_searcher
from assistant.retrieval.corpus import Source, iter_corpus
from assistant.retrieval.index import PassageRecord
from assistant.retrieval.passages import split_sentences
from assistant.retrieval.search import GAP, Searcher

log = logging.getLogger("eval_chat_citations")

_CLAIM_LINE = re.compile(r'^\[(?P<n>\d+)\] (?:(?P<title>.*?): )?"(?P<quote>.*)"$')
_SOURCE_LINE = re.compile(r"^\[(?P<n>\d+)\] (?P<citation>.*) (?P<url>\S+)$")


@dataclass
class Claim:
    question: str
    origin: str  # "mesh" or "hpo"
    number: int
    passage_id: str
    sentence: str
    contained: bool
    overlap: float
    supported: bool
    control_supported: bool = False


def questions(searcher: Searcher, data_dir: Path, count: int, seed: int,
              template: str = "What is {}?") -> list[tuple[str, str, str | None]]:
    """(question, origin, the HPO term's own id): MeSH major topics of the indexed
    citations and names of the indexed HPO terms, a seeded sample of up to ``count`` split
    between the two."""
    store = searcher.index.passages
    indexed = {store.doc_id(i) for i in range(len(store))}
    prefixes: dict[Source, str] = {"medline": "PMID:", "hpo": "HP:"}
    sources = tuple(s for s, prefix in prefixes.items()
                    if any(d.startswith(prefix) for d in indexed))
    names: dict[str, dict[str, str | None]] = {"mesh": {}, "hpo": {}}
    for doc in iter_corpus(data_dir, sources):
        if doc.id not in indexed:
            continue
        if doc.source == "hpo":
            names["hpo"].setdefault(doc.title, doc.id)
        names["mesh"].update((h.descriptor, None) for h in doc.mesh if h.major)
    rng = random.Random(seed)
    present = [origin for origin in ("mesh", "hpo") if names[origin]]
    out = []
    for origin in present:
        pool = sorted(names[origin])
        for name in rng.sample(pool, min(len(pool), count // len(present))):
            out.append((template.format(name), origin, names[origin][name]))
    return out


def passages_by_id(searcher: Searcher) -> dict[str, PassageRecord]:
    store = searcher.index.passages
    return {record.id: record for record in (store[i] for i in range(len(store)))}


def claims_of(answer_text: str, cited: dict[int, PassageRecord], question: str, origin: str
              ) -> list[Claim]:
    """Every quoted sentence of an answer, checked against the passage its number cites."""
    quoted, _, listed = answer_text.partition("\nSources:\n")
    sources = {int(m["n"]): m["citation"] for line in listed.splitlines()
               if (m := _SOURCE_LINE.match(line))}
    claims = []
    for line in quoted.splitlines():
        match = _CLAIM_LINE.match(line)
        if match is None:
            continue
        n = int(match["n"])
        record = cited.get(n)
        honest = record is not None and sources.get(n) == record.citation
        evidence = f"{record.title} {record.text}" if record is not None else ""
        # each side of a gap the quote marks (" … ") is a claim of its own
        for sentence in (s for part in match["quote"].split(GAP)
                         for s in split_sentences(part)):
            s = support(sentence, evidence)
            claims.append(Claim(question, origin, n, record.id if record else "", sentence,
                                honest and s.contained, s.overlap, honest and s.supported))
    return claims


def control(claims: list[Claim], passages: dict[str, PassageRecord]) -> None:
    """Check each claim against the passage the next claim (cyclically) from another
    question cites."""
    for i, claim in enumerate(claims):
        other = next((c for c in claims[i + 1:] + claims[:i] if c.question != claim.question),
                     None)
        if other is not None:
            record = passages[other.passage_id]
            claim.control_supported = support(claim.sentence,
                                              f"{record.title} {record.text}").supported


def run(index_dirs: Sequence[Path], count: int, seed: int, template: str = "What is {}?"
        ) -> tuple[dict[str, float], list[Claim]]:
    claims: list[Claim] = []
    passages: dict[str, PassageRecord] = {}
    asked = answered = on_topic = cited_total = own = own_asked = 0
    for index_dir in index_dirs:
        settings = Settings(index_dir=index_dir)
        searcher = open_searcher(settings, rebuild=False)
        by_id = passages_by_id(searcher)
        passages.update(by_id)
        engine = ChatEngine(ConversationStore(":memory:"), None, searcher,
                            max_citations=settings.chat.citations)
        for question, origin, term in questions(searcher, settings.data_dir, count, seed,
                                                template):
            answer = engine.answer([Turn("user", question)])
            asked += 1
            cited = {c.number: by_id[c.id] for c in answer.citations}
            own_asked += term is not None
            own += term is not None and any(r.doc_id == term for r in cited.values())
            answered += bool(cited)
            cited_total += len(cited)
            focus = focus_terms(question)
            on_topic += sum(covers(focus, f"{r.title} {r.text}") for r in cited.values())
            claims += claims_of(answer.text, cited, question, origin)
    control(claims, passages)
    n = max(len(claims), 1)
    figures = {"questions": asked, "answered": answered, "refused": asked - answered,
               "citations": cited_total, "claims": len(claims),
               "supported": sum(c.supported for c in claims) / n,
               "contained": sum(c.contained for c in claims) / n,
               "control_supported": sum(c.control_supported for c in claims) / n,
               "on_topic": on_topic / max(cited_total, 1),
               "hpo_own_entry_cited": own / max(own_asked, 1)}
    return figures, claims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index-dir", type=Path, action="append",
                        help="an index folder (repeatable); default: the settings' one")
    parser.add_argument("--questions", type=int, default=200, help="per index, at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--template", default="What is {}?",
                        help='the question asked of each name, "{}" standing for it')
    parser.add_argument("--out", type=Path, help="write the figures and every claim as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    figures, claims = run(args.index_dir or [Settings().index_dir], args.questions, args.seed,
                          args.template)
    print(f"questions {figures['questions']}: answered {figures['answered']}, refused "
          f"{figures['refused']}; {figures['citations']} citations, {figures['claims']} "
          "cited sentences")
    print(f"citation support: {figures['supported']:.1%} of cited sentences are in the "
          f"passage they cite ({figures['contained']:.1%} word for word)")
    print(f"control (each sentence against another answer's passage): "
          f"{figures['control_supported']:.1%}")
    print(f"on topic: {figures['on_topic']:.1%} of cited passages hold the question's terms")
    print(f"HPO questions citing the asked term's own entry: "
          f"{figures['hpo_own_entry_cited']:.1%}")
    for origin in ("mesh", "hpo"):
        mine = [c for c in claims if c.origin == origin]
        if mine:
            print(f"  {origin}: {len(mine)} sentences, "
                  f"{sum(c.supported for c in mine) / len(mine):.1%} supported")
    if args.out:
        args.out.write_text(json.dumps({"figures": figures,
                                        "claims": [asdict(c) for c in claims]}, indent=1))


if __name__ == "__main__":
    main()

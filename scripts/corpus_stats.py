"""Count the retrieval corpus: documents and passages per source, and the MeSH major topics.

Figures, not a test. Reads the verified files of the data folder (``ASSISTANT_DATA_DIR``).

    PYTHONPATH=. python scripts/corpus_stats.py --max-words 160 --min-citations 5
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter, defaultdict

from assistant.config import Settings
from assistant.retrieval.corpus import SOURCES, Document, iter_corpus, major_topic_counts
from assistant.retrieval.passages import corpus_sha256, split_passages

log = logging.getLogger("corpus_stats")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-words", type=int, default=160, help="passage length limit")
    parser.add_argument("--overlap", type=int, default=1, help="sentences shared by passages")
    parser.add_argument("--min-citations", type=int, default=5,
                        help="a MeSH descriptor is a benchmark query if it is a major topic of "
                             "at least this many citations")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data_dir = Settings().data_dir

    documents: Counter[str] = Counter()
    described: Counter[str] = Counter()
    passages: Counter[str] = Counter()
    words: dict[str, list[int]] = defaultdict(list)
    medline: list[Document] = []
    all_passages = []
    for source in SOURCES:
        start = time.perf_counter()
        for document in iter_corpus(data_dir, (source,)):
            documents[source] += 1
            described[source] += document.has_abstract
            if source == "medline":
                medline.append(document)
            pieces = split_passages(document, args.max_words, args.overlap)
            passages[source] += len(pieces)
            words[source].extend(len(p.text.split()) for p in pieces)
            all_passages.extend(pieces)
        log.info("%-8s %6d documents, %6d with abstract/definition, %6d passages "
                 "(words: mean %.1f, max %d) in %.1f s", source, documents[source],
                 described[source], passages[source],
                 sum(words[source]) / max(1, len(words[source])), max(words[source], default=0),
                 time.perf_counter() - start)

    topics = major_topic_counts(medline)
    queries = {ui: nc for ui, nc in topics.items() if nc[1] >= args.min_citations}
    log.info("MeSH: %d descriptors are a major topic somewhere; %d of them for >= %d citations "
             "(benchmark query set); most frequent: %s", len(topics), len(queries),
             args.min_citations, ", ".join(f"{n} ({c})" for n, c in list(queries.values())[:5]))
    log.info("all: %d documents, %d passages, corpus sha256 %s", sum(documents.values()),
             len(all_passages), corpus_sha256(all_passages))


if __name__ == "__main__":
    main()

"""The literature index set-up built (``assistant index ensure``, from the committed seed):
the whole corpus, up to date, and answering with the right citations."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.retrieval.build import INDEX_NAME, open_searcher
from assistant.retrieval.search import Searcher
from assistant.retrieval.seed import SEED_FILE, seed_path
from tests.conftest import data_dir

pytestmark = [pytest.mark.data]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def searcher() -> Searcher:
    settings = Settings(data_dir=data_dir(), index_dir=REPO / "indexes")
    # rebuild=False: set-up must have built it; a missing or stale index fails here
    return open_searcher(settings, rebuild=False)


def test_the_index_holds_the_whole_corpus(searcher: Searcher) -> None:
    manifest = searcher.index.manifest
    assert manifest.source_counts == {"medline": 99_986, "hpo": 19_140, "icd10cm": 46_946}
    assert manifest.document_count == 116_697
    assert searcher.index.titles is not None
    assert seed_path(REPO / "indexes", INDEX_NAME).joinpath(SEED_FILE).exists()


@pytest.mark.parametrize(("query", "source", "expected"), [
    ("cholera due to Vibrio cholerae 01, biovar cholerae", "icd10cm", "ICD10CM:A00.0"),
    ("Bilateral tonic-clonic seizure", "hpo", "HP:0002069"),
])
def test_named_entries_come_first(searcher: Searcher, query: str, source: str,
                                  expected: str) -> None:
    hits = searcher.search(query, k=3, sources=[source])
    assert hits[0].doc_id == expected, [h.citation for h in hits]


@pytest.mark.parametrize(("mode", "rerank", "about_in_five"), [
    ("dense", False, 1), ("bm25", False, 1), ("hybrid", False, 3), ("hybrid", True, 3)])
def test_a_topic_finds_citations_about_it(searcher: Searcher, mode: str, rerank: bool,
                                          about_in_five: int) -> None:
    searcher.ranking = searcher.ranking.but(rerank=rerank)
    try:
        hits = searcher.search("Dravet syndrome SCN1A mutation", k=5, mode=mode,  # type: ignore[arg-type]
                               sources=["medline"])
        assert searcher.reranks() == rerank
    finally:
        searcher.ranking = searcher.ranking.but(rerank=True)
    about = ["dravet" in (h.title + " " + h.snippet).lower() for h in hits]
    assert about[0] and sum(about) >= about_in_five, [h.citation for h in hits]
    for hit in hits:
        assert hit.citation.endswith(f"PMID:{hit.doc_id.removeprefix('PMID:')}")
        assert hit.snippet


def test_the_shipped_search_is_re_ranked(searcher: Searcher) -> None:
    """The committed re-ranker fits the committed query adapter, the fusion and the index:
    a retrained adapter without a retrained re-ranker fails here, not silently."""
    assert searcher.reranker is not None and searcher.reranks()
    assert searcher.reranker.meta["index_titles"] is True
    hits = searcher.search("Epilepsy, Temporal Lobe", k=10, sources=["medline"])
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(0.0 < h.score < 1.0 for h in hits)  # the re-ranker's probabilities

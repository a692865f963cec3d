"""GET /v1/search over HTTP: without an index (503), with a small real index (hits, filters,
citations in analyses), and its 422s."""

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest


def _search(server: str, **params: object) -> httpx.Response:
    return httpx.get(f"{server}/v1/search", params=params, timeout=60)  # type: ignore[arg-type]


def _error(response: httpx.Response, status: int, kind: str, words: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind
    assert words.lower() in error["message"].lower()


def test_search_without_an_index_is_503(server: str) -> None:
    response = _search(server, q="glioma")
    _error(response, 503, "retrieval_unavailable", "assistant index build")
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize(("params", "words"), [
    ({}, "query is empty"),
    ({"q": ""}, "query is empty"),
    ({"q": "   "}, "query is empty"),
    ({"q": "x" * 1001}, "at most 1000"),
    ({"q": "glioma\x00"}, "control characters"),
    ({"q": "\u200b"}, "no letters or digits"),  # a zero-width space alone
    ({"q": "\ufffd\ufffd ?!"}, "no letters or digits"),  # undecodable bytes, punctuation
    ({"q": "glioma", "source": "pubmed"}, "unknown source pubmed"),
    ({"q": "glioma", "year_from": 2010, "year_to": 2000}, "after year_to"),
    # a parameter given twice: the last had won, silently
    ({"q": ["glioma", "meningioma"]}, "given more than once: q (2 times)"),
    ({"q": "glioma", "k": [1, 2], "mode": ["bm25", "dense"]}, "k (2 times), mode (2 times)"),
    # a misspelt filter: it had been ignored, and the hits came back unfiltered
    ({"q": "glioma", "year-from": 2020}, "unknown query parameter(s): 'year-from'"),
    ({"q": "glioma", "yearFrom": 2020, "sources": "hpo"}, "'yearFrom', 'sources'"),
])
def test_bad_queries_are_422_before_the_index_is_needed(server: str, params: dict[str, object],
                                                        words: str) -> None:
    _error(_search(server, **params), 422, "invalid_query", words)


@pytest.mark.parametrize("params", [{"q": "a", "k": 0}, {"q": "a", "k": 51},
                                    {"q": "a", "mode": "fuzzy"}, {"q": "a", "year_to": "soon"}])
def test_bad_parameters_are_422(server: str, params: dict[str, object]) -> None:
    _error(_search(server, **params), 422, "invalid_request")


@pytest.mark.data
@pytest.mark.slow
def test_ready_with_the_index(indexed_server: str) -> None:
    ready = httpx.get(f"{indexed_server}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["components"] == {"vision": "ok", "retrieval": "ok"}


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_hits_with_citations(indexed_server: str, mode: str) -> None:
    response = _search(indexed_server, q="  cancer   patients ", k=3, mode=mode)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["query"], body["k"], body["mode"]) == ("cancer patients", 3, mode)
    assert 1 <= len(body["hits"]) <= 3
    for hit in body["hits"]:
        assert hit["source"] == "medline" and hit["id"].startswith("PMID:")
        assert hit["citation"] and hit["snippet"] and hit["url"].startswith("https://")
    assert len({hit["doc_id"] for hit in body["hits"]}) == len(body["hits"])


@pytest.mark.data
@pytest.mark.slow
def test_filters(indexed_server: str) -> None:
    hits = _search(indexed_server, q="patients", k=20).json()["hits"]
    years = sorted({h["year"] for h in hits if h["year"]})
    assert years, hits
    year = years[0]
    filtered = _search(indexed_server, q="patients", k=20, year_from=year, year_to=year).json()
    assert filtered["hits"] and {h["year"] for h in filtered["hits"]} == {year}
    other = _search(indexed_server, q="patients", source="hpo").json()
    assert other["hits"] == []  # the index holds MEDLINE only


@pytest.mark.data
@pytest.mark.slow
def test_analysis_cites_the_index(indexed_server: str, br35h: Callable[[int], Path]) -> None:
    response = httpx.post(f"{indexed_server}/v1/analyze",
                          files={"file": ("s.jpg", br35h(1).read_bytes())}, timeout=60)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["citations_query"] == "brain tumor MRI" and out["citations_note"] is None
    assert out["citations"] and all(c["citation"] for c in out["citations"])
    assert {m["role"] for m in out["models"]} >= {"retrieval-embedder", "retrieval-index"}

"""Building the index from a data folder, staleness, rebuilding, and the CLI commands."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from assistant.config import Settings
from assistant.data.manifest import Manifest, sha256_file
from assistant.retrieval.adapter import AdaptedEmbedder, QueryAdapter
from assistant.retrieval.build import build_index, embedding_cache_dir, ensure_index, index_path
from assistant.retrieval.index import (
    DENSE_FILE,
    PASSAGES_FILE,
    IndexMissingError,
    StaleIndexError,
)
from tests.retrieval.conftest import HashingEmbedder


def _rewrite(settings: Settings, rel: str, text: str) -> None:
    """Change a data file and record its new sha256, as a fresh fetch would."""
    path = settings.data_dir / rel
    path.write_text(text, encoding="utf-8")
    manifest = Manifest.load(settings.data_dir)
    source = rel.split("/")[0]
    manifest.sources[source].files[rel] = sha256_file(path)
    manifest.save(settings.data_dir)


def test_build_writes_index_and_manifest(tiny_settings: Settings,
                                         embedder: HashingEmbedder) -> None:
    manifest = build_index(tiny_settings, progress=False, embedder=embedder)
    folder = index_path(tiny_settings)
    assert sorted(p.name for p in folder.iterdir()) == [
        "bm25", DENSE_FILE, "manifest.json", PASSAGES_FILE, "titles_bm25"]
    assert manifest.source_counts == {"medline": 4, "hpo": 3, "icd10cm": 5}
    assert (manifest.passage_count, manifest.document_count) == (12, 12)
    assert (manifest.embedder, manifest.embedder_sha256, manifest.dim) == (
        "test/hashing-embedder", "f" * 64, 64)
    assert manifest.index_kind == "flat" and manifest.corpus["max_words"] == 110
    first = json.loads((folder / PASSAGES_FILE).read_text().splitlines()[0])
    assert set(first) == {"id", "doc_id", "source", "title", "text", "year", "citation",
                          "url", "position"}


def test_small_builds(tiny_settings: Settings, embedder: HashingEmbedder) -> None:
    manifest = build_index(tiny_settings, sources=["hpo", "icd10cm"], limit=4, progress=False,
                           embedder=embedder)
    assert manifest.source_counts == {"hpo": 3, "icd10cm": 1}
    assert manifest.corpus["sources"] == ["hpo", "icd10cm"]
    with pytest.raises(ValueError, match="unknown sources"):
        build_index(tiny_settings, sources=["pubmed"], embedder=embedder)
    with pytest.raises(ValueError, match="limit"):
        build_index(tiny_settings, limit=0, embedder=embedder)


def test_an_unchanged_index_is_opened_not_rebuilt(tiny_settings: Settings,
                                                  embedder: HashingEmbedder) -> None:
    built = build_index(tiny_settings, progress=False, embedder=embedder)
    calls = embedder.calls
    loaded = ensure_index(tiny_settings, embedder=embedder)
    assert loaded.manifest == built and embedder.calls == calls


def test_a_changed_corpus_makes_the_index_stale_and_rebuilt(
        tiny_settings: Settings, embedder: HashingEmbedder,
        caplog: pytest.LogCaptureFixture) -> None:
    build_index(tiny_settings, sources=["hpo"], progress=False, embedder=embedder)
    text = (tiny_settings.data_dir / "hpo/hp.obo").read_text()
    _rewrite(tiny_settings, "hpo/hp.obo", text + "\n\n[Term]\nid: HP:0009999\nname: Newly\n")
    with pytest.raises(StaleIndexError, match="corpus sha256"):
        ensure_index(tiny_settings, rebuild=False, embedder=embedder)
    with caplog.at_level(logging.WARNING):
        loaded = ensure_index(tiny_settings, embedder=embedder)
    assert "literature index stale" in caplog.text
    assert loaded.manifest.source_counts == {"hpo": 4}  # rebuilt with the recorded sources
    assert loaded.passages[3].doc_id == "HP:0009999"


def test_changed_inputs_with_the_same_passages_keep_the_index(
        tiny_settings: Settings, embedder: HashingEmbedder) -> None:
    built = build_index(tiny_settings, sources=["hpo"], progress=False, embedder=embedder)
    text = (tiny_settings.data_dir / "hpo/hp.obo").read_text()
    _rewrite(tiny_settings, "hpo/hp.obo", "remark: a header line\n" + text)
    loaded = ensure_index(tiny_settings, rebuild=False, embedder=embedder)
    assert loaded.manifest.corpus_sha256 == built.corpus_sha256
    assert loaded.manifest.corpus_inputs_sha256 != built.corpus_inputs_sha256  # recorded
    assert loaded.manifest.created == built.created


def test_another_embedder_makes_the_index_stale(tiny_settings: Settings,
                                                embedder: HashingEmbedder) -> None:
    build_index(tiny_settings, sources=["icd10cm"], progress=False, embedder=embedder)
    other = HashingEmbedder(fingerprint="0" * 64)
    with pytest.raises(StaleIndexError, match="embedder sha256"):
        ensure_index(tiny_settings, rebuild=False, embedder=other)
    assert ensure_index(tiny_settings, embedder=other).manifest.embedder_sha256 == "0" * 64


def test_a_query_adapter_finds_the_passage_vectors_its_embedder_cached(
        tiny_settings: Settings) -> None:
    # Passages are embedded by the wrapped embedder either way: an index built with the
    # plain embedder and one built through the adapter share their cached vectors.
    base = HashingEmbedder()
    base.max_seq_length = 256  # type: ignore[attr-defined]  # as MiniLM's Embedder has
    adapted = AdaptedEmbedder(base, QueryAdapter(np.zeros((base.dim, base.dim)), {}))
    digest = "d" * 64
    assert (embedding_cache_dir(tiny_settings, adapted, digest)
            == embedding_cache_dir(tiny_settings, base, digest))
    other = HashingEmbedder()
    other.max_seq_length = 128  # type: ignore[attr-defined]
    assert (embedding_cache_dir(tiny_settings, other, digest)
            != embedding_cache_dir(tiny_settings, base, digest))


def test_missing_and_corrupt_indexes(tiny_settings: Settings,
                                     embedder: HashingEmbedder) -> None:
    with pytest.raises(IndexMissingError, match="assistant index build"):
        ensure_index(tiny_settings, rebuild=False, embedder=embedder)
    assert len(ensure_index(tiny_settings, embedder=embedder)) == 12  # built: the defaults
    build_index(tiny_settings, sources=["hpo"], limit=2, progress=False, embedder=embedder)
    (index_path(tiny_settings) / PASSAGES_FILE).write_text("{}\n")
    loaded = ensure_index(tiny_settings, embedder=embedder)  # rebuilt as recorded
    assert loaded.manifest.source_counts == {"hpo": 2}


# -- the commands -----------------------------------------------------------------------------


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(settings.data_dir),
           "ASSISTANT_INDEX_DIR": str(settings.index_dir)}
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True,
                          text=True, timeout=120, check=False, env=env)


def test_search_without_an_index_says_what_to_do(tiny_settings: Settings) -> None:
    for args in (("search", "glioma", "-k", "3"), ("search", "glioma", "--json"),
                 ("index", "info")):
        result = _cli(tiny_settings, *args)
        assert result.returncode == 1, result.stderr
        assert "assistant index build" in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_options_are_refused(tiny_settings: Settings) -> None:
    result = _cli(tiny_settings, "search", "glioma", "--mode", "fuzzy")
    assert result.returncode == 2 and "--mode must be one of" in result.stderr
    result = _cli(tiny_settings, "index", "build", "--kind", "annoy")
    assert result.returncode == 2 and "--kind must be one of" in result.stderr


def test_index_info(tiny_settings: Settings, embedder: HashingEmbedder) -> None:
    build_index(tiny_settings, sources=["hpo"], progress=False, embedder=embedder)
    result = _cli(tiny_settings, "index", "info")
    assert result.returncode == 0, result.stderr
    assert "passages:  3 of 3 documents (hpo 3)" in result.stdout
    # The tiny data folder has no MiniLM: whether the index is current cannot be said.
    assert "status:    unknown" in result.stdout and "minilm" in result.stdout


def test_index_info_reads_the_index_as_a_search_would(
        tiny_settings: Settings, embedder: HashingEmbedder,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """"up to date" only when the files open, as a search opens them (it said so for a
    truncated passages file that every search then refused)."""
    import typer

    from assistant.retrieval import commands
    from assistant.retrieval.index import PASSAGES_FILE

    build_index(tiny_settings, progress=False, embedder=embedder)
    monkeypatch.setattr(commands, "Embedder", lambda _: embedder)  # the stand-in's fingerprint
    commands.run_index_info(tiny_settings)
    assert "status:    up to date" in capsys.readouterr().out
    passages = index_path(tiny_settings) / PASSAGES_FILE
    passages.write_bytes(passages.read_bytes()[:-10])
    with pytest.raises(typer.Exit) as info:
        commands.run_index_info(tiny_settings)
    assert info.value.exit_code == 1
    assert "status:    unusable:" in capsys.readouterr().out

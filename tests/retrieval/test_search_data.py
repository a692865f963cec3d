"""End to end on the fetched data: a small HPO index with the real MiniLM embedder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.retrieval.build import build_index, open_searcher
from assistant.retrieval.embed import EMBEDDER_NAME, Embedder, native_bf16, trace_queries
from assistant.retrieval.search import Searcher
from tests.conftest import data_dir

pytestmark = [pytest.mark.data, pytest.mark.slow]

# HPO terms among the first 150 passages of hp.obo, queried by their names.
TERMS = {"Hydronephrosis": "HP:0000126", "Azoospermia": "HP:0000027",
         "Uterine prolapse": "HP:0000139"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=data_dir(), index_dir=tmp_path_factory.mktemp("indexes"))


@pytest.fixture(scope="module")
def searcher(settings: Settings) -> Searcher:
    embedder = Embedder(settings.data_dir)
    manifest = build_index(settings, sources=["hpo"], limit=150, progress=False,
                           embedder=embedder)
    assert manifest.source_counts == {"hpo": 150} and manifest.dim == 384
    assert manifest.embedder == EMBEDDER_NAME
    assert manifest.embedder_sha256 == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
    return open_searcher(settings, rebuild=False, embedder=embedder)


def test_embedder_gives_unit_vectors(searcher: Searcher) -> None:
    assert searcher.embedder is not None
    vectors = searcher.embedder.encode(["Seizure", "A fit of the nervous system."])
    assert vectors.shape == (2, 384) and vectors.dtype.name == "float32"
    assert abs(float((vectors**2).sum(axis=1).max()) - 1.0) < 1e-5


def test_traced_query_encoder_gives_the_sentence_transformer_vectors(searcher: Searcher
                                                                     ) -> None:
    """A search's few texts take the traced encoder, batches SentenceTransformer.encode:
    the same vectors either way, one text at a time or padded together, truncated ones
    included."""
    import numpy as np

    embedder = searcher.embedder
    assert isinstance(embedder, Embedder) and not embedder.traced  # off unless asked for
    assert trace_queries(embedder) and embedder.traced
    texts = ["Seizure", "  spaces around  ", "Carcinoma, Hepatocellular", "é ü 脑肿瘤 🧠",
             "word " * 400, "Dravet syndrome SCN1A in infants with febrile seizures"]
    reference = embedder.model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    try:
        embedder.precision, embedder._traced = "float32", None
        one_by_one = np.concatenate([embedder.encode([t]) for t in texts])
        together = embedder.encode(texts)
        assert embedder._traced is not None  # both went through the traced encoder
        assert np.abs(one_by_one - reference).max() < 1e-5
        assert np.abs(together - reference).max() < 1e-5
        # bfloat16 (emulated where the CPU lacks it): the same directions, near enough
        embedder.precision, embedder._traced = "bfloat16", None
        assert embedder.traced_dtype == "bfloat16"
        half = np.concatenate([embedder.encode([t]) for t in texts])
        assert half.dtype == np.float32 and np.allclose((half ** 2).sum(axis=1), 1, atol=1e-5)
        assert (half * reference).sum(axis=1).min() > 0.9995
        assert np.abs(embedder.encode(texts) - half).max() < 2e-2  # padded together
        # many queries (the benchmark's): one at a time, exactly as a search embeds each
        assert np.array_equal(embedder.encode_queries(texts * 3), np.concatenate([half] * 3))
    finally:
        embedder.precision, embedder._traced = "auto", None


def test_native_bf16_reads_the_cpu_flags() -> None:
    assert native_bf16("processor : 0\nflags : fpu avx512f avx512_bf16 sse\n")
    assert native_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not native_bf16("flags : fpu avx512f avx512bw avx512_vnni\n")
    assert not native_bf16("")
    with pytest.raises(ValueError, match="precision"):
        Embedder(Path("."), precision="float16")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize(("name", "term"), TERMS.items())
def test_a_term_name_finds_its_term(searcher: Searcher, mode: str, name: str,
                                    term: str) -> None:
    hits = searcher.search(name, k=3, mode=mode)  # type: ignore[arg-type]
    assert term in [h.doc_id for h in hits], [h.citation for h in hits]


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(settings.data_dir),
           "ASSISTANT_INDEX_DIR": str(settings.index_dir), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True,
                          text=True, timeout=120, check=False, env=env)


def test_cli_search_json(searcher: Searcher, settings: Settings) -> None:
    result = _cli(settings, "search", "dilated kidney pelvis", "-k", "3", "--json",
                  "--source", "hpo")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 3 and {h["source"] for h in hits} == {"hpo"}
    assert "HP:0000126" in [h["doc_id"] for h in hits]
    assert set(hits[0]) == {"id", "doc_id", "source", "title", "snippet", "score",
                            "citation", "url", "year"}


def test_cli_search_human(searcher: Searcher, settings: Settings) -> None:
    result = _cli(settings, "search", "Azoospermia", "-k", "2", "--mode", "bm25")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" 1. [")
    assert "HPO HP:0000027 Azoospermia" in result.stdout
    assert "https://hpo.jax.org/browse/term/HP:0000027" in result.stdout
    info = _cli(settings, "index", "info")
    assert info.returncode == 0 and "status:    up to date" in info.stdout


def test_real_index_files(settings: Settings, searcher: Searcher) -> None:
    folder = Path(settings.index_dir) / "literature"
    assert (folder / "dense.faiss").stat().st_size > 150 * 384 * 4

"""The dense index on disk: FAISS vectors, the passages they stand for, BM25, a manifest.

One index is a folder::

    dense.faiss      FAISS index, row i = passage i (inner product on unit vectors = cosine)
    passages.jsonl   one PassageRecord per line: all a hit needs, no XML re-read
    bm25/            the lexical index (``lexical.LexicalIndex``)
    titles_bm25/     BM25 over the documents' titles, row j = the j-th distinct document
                     in passage order (absent for an index built without titles)
    manifest.json    what built it, from what (``IndexManifest``)

``save_index`` writes a new folder beside the target and renames it into place, so readers
see the old index or the new one, never half of one. ``open_index`` memory-maps the FAISS
file read-only and refuses an index whose manifest names another corpus or embedder
(``StaleIndexError``) or whose files disagree with each other (``CorruptIndexError``).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from assistant.retrieval.corpus import SOURCES, Source
from assistant.retrieval.dense import INDEX_KINDS as INDEX_KINDS  # re-exported from dense
from assistant.retrieval.dense import IndexKind as IndexKind
from assistant.retrieval.dense import build_faiss as build_faiss
from assistant.retrieval.dense import search_faiss as search_faiss
from assistant.retrieval.lexical import LexicalIndex

# Sources whose records are named terms (a term's own entry is found by its title).
TITLED_SOURCES = ("hpo", "icd10cm")


def plain_title(text: str) -> str:
    """Lower case, only letters and digits, single spaces: how titles are compared."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DENSE_FILE = "dense.faiss"
PASSAGES_FILE = "passages.jsonl"
BM25_DIR = "bm25"
TITLES_DIR = "titles_bm25"
MANIFEST_FILE = "manifest.json"


class IndexUnusableError(RuntimeError):
    """The index cannot answer queries: build it with ``assistant index build``."""


class IndexMissingError(IndexUnusableError):
    """No index has been built in this folder."""


class StaleIndexError(IndexUnusableError):
    """The index was built from another corpus or with another embedder."""


class CorruptIndexError(IndexUnusableError):
    """Files of the index are missing, unreadable or disagree with each other."""


@dataclass(frozen=True)
class PassageRecord:
    """One indexed passage with its document's citation data: one line of passages.jsonl."""

    id: str  # "PMID:123#0"
    doc_id: str
    source: Source
    title: str
    text: str
    year: int | None
    citation: str
    url: str
    position: int


@dataclass
class IndexManifest:
    """What an index was built with and from; ``manifest.json``."""

    embedder: str  # "sentence-transformers/all-MiniLM-L6-v2"
    embedder_sha256: str  # of model.safetensors
    dim: int
    corpus_sha256: str  # passages.corpus_sha256 of the indexed passages
    corpus_inputs_sha256: str  # data files, passage settings and cutting code (build.py)
    passage_count: int
    document_count: int
    source_counts: dict[str, int]  # passages per source
    index_kind: IndexKind
    index_params: dict[str, Any]
    corpus: dict[str, Any]  # how the passages were made: sources, limit, max_words, overlap
    build_seconds: float
    created: str  # ISO 8601, UTC
    file_sizes: dict[str, int] = field(default_factory=dict)  # dense.faiss, passages.jsonl
    vectors_source: str = "embedded"  # or "seed": dequantised from the committed seed
    format_version: int = FORMAT_VERSION

    def save(self, path: Path) -> None:
        _atomic_write(path, json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> IndexManifest:
        if not path.exists():
            raise IndexMissingError(f"no index manifest at {path}: run `assistant index build`")
        try:
            manifest = cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise CorruptIndexError(f"{path} is not a valid index manifest ({exc}): "
                                    "run `assistant index build`") from exc
        if manifest.format_version != FORMAT_VERSION:
            raise StaleIndexError(f"{path} has index format {manifest.format_version}, this "
                                  f"code reads {FORMAT_VERSION}: run `assistant index build`")
        return manifest


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it private
    os.replace(tmp, path)


# -- on disk -------------------------------------------------------------------------------


def save_index(directory: Path, dense: faiss.Index, passages: Iterable[PassageRecord],
               manifest: IndexManifest, lexical: LexicalIndex,
               titles: LexicalIndex | None = None) -> None:
    """Write the index folder ``directory`` atomically: into a temporary folder beside it,
    then renamed over it (an old index is moved aside first and deleted after)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
        faiss.write_index(dense, str(tmp / DENSE_FILE))
        with (tmp / PASSAGES_FILE).open("w", encoding="utf-8") as handle:
            for record in passages:
                handle.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
        lexical.save(tmp / BM25_DIR)
        if titles is not None:
            titles.save(tmp / TITLES_DIR)
        manifest.file_sizes = {name: (tmp / name).stat().st_size
                               for name in (DENSE_FILE, PASSAGES_FILE)}
        manifest.save(tmp / MANIFEST_FILE)
        old = None
        if directory.exists():
            old = directory.parent / f".{directory.name}.old-{os.getpid()}"
            os.replace(directory, old)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # open mmaps of the old files stay valid
    log.info("index written to %s (%d passages)", directory, manifest.passage_count)


class PassageStore:
    """passages.jsonl, memory-mapped: a line per passage read when asked for; the source,
    year and document id of every passage held in memory for filtering and grouping."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        data = np.frombuffer(self._map, dtype=np.uint8) if self._map is not None else np.zeros(
            0, dtype=np.uint8)
        ends = np.flatnonzero(data == ord("\n"))
        if len(data) and (not len(ends) or ends[-1] != len(data) - 1):
            raise CorruptIndexError(f"{path} ends inside a line: it was truncated")
        self._starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
        self._ends = ends.astype(np.int64)
        del data  # no exported buffer may outlive the map
        self.source_codes = np.zeros(len(self._ends), dtype=np.uint8)  # index into SOURCES
        self.years = np.zeros(len(self._ends), dtype=np.int32)  # 0: no year
        # True where the passage is its document's title alone (a citation without an
        # abstract, a code without notes)
        self.title_only = np.zeros(len(self._ends), dtype=bool)
        self._doc_ids: list[str] = []
        rows: dict[str, int] = {}
        self._first: dict[str, int] = {}  # a document's first passage
        # an HPO term's or an ICD-10-CM code's title, plain -> its documents
        self._titled: dict[str, list[str]] = {}
        for i in range(len(self._ends)):
            record = self._record(i)
            self.source_codes[i] = SOURCES.index(record.source)
            self.years[i] = record.year or 0
            self.title_only[i] = record.text == record.title
            self._doc_ids.append(record.doc_id)
            rows.setdefault(record.doc_id, len(rows))
            if record.doc_id not in self._first:
                self._first[record.doc_id] = i
                if record.source in TITLED_SOURCES:
                    self._titled.setdefault(plain_title(record.title), []).append(
                        record.doc_id)
        # (N,) the row of each passage's document among the distinct documents in order
        self.doc_rows = np.fromiter((rows[d] for d in self._doc_ids), dtype=np.int64,
                                    count=len(self._doc_ids))
        self.document_count = len(rows)

    def __len__(self) -> int:
        return len(self._ends)

    def _record(self, i: int) -> PassageRecord:
        assert self._map is not None
        line = self._map[self._starts[i]:self._ends[i]]
        try:
            return PassageRecord(**json.loads(line))
        except (ValueError, TypeError) as exc:
            raise CorruptIndexError(f"{self.path} line {i + 1} is not a passage ({exc})"
                                    ) from exc

    def __getitem__(self, i: int) -> PassageRecord:
        if not 0 <= i < len(self):
            raise IndexError(f"passage {i} of {len(self)}")
        return self._record(i)

    def doc_id(self, i: int) -> str:
        """The document id of passage ``i``, without reading its line."""
        return self._doc_ids[i]

    def titled(self, words: str) -> list[str]:
        """The HPO terms and ICD-10-CM codes titled ``words`` (case and punctuation
        ignored: "cerebral edema" -> ["ICD10CM:G93.6"]), in index order."""
        return list(self._titled.get(plain_title(words), ()))

    def first_passage(self, doc_id: str) -> int | None:
        """The row of the document's first passage ("PMID:123", "HP:0001250",
        "ICD10CM:G40.909"); None when the index has no such document."""
        return self._first.get(doc_id)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


@dataclass
class LoadedIndex:
    """An opened index: read-only, the FAISS vectors memory-mapped."""

    directory: Path
    manifest: IndexManifest
    dense: faiss.Index
    passages: PassageStore
    lexical: LexicalIndex
    titles: LexicalIndex | None = None  # BM25 over document titles, a row per document

    def __len__(self) -> int:
        return len(self.passages)

    def close(self) -> None:
        self.passages.close()


def stale_reasons(manifest: IndexManifest, expected_corpus_sha: str | None,
                  expected_embedder_sha: str | None) -> list[str]:
    """What differs between the manifest and the corpus and embedder at hand ([] if none)."""
    reasons = []
    if expected_corpus_sha is not None and manifest.corpus_sha256 != expected_corpus_sha:
        reasons.append(f"corpus sha256 {manifest.corpus_sha256[:12]} in the index, "
                       f"{expected_corpus_sha[:12]} now")
    if expected_embedder_sha is not None and manifest.embedder_sha256 != expected_embedder_sha:
        reasons.append(f"embedder sha256 {manifest.embedder_sha256[:12]} in the index, "
                       f"{expected_embedder_sha[:12]} now")
    return reasons


def _check_files(directory: Path, manifest: IndexManifest) -> None:
    for name in (DENSE_FILE, PASSAGES_FILE, BM25_DIR):
        if not (directory / name).exists():
            raise CorruptIndexError(f"{directory / name} is missing: run "
                                    "`assistant index build`")
    for name, size in manifest.file_sizes.items():
        actual = (directory / name).stat().st_size
        if actual != size:
            raise CorruptIndexError(f"{directory / name} has {actual} bytes, the manifest "
                                    f"says {size}: run `assistant index build`")


def _mmap_flags(kind: IndexKind) -> int:
    """Read-only memory-mapping flags. In faiss 1.15, ``IO_FLAG_MMAP`` maps only IVF
    inverted lists (flat and HNSW vectors would be read into memory);
    ``IO_FLAG_MMAP_IFC`` maps the vectors of flat-code indexes (flat, HNSW storage)."""
    if kind == "ivfpq":
        return faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
    return faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY


def _read_parts(directory: Path, manifest: IndexManifest
                ) -> tuple[faiss.Index, PassageStore, LexicalIndex, LexicalIndex | None]:
    try:
        dense = faiss.read_index(str(directory / DENSE_FILE), _mmap_flags(manifest.index_kind))
        lexical = LexicalIndex.load(directory / BM25_DIR, mmap=True)
        titles = (LexicalIndex.load(directory / TITLES_DIR, mmap=True)
                  if (directory / TITLES_DIR).exists() else None)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise CorruptIndexError(f"cannot read the index in {directory} ({exc}): "
                                "run `assistant index build`") from exc
    passages = PassageStore(directory / PASSAGES_FILE)
    counts = {"manifest": manifest.passage_count, DENSE_FILE: int(dense.ntotal),
              PASSAGES_FILE: len(passages), BM25_DIR: len(lexical)}
    titles_ok = titles is None or len(titles) == passages.document_count
    if len(set(counts.values())) != 1 or dense.d != manifest.dim or not titles_ok:
        passages.close()
        raise CorruptIndexError(f"the index in {directory} disagrees with itself (passage "
                                f"counts {counts}, dimension {dense.d} vs {manifest.dim}, "
                                f"titles {len(titles) if titles else None} for "
                                f"{passages.document_count} documents): "
                                "run `assistant index build`")
    return dense, passages, lexical, titles


def open_index(directory: Path, expected_corpus_sha: str | None,
               expected_embedder_sha: str | None) -> LoadedIndex:
    """Open the index in ``directory`` read-only, the FAISS file memory-mapped.

    An expected sha256 of None is not checked. Raises ``IndexMissingError``,
    ``StaleIndexError`` (saying what differs) or ``CorruptIndexError``.
    """
    manifest = IndexManifest.load(directory / MANIFEST_FILE)
    if reasons := stale_reasons(manifest, expected_corpus_sha, expected_embedder_sha):
        raise StaleIndexError(f"the index in {directory} is stale: {'; '.join(reasons)}. "
                              "Run `assistant index build`")
    _check_files(directory, manifest)
    dense, passages, lexical, titles = _read_parts(directory, manifest)
    return LoadedIndex(directory=directory, manifest=manifest, dense=dense, passages=passages,
                       lexical=lexical, titles=titles)


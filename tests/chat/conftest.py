"""A small real literature index (the first 200 MEDLINE passages, the real MiniLM
embedder), built once per session, and real analyses of real images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.retrieval import build_index
from assistant.retrieval.build import index_path
from assistant.retrieval.corpus import iter_corpus
from assistant.retrieval.index import MANIFEST_FILE
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest
from tests.conftest import data_dir

INDEX_PASSAGES = 200


def chat_index_dir(factory: pytest.TempPathFactory) -> Path:
    """The index folder (``ASSISTANT_INDEX_DIR``), built on first use in this session."""
    root = factory.getbasetemp() / "chat-index"
    if not (index_path(Settings(index_dir=root)) / MANIFEST_FILE).exists():
        build_index(Settings(data_dir=data_dir(), index_dir=root), sources=["medline"],
                    limit=INDEX_PASSAGES, progress=False)
    return root


def indexed_records(index_dir: Path) -> dict[str, dict[str, object]]:
    """passage id -> its record, read straight from the index's passages.jsonl."""
    path = index_path(Settings(index_dir=index_dir)) / "passages.jsonl"
    records = (json.loads(line) for line in path.read_text().splitlines())
    return {str(r["id"]): r for r in records}


def topic_question(index_dir: Path) -> str:
    """'What is <descriptor>?' for the first MeSH major-topic descriptor (NLM's indexing,
    not ours) of an indexed citation whose title names it."""
    indexed = {str(r["doc_id"]) for r in indexed_records(index_dir).values()}
    for doc in iter_corpus(data_dir(), ("medline",)):
        if doc.id not in indexed:
            continue
        for heading in doc.mesh:
            if heading.major and heading.descriptor.lower() in doc.title.lower():
                return f"What is {heading.descriptor}?"
    raise AssertionError("no indexed citation's title names one of its major topics")


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chat_index_dir(tmp_path_factory)


@dataclass(frozen=True)
class Images:
    tumour: Path
    no_tumour: Path
    out_of_scope: Path  # a paediatric chest X-ray: not a brain MRI slice


def find_images() -> Images:
    data = data_dir()
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD]
    return Images(data / next(r.path for r in rows if r.label == 1),
                  data / next(r.path for r in rows if r.label == 0),
                  sorted((data / "kermany").glob("*.jpeg"))[0])


@pytest.fixture(scope="session")
def images() -> Images:
    found = find_images()
    for path in (found.tumour, found.no_tumour, found.out_of_scope):
        if not path.is_file():
            pytest.fail(f"missing {path}: run `assistant data fetch` first")
    return found

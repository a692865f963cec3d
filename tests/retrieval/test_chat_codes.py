"""The chat's code questions over a tiny real index of test-written ICD-10-CM entries:
ICD-10-CM calls tumours neoplasms."""

from __future__ import annotations

from pathlib import Path

from assistant.chat import ChatEngine, Turn
from assistant.chat.store import ConversationStore
from assistant.config import Settings
from assistant.retrieval import build_index, open_searcher
from tests.retrieval.conftest import HashingEmbedder, make_data_dir

ICD = """<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.tabular>
  <version>2026</version>
  <chapter>
    <name>2</name>
    <desc>Neoplasms (C00-D49)</desc>
    <section id="C69-C72">
      <desc>Malignant neoplasms of eye, brain and other parts of central nervous system</desc>
      <diag>
        <name>C71</name>
        <desc>Malignant neoplasm of brain</desc>
        <diag><name>C71.9</name><desc>Malignant neoplasm of brain, unspecified</desc></diag>
      </diag>
    </section>
    <section id="D10-D36">
      <desc>Benign neoplasms</desc>
      <diag>
        <name>D33</name>
        <desc>Benign neoplasm of brain and other parts of central nervous system</desc>
        <diag><name>D33.2</name><desc>Benign neoplasm of brain, unspecified</desc></diag>
      </diag>
      <diag>
        <name>D3A</name>
        <desc>Benign neuroendocrine tumors</desc>
      </diag>
    </section>
  </chapter>
</ICD10CM.tabular>
"""


def test_a_code_for_a_tumour_is_looked_up_as_a_neoplasm(tmp_path: Path,
                                                        hpo_obo: Path) -> None:
    """"What is the ICD-10 code for brain tumour?" found no code (the entries say
    "neoplasm of brain"), and "ICD code for a benign brain tumour?" quoted "Benign
    neuroendocrine tumors": "ICD code" had left "code" among the subject's terms."""
    icd = tmp_path / "tabular.xml"
    icd.write_text(ICD, encoding="utf-8")
    data = make_data_dir(tmp_path / "data", {"icd10cm": {"icd10cm/tabular.xml": icd},
                                             "hpo": {"hpo/hp.obo": hpo_obo}})
    settings = Settings(data_dir=data, index_dir=tmp_path / "indexes")
    embedder = HashingEmbedder()
    build_index(settings, sources=["icd10cm", "hpo"], progress=False, embedder=embedder)
    searcher = open_searcher(settings, rebuild=False, embedder=embedder)
    engine = ChatEngine(ConversationStore(tmp_path / "chat.sqlite3"), None, searcher)
    brain = ("ICD10CM:C71", "ICD10CM:D33")  # the brain's neoplasms, malignant and benign
    for question, codes in (("What is the ICD-10 code for brain tumour?", brain),
                            ("ICD code for a benign brain tumour?", brain[1:])):
        answer = engine.answer([Turn("user", question)])
        assert answer.composed.body.startswith('Read as "'), answer.text
        assert "neoplasm" in answer.composed.body.splitlines()[0]
        cited = [c.doc_id for c in answer.citations]
        assert cited and all(c.startswith(codes) for c in cited), (question, cited)
    # a code question that finds its code as asked is not asked again
    asked = engine.answer([Turn("user", "What is the ICD-10 code for neuroendocrine tumors?")])
    assert [c.doc_id for c in asked.citations][:1] == ["ICD10CM:D3A"]
    assert not asked.composed.body.startswith("Read as")

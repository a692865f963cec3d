"""The corpus readers on tiny files the tests write, then on the fetched data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.data import DataError
from assistant.retrieval.corpus import (
    Document,
    MeshHeading,
    MeshQualifier,
    iter_corpus,
    iter_hpo,
    iter_icd10cm,
    iter_medline,
    major_topic_counts,
)
from assistant.retrieval.passages import split_passages
from tests.retrieval.conftest import make_data_dir

# -- MEDLINE -------------------------------------------------------------------------------


def test_medline_structured_abstract_authors_mesh_and_medline_date(medline_gz: Path) -> None:
    doc = next(iter_medline(medline_gz))
    assert doc == Document(
        id="PMID:100", source="medline", title="Seizures in SCN1A mutation carriers.",
        text="BACKGROUND: Dravet syndrome is rare.\n"
             "RESULTS: Rates were 3.5 per 10,000. Smith et al. agreed.",
        year=1998, journal="Epilepsia",
        authors=("Smith JA", "Doe J Jr", "Epilepsy Study Group"),  # ValidYN="N" left out
        mesh=(
            MeshHeading("Epilepsy", "D004827", major=True, descriptor_major=False,
                        qualifiers=(MeshQualifier("genetics", "Q000235", True),
                                    MeshQualifier("physiopathology", "Q000503", False))),
            MeshHeading("Humans", "D006801", major=False, descriptor_major=False),
            MeshHeading("Seizures", "D012640", major=True, descriptor_major=True),
        ),
        has_abstract=True)
    assert doc.citation() == (
        "Smith JA et al. Seizures in SCN1A mutation carriers. Epilepsia. 1998. PMID:100")
    assert doc.url == "https://pubmed.ncbi.nlm.nih.gov/100/"
    assert doc.key == "100"


def test_medline_one_author_no_abstract_article_date_and_abbreviated_journal(
        medline_gz: Path) -> None:
    doc = list(iter_medline(medline_gz))[1]
    assert doc == Document(id="PMID:200", source="medline", title="Is it epilepsy?", text="",
                           year=2020, journal="J Neurol", authors=("Lee K",))
    assert not doc.has_abstract
    assert doc.citation() == "Lee K. Is it epilepsy? J Neurol. 2020. PMID:200"


def test_medline_vernacular_title_no_author_and_latest_version_only(medline_gz: Path) -> None:
    docs = {d.id: d for d in iter_medline(medline_gz)}
    assert list(docs) == ["PMID:100", "PMID:200", "PMID:400", "PMID:300"]  # 999 was deleted
    assert docs["PMID:400"].title == "Anfallsleiden."
    assert docs["PMID:400"].citation() == "Roe R. Anfallsleiden. Lancet. 2001. PMID:400"
    latest = docs["PMID:300"]
    assert (latest.text, latest.year, latest.authors) == ("Second version.", 2019, ())
    assert latest.citation() == "Registered report. Wellcome open research. 2019. PMID:300"


def test_citation_without_year_or_journal() -> None:
    doc = Document(id="PMID:7", source="medline", title="A title", text="")
    assert doc.citation() == "A title. PMID:7"


def test_major_topic_counts(medline_gz: Path) -> None:
    docs = list(iter_medline(medline_gz))
    twice = [*docs, docs[0]]
    assert major_topic_counts(twice) == {"D004827": ("Epilepsy", 2), "D012640": ("Seizures", 2)}


# -- HPO and ICD-10-CM ---------------------------------------------------------------------


def test_hpo_terms_definitions_synonyms_and_obsolete_terms(hpo_obo: Path) -> None:
    docs = list(iter_hpo(hpo_obo))
    assert [d.id for d in docs] == ["HP:0000001", "HP:0001250", "HP:0002069"]  # 0000057 obsolete
    seizure = docs[1]
    assert seizure == Document(
        id="HP:0001250", source="hpo", title="Seizure",
        text='A "fit": an intermittent abnormality of nervous system physiology. See EEG.\n'
             "Synonyms: Epilepsy; Seizures",  # the obsolete_synonym "Fits" left out
        has_abstract=True)
    assert seizure.citation() == "HPO HP:0001250 Seizure"
    assert seizure.url == "https://hpo.jax.org/browse/term/HP:0001250"
    assert (docs[0].text, docs[0].has_abstract) == ("All", False)
    assert docs[2].text == "Bilateral tonic-clonic seizure\nSynonyms: Grand mal seizure"


def test_icd10cm_nested_codes_parents_first_with_their_own_notes(icd_xml: Path) -> None:
    docs = {d.key: d for d in iter_icd10cm(icd_xml)}
    assert list(docs) == ["A00", "A00.0", "A00.1", "A00.10", "A01"]
    assert docs["A00"] == Document(
        id="ICD10CM:A00", source="icd10cm", title="Cholera",
        text="Cholera\nExcludes1: cholera carrier (Z22.1); typhoid (A01.0-)\n"
             "Excludes2: food poisoning (A05.-)")
    assert docs["A00.0"].text == ("Cholera due to Vibrio cholerae 01, biovar cholerae\n"
                                  "Inclusion terms: Classical cholera")
    assert docs["A00.1"].text == "Cholera, other"  # the parent's excludes are not repeated
    assert docs["A00.10"].text == "Cholera, other, unspecified\nCode first: underlying disease"
    assert docs["A01"].text == (
        "Typhoid fever\nIncludes: infection due to Salmonella typhi\nNotes: A note.\n"
        "Use additional code: code for resistance (Z16.-)\nCode also: any associated sepsis")
    assert docs["A00.10"].citation() == "ICD-10-CM A00.10 Cholera, other, unspecified"
    assert docs["A00.10"].url == "https://www.icd10data.com/search?s=A00.10"


# -- all sources through the manifest ------------------------------------------------------


def test_iter_corpus_reads_verified_files_of_every_source(
        tmp_path: Path, medline_gz: Path, hpo_obo: Path, icd_xml: Path) -> None:
    data_dir = make_data_dir(tmp_path / "data", {
        "medline": {"medline/a.xml.gz": medline_gz, "medline/b.xml.gz": medline_gz},
        "hpo": {"hpo/hp.obo": hpo_obo},
        "icd10cm": {"icd10cm/tabular.xml": icd_xml},
    })
    ids = [d.id for d in iter_corpus(data_dir)]
    # The second MEDLINE file repeats the first: its PMIDs are not yielded twice.
    assert ids == ["PMID:100", "PMID:200", "PMID:400", "PMID:300",
                   "HP:0000001", "HP:0001250", "HP:0002069",
                   "ICD10CM:A00", "ICD10CM:A00.0", "ICD10CM:A00.1", "ICD10CM:A00.10",
                   "ICD10CM:A01"]
    assert [d.source for d in iter_corpus(data_dir, ("hpo",))] == ["hpo"] * 3


def test_iter_corpus_refuses_missing_or_changed_files(tmp_path: Path, hpo_obo: Path) -> None:
    data_dir = make_data_dir(tmp_path / "data", {"hpo": {"hpo/hp.obo": hpo_obo}})
    with pytest.raises(DataError, match="medline"):
        next(iter_corpus(data_dir))
    (data_dir / "hpo/hp.obo").write_text("[Term]\nid: HP:1\n")
    with pytest.raises(DataError, match="sha256 mismatch"):
        next(iter_corpus(data_dir, ("hpo",)))


# -- the fetched data folder ----------------------------------------------------------------
# Counts measured on the files themselves. Where DATA.md differs, it counts raw records:
# 50,788 PubmedArticle records of which 5 are superseded versions of 3 versioned PMIDs;
# 19,484 [Term] stanzas of which 450 are obsolete, and 16,454 def: lines of which 5 are in
# obsolete terms. 33,278 records carry an <Abstract> (one empty, 5 superseded), against
# DATA.md's 32,852, a figure no definition tried on these files reproduces.


@pytest.mark.data
@pytest.mark.slow
def test_real_corpus_counts(real_corpus: list[Document]) -> None:
    by_source: dict[str, list[Document]] = {"medline": [], "hpo": [], "icd10cm": []}
    for doc in real_corpus:
        by_source[doc.source].append(doc)
    medline, hpo, icd = by_source["medline"], by_source["hpo"], by_source["icd10cm"]
    assert (len(medline), sum(d.has_abstract for d in medline)) == (50_783, 33_272)
    assert (len(hpo), sum(d.has_abstract for d in hpo)) == (19_034, 16_449)
    assert len(icd) == 46_881
    assert len({d.id for d in real_corpus}) == len(real_corpus)
    assert all(d.year is not None and d.journal for d in medline)
    topics = major_topic_counts(medline)
    assert sum(count >= 5 for _, count in topics.values()) == 4_043


@pytest.mark.data
@pytest.mark.slow
def test_real_corpus_known_records(real_corpus: list[Document]) -> None:
    docs = {d.id: d for d in real_corpus}
    curr_biol = docs["PMID:10704411"]  # pubmed21n1298
    assert curr_biol.citation() == (
        "Bainton RJ et al. Dopamine modulates acute responses to cocaine, nicotine and ethanol "
        "in Drosophila. Current biology : CB. 2000. PMID:10704411")
    assert len(curr_biol.authors) == 6
    assert curr_biol.text.startswith("BACKGROUND: Drugs of abuse have a common property")
    cocaine = next(m for m in curr_biol.mesh if m.ui == "D003042")
    assert (cocaine.major, cocaine.descriptor_major) == (True, False)  # major via "metabolism"
    old = docs["PMID:399296"]  # pubmed20n0014
    assert (old.year, old.journal) == (1979, "Journal of the South African Veterinary Association")
    assert old.title.startswith("Monitoring of bacteriological contamination")
    assert docs["PMID:30271887"].year == 2018  # four versions in the file, one document
    assert docs["HP:0001250"].citation() == "HPO HP:0001250 Seizure"
    assert docs["ICD10CM:G40.909"].citation() == (
        "ICD-10-CM G40.909 Epilepsy, unspecified, not intractable, without status epilepticus")


@pytest.mark.data
@pytest.mark.slow
def test_real_corpus_passages(real_corpus: list[Document]) -> None:
    passages = [p for doc in real_corpus for p in split_passages(doc)]
    assert len(passages) == 139_108
    assert max(len(p.text.split()) for p in passages) == 160
    assert len({p.id for p in passages}) == len(passages)

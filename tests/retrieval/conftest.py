"""Tiny MEDLINE, HPO and ICD-10-CM files written by the tests, and the real corpus parsed once."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from assistant.config import Settings
from assistant.data.manifest import Manifest, SourceRecord, sha256_file
from assistant.retrieval.corpus import Document, iter_corpus
from assistant.retrieval.lexical import tokenize_terms

MEDLINE_XML = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2019//EN" "x.dtd">
<PubmedArticleSet>
  <PubmedArticle>
    <MedlineCitation Status="MEDLINE" Owner="NLM">
      <PMID Version="1">100</PMID>
      <Article PubModel="Print">
        <Journal>
          <JournalIssue CitedMedium="Print">
            <PubDate><MedlineDate>1998 Dec-1999 Jan</MedlineDate></PubDate>
          </JournalIssue>
          <Title>Epilepsia</Title>
          <ISOAbbreviation>Epilepsia</ISOAbbreviation>
        </Journal>
        <ArticleTitle>Seizures in <i>SCN1A</i>
            mutation carriers.</ArticleTitle>
        <Abstract>
          <AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">Dravet  syndrome is
            rare.</AbstractText>
          <AbstractText Label="RESULTS" NlmCategory="RESULTS">Rates were 3.5 per
            <b>10,000</b>. Smith et al. agreed.</AbstractText>
          <CopyrightInformation>(c) 1999 Wiley.</CopyrightInformation>
        </Abstract>
        <AuthorList CompleteYN="Y">
          <Author ValidYN="Y">
            <LastName>Smith</LastName><ForeName>John A</ForeName><Initials>JA</Initials>
          </Author>
          <Author ValidYN="N"><LastName>Wrong</LastName><Initials>W</Initials></Author>
          <Author ValidYN="Y">
            <LastName>Doe</LastName><ForeName>Jane</ForeName><Initials>J</Initials>
            <Suffix>Jr</Suffix>
          </Author>
          <Author ValidYN="Y"><CollectiveName>Epilepsy Study Group</CollectiveName></Author>
        </AuthorList>
      </Article>
      <MeshHeadingList>
        <MeshHeading>
          <DescriptorName UI="D004827" MajorTopicYN="N">Epilepsy</DescriptorName>
          <QualifierName UI="Q000235" MajorTopicYN="Y">genetics</QualifierName>
          <QualifierName UI="Q000503" MajorTopicYN="N">physiopathology</QualifierName>
        </MeshHeading>
        <MeshHeading>
          <DescriptorName UI="D006801" MajorTopicYN="N">Humans</DescriptorName>
        </MeshHeading>
        <MeshHeading>
          <DescriptorName UI="D012640" MajorTopicYN="Y">Seizures</DescriptorName>
        </MeshHeading>
      </MeshHeadingList>
    </MedlineCitation>
  </PubmedArticle>
  <PubmedArticle>
    <MedlineCitation Status="Publisher" Owner="NLM">
      <PMID Version="1">200</PMID>
      <Article PubModel="Electronic">
        <Journal>
          <JournalIssue CitedMedium="Internet">
            <PubDate><Season>Spring</Season></PubDate>
          </JournalIssue>
          <ISOAbbreviation>J Neurol</ISOAbbreviation>
        </Journal>
        <ArticleTitle>Is it epilepsy?</ArticleTitle>
        <AuthorList CompleteYN="Y">
          <Author ValidYN="Y"><LastName>Lee</LastName><Initials>K</Initials></Author>
        </AuthorList>
        <ArticleDate DateType="Electronic"><Year>2020</Year><Month>05</Month></ArticleDate>
      </Article>
    </MedlineCitation>
  </PubmedArticle>
  <PubmedArticle>
    <MedlineCitation Status="PubMed-not-MEDLINE" Owner="NLM">
      <PMID Version="1">300</PMID>
      <Article PubModel="Electronic">
        <Journal>
          <JournalIssue CitedMedium="Internet"><PubDate><Year>2018</Year></PubDate></JournalIssue>
          <Title>Wellcome open research</Title>
        </Journal>
        <ArticleTitle>Registered report</ArticleTitle>
        <Abstract><AbstractText>First version.</AbstractText></Abstract>
      </Article>
    </MedlineCitation>
  </PubmedArticle>
  <PubmedArticle>
    <MedlineCitation Status="PubMed-not-MEDLINE" Owner="NLM">
      <PMID Version="1">400</PMID>
      <Article PubModel="Print">
        <Journal>
          <JournalIssue CitedMedium="Print"><PubDate><Year>2001</Year></PubDate></JournalIssue>
          <Title>Lancet</Title>
        </Journal>
        <ArticleTitle/>
        <VernacularTitle>Anfallsleiden.</VernacularTitle>
        <AuthorList CompleteYN="Y">
          <Author ValidYN="Y"><LastName>Roe</LastName><Initials>R</Initials></Author>
        </AuthorList>
      </Article>
      <CommentsCorrectionsList>
        <CommentsCorrections RefType="UpdateOf"><RefSource>x</RefSource>
          <PMID Version="2">300</PMID></CommentsCorrections>
      </CommentsCorrectionsList>
    </MedlineCitation>
  </PubmedArticle>
  <PubmedArticle>
    <MedlineCitation Status="PubMed-not-MEDLINE" VersionID="2" Owner="NLM">
      <PMID Version="2">300</PMID>
      <Article PubModel="Electronic">
        <Journal>
          <JournalIssue CitedMedium="Internet"><PubDate><Year>2019</Year></PubDate></JournalIssue>
          <Title>Wellcome open research</Title>
        </Journal>
        <ArticleTitle>Registered report</ArticleTitle>
        <Abstract><AbstractText>Second version.</AbstractText></Abstract>
      </Article>
    </MedlineCitation>
  </PubmedArticle>
  <DeleteCitation>
    <PMID Version="1">999</PMID>
  </DeleteCitation>
</PubmedArticleSet>
"""

HPO_OBO = """format-version: 1.2
synonymtypedef: obsolete_synonym "discarded/obsoleted synonym"
ontology: hp.obo

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000057
name: obsolete Clitoromegaly
def: "An old definition." []
is_obsolete: true
replaced_by: HP:0008665

[Term]
id: HP:0001250
name: Seizure
def: "A \\"fit\\": an intermittent abnormality of nervous system physiology.\\nSee EEG." [https://orcid.org/0000]
synonym: "Epilepsy" EXACT []
synonym: "Seizures" EXACT plural_form []
synonym: "Fits" RELATED obsolete_synonym []
xref: UMLS:C0036572

[Typedef]
id: part_of
name: part of

[Term]
id: HP:0002069
name: Bilateral tonic-clonic seizure
synonym: "Grand mal seizure" EXACT layperson []"""

ICD_XML = """<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.tabular>
  <version>2026</version>
  <chapter>
    <name>1</name>
    <desc>Certain infectious and parasitic diseases (A00-B99)</desc>
    <excludes1><note>certain localized infections</note></excludes1>
    <section id="A00-A09">
      <desc>Intestinal infectious diseases (A00-A09)</desc>
      <diag>
        <name>A00</name>
        <desc>Cholera</desc>
        <excludes1>
          <note>cholera carrier (Z22.1)</note>
          <note>typhoid (A01.0-)</note>
        </excludes1>
        <excludes2><note>food poisoning (A05.-)</note></excludes2>
        <diag>
          <name>A00.0</name>
          <desc>Cholera due to Vibrio cholerae 01, biovar cholerae</desc>
          <inclusionTerm><note>Classical cholera</note></inclusionTerm>
        </diag>
        <diag>
          <name>A00.1</name>
          <desc>Cholera, other</desc>
          <diag>
            <name>A00.10</name>
            <desc>Cholera, other, unspecified</desc>
            <codeFirst><note>underlying disease</note></codeFirst>
          </diag>
        </diag>
      </diag>
      <diag>
        <name>A01</name>
        <desc>Typhoid fever</desc>
        <includes><note>infection due to Salmonella typhi</note></includes>
        <notes><note>A note.</note></notes>
        <useAdditionalCode><note>code for resistance (Z16.-)</note></useAdditionalCode>
        <codeAlso><note>any associated sepsis</note></codeAlso>
        <sevenChrNote><note>The appropriate 7th character is to be added</note></sevenChrNote>
        <sevenChrDef><extension char="A">initial encounter</extension></sevenChrDef>
      </diag>
    </section>
  </chapter>
</ICD10CM.tabular>
"""


@pytest.fixture
def medline_gz(tmp_path: Path) -> Path:
    path = tmp_path / "pubmed_test.xml.gz"
    path.write_bytes(gzip.compress(MEDLINE_XML.encode()))
    return path


@pytest.fixture
def hpo_obo(tmp_path: Path) -> Path:
    path = tmp_path / "hp.obo"
    path.write_text(HPO_OBO, encoding="utf-8")
    return path


@pytest.fixture
def icd_xml(tmp_path: Path) -> Path:
    path = tmp_path / "icd10cm.xml"
    path.write_text(ICD_XML, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def real_corpus() -> list[Document]:
    """Every document of the fetched data folder, parsed once per test session (~20 s)."""
    return list(iter_corpus(Settings().data_dir))


# -- index and search fixtures: a tiny data folder and a deterministic stand-in embedder ----


class HashingEmbedder:
    """Stand-in for MiniLM in fast tests: signed hashed bag of stemmed terms, unit length.
    Texts that share terms get similar vectors; no model, no torch."""

    name = "test/hashing-embedder"
    dim = 64

    def __init__(self, fingerprint: str = "f" * 64) -> None:
        self.fingerprint = fingerprint
        self.calls = 0

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for term in tokenize_terms(text):
                code = int.from_bytes(hashlib.sha256(term.encode()).digest()[:8], "little")
                out[row, code % self.dim] += 1.0 if (code >> 32) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def make_data_dir(root: Path, files: dict[str, dict[str, Path]]) -> Path:
    """A data folder holding ``files`` (source -> relative path -> file) and their manifest."""
    manifest = Manifest()
    for source, named in files.items():
        record = SourceRecord(package="test", version="1", wheel_sha256="0", licence="test")
        for rel, original in named.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(original, target)
            record.files[rel] = sha256_file(target)
        manifest.sources[source] = record
    manifest.save(root)
    return root


@pytest.fixture
def tiny_settings(tmp_path: Path, medline_gz: Path, hpo_obo: Path, icd_xml: Path) -> Settings:
    """Settings over a data folder of the three tiny test files and an empty index folder."""
    data_dir = make_data_dir(tmp_path / "data", {
        "medline": {"medline/a.xml.gz": medline_gz},
        "hpo": {"hpo/hp.obo": hpo_obo},
        "icd10cm": {"icd10cm/tabular.xml": icd_xml},
    })
    return Settings(data_dir=data_dir, index_dir=tmp_path / "indexes")


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder()

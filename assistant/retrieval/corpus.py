"""The retrieval corpus: MEDLINE citations, HPO terms and ICD-10-CM codes as ``Document``s.

Each reader streams its file (``iterparse`` with finished records cleared, or line by line),
so memory holds about one record at a time (plus an empty element per finished record).
Every document carries what a clinician needs to follow it up: ``Document.citation()`` and
``Document.url``.

MEDLINE specifics kept precisely, because relevance benchmarks use them as judgments: every
MeSH heading with its descriptor UI, the descriptor's own major-topic flag, and each
qualifier with its UI and flag. A PMID that occurs several times in one file (PubMed
"versioned citations", e.g. Wellcome Open Research articles) yields one document: the
highest ``<PMID Version>``. ``<DeleteCitation>`` lists yield nothing; they are not applied
to citations of other files (none of the 20 in the fetched files names a citation in them).
"""

from __future__ import annotations

import gzip
import logging
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, cast

from assistant.data.manifest import require

log = logging.getLogger(__name__)

Source = Literal["medline", "hpo", "icd10cm"]
SOURCES: tuple[Source, ...] = ("medline", "hpo", "icd10cm")

_YEAR = re.compile(r"\b(\d{4})\b")
_VERSIONED_PMID = re.compile(rb'<PMID Version="(?!1")\d+">(\d+)</PMID>')


@dataclass(frozen=True)
class MeshQualifier:
    name: str  # e.g. "metabolism"
    ui: str  # e.g. "Q000378"
    major: bool  # MajorTopicYN="Y"


@dataclass(frozen=True)
class MeshHeading:
    """One NLM MeSH heading of a citation."""

    descriptor: str  # e.g. "Epilepsy"
    ui: str  # descriptor UI, e.g. "D004827"
    major: bool  # major topic: the descriptor or any of its qualifiers has MajorTopicYN="Y"
    qualifiers: tuple[MeshQualifier, ...] = ()
    descriptor_major: bool | None = None  # the descriptor's own flag; None where not recorded


@dataclass(frozen=True)
class Document:
    """One retrievable unit with enough metadata to cite it.

    ``has_abstract`` is True when the text holds the source's own description beyond the
    title: a MEDLINE abstract or an HPO definition (ICD-10-CM codes: False).
    """

    id: str  # "PMID:33212345", "HP:0001250", "ICD10CM:G40.909"
    source: Source
    title: str
    text: str
    year: int | None = None
    journal: str | None = None
    authors: tuple[str, ...] = ()  # "Surname Initials", or a collective name
    mesh: tuple[MeshHeading, ...] = ()
    has_abstract: bool = False

    @property
    def key(self) -> str:
        """The id without its source prefix: the PMID, the HP id, or the ICD-10-CM code."""
        return self.id.removeprefix("PMID:").removeprefix("ICD10CM:")

    @property
    def url(self) -> str:
        if self.source == "medline":
            return f"https://pubmed.ncbi.nlm.nih.gov/{self.key}/"
        if self.source == "hpo":
            return f"https://hpo.jax.org/browse/term/{self.key}"
        return f"https://www.icd10data.com/search?s={self.key}"

    def citation(self) -> str:
        """``Smith J et al. Title. Journal. 2020. PMID:123`` (one author: no "et al"; parts
        that are missing left out), ``HPO HP:0001250 Seizure``, ``ICD-10-CM G40.909 Desc``."""
        if self.source == "hpo":
            return f"HPO {self.key} {self.title}"
        if self.source == "icd10cm":
            return f"ICD-10-CM {self.key} {self.title}"
        parts: list[str] = []
        if self.authors:
            parts.append(self.authors[0] + (" et al" if len(self.authors) > 1 else ""))
        parts.append(self.title)
        if self.journal:
            parts.append(self.journal)
        if self.year is not None:
            parts.append(str(self.year))
        return " ".join(_end_sentence(p) for p in parts if p) + f" {self.id}"


def _end_sentence(part: str) -> str:
    return part if part.endswith((".", "?", "!")) else part + "."


def _norm(text: str | None) -> str:
    return " ".join(text.split()) if text else ""


def _text(elem: ET.Element | None) -> str:
    """All text under ``elem`` (inline markup such as <i>, <sup> and MathML included)."""
    return "" if elem is None else _norm("".join(elem.itertext()))


# -- MEDLINE -------------------------------------------------------------------------------


def _open(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return cast(BinaryIO, gzip.open(path, "rb"))
    return path.open("rb")


def _versioned_pmids(path: Path) -> set[str]:
    """PMIDs that occur with a ``Version`` other than 1 anywhere in the file (a superset of
    the versioned citations: references to versions count too). One fast byte scan."""
    found: set[str] = set()
    tail = b""
    with _open(path) as handle:
        while chunk := handle.read(1 << 24):
            block = tail + chunk
            found.update(m.group(1).decode() for m in _VERSIONED_PMID.finditer(block))
            tail = block[-64:]
    return found


def _year(article: ET.Element) -> int | None:
    pub_date = article.find("Journal/JournalIssue/PubDate")
    if pub_date is not None:
        if (year := pub_date.findtext("Year")) and year.strip().isdigit():
            return int(year)
        if match := _YEAR.search(pub_date.findtext("MedlineDate") or ""):
            return int(match.group(1))
    year = article.findtext("ArticleDate/Year")
    return int(year) if year and year.strip().isdigit() else None


def _authors(article: ET.Element) -> tuple[str, ...]:
    names = []
    for author in article.iterfind("AuthorList/Author"):
        if author.get("ValidYN", "Y") != "Y":
            continue
        if collective := _text(author.find("CollectiveName")):
            names.append(collective)
            continue
        parts = [_norm(author.findtext(tag)) for tag in ("LastName", "Initials", "Suffix")]
        if name := " ".join(p for p in parts if p):
            names.append(name)
    return tuple(names)


def _mesh(citation: ET.Element) -> tuple[MeshHeading, ...]:
    headings: list[MeshHeading] = []
    heading_list = citation.find("MeshHeadingList")
    for heading in () if heading_list is None else heading_list:
        # Direct child loops (not ElementPath): this runs ~300,000 times per corpus.
        # MeSH names are plain text, with no inline markup.
        descriptor = None
        qualifiers = []
        for child in heading:
            flag = child.get("MajorTopicYN") == "Y"
            if child.tag == "DescriptorName":
                descriptor = (_norm(child.text), child.get("UI", ""), flag)
            elif child.tag == "QualifierName":
                qualifiers.append(MeshQualifier(_norm(child.text), child.get("UI", ""), flag))
        if descriptor is not None:
            name, ui, own = descriptor
            headings.append(MeshHeading(
                descriptor=name, ui=ui, major=own or any(q.major for q in qualifiers),
                qualifiers=tuple(qualifiers), descriptor_major=own))
    return tuple(headings)


def _abstract(article: ET.Element) -> str:
    """AbstractText parts, one per line, each prefixed with its Label ("BACKGROUND: ...")."""
    parts = []
    for part in article.iterfind("Abstract/AbstractText"):
        text = _text(part)
        if text:
            label = _norm(part.get("Label"))
            parts.append(f"{label}: {text}" if label else text)
    return "\n".join(parts)


def parse_pubmed_article(elem: ET.Element) -> tuple[Document, int]:
    """One ``<PubmedArticle>`` -> (document, PMID version)."""
    citation = elem.find("MedlineCitation")
    article = None if citation is None else citation.find("Article")
    pmid = None if citation is None else citation.find("PMID")
    if citation is None or article is None or pmid is None or not _norm(pmid.text):
        raise ValueError("a PubmedArticle without MedlineCitation/PMID or Article")
    title = _text(article.find("ArticleTitle")) or _text(article.find("VernacularTitle"))
    journal = (_text(article.find("Journal/Title"))
               or _text(article.find("Journal/ISOAbbreviation"))
               or _text(citation.find("MedlineJournalInfo/MedlineTA")) or None)
    abstract = _abstract(article)
    version = pmid.get("Version", "1")
    document = Document(
        id=f"PMID:{_norm(pmid.text)}", source="medline", title=title, text=abstract,
        year=_year(article), journal=journal, authors=_authors(article), mesh=_mesh(citation),
        has_abstract=bool(abstract))
    return document, int(version) if version.isdigit() else 1


def iter_medline(path: Path) -> Iterator[Document]:
    """Citations of one MEDLINE/PubMed XML file (``.xml`` or ``.xml.gz``), in file order.

    ``<DeleteCitation>`` PMIDs are not citations and yield nothing. Versioned citations are
    held back to the end of the file and yield their highest version only.
    """
    versioned = _versioned_pmids(path)
    held: dict[str, tuple[int, Document]] = {}
    superseded = 0
    with _open(path) as handle:
        for _, elem in ET.iterparse(handle, events=("end",)):
            if elem.tag == "PubmedArticle":
                document, version = parse_pubmed_article(elem)
                if document.key not in versioned:
                    yield document
                elif document.id in held:
                    superseded += 1
                    if version >= held[document.id][0]:
                        held[document.id] = (version, document)
                else:
                    held[document.id] = (version, document)
            # Finished records are emptied: the root keeps only an empty shell per record.
            if elem.tag in ("PubmedArticle", "DeleteCitation"):
                elem.clear()
    yield from (document for _, document in held.values())
    if superseded:
        log.info("%s: %d superseded citation versions skipped", path.name, superseded)


# -- HPO -----------------------------------------------------------------------------------


def _obo_quoted(value: str) -> str:
    """The leading quoted string of an OBO value, with ``\\"`` and ``\\n`` unescaped."""
    match = re.match(r'"((?:[^"\\]|\\.)*)"', value)
    if match is None:
        return ""
    return _norm(re.sub(r"\\(.)", lambda m: " " if m.group(1) == "n" else m.group(1),
                        match.group(1)))


def _hpo_document(stanza: dict[str, list[str]]) -> Document | None:
    """A ``[Term]`` stanza -> document; None for obsolete terms or a stanza without id."""
    if stanza.get("is_obsolete") == ["true"] or not stanza.get("id"):
        return None
    name = _norm(stanza.get("name", [""])[0])
    definition = _obo_quoted(stanza["def"][0]) if stanza.get("def") else ""
    synonyms = [_obo_quoted(s) for s in stanza.get("synonym", [])
                if "obsolete_synonym" not in s.split('"')[-1]]
    lines = [definition or name]
    if synonyms := [s for s in dict.fromkeys(synonyms) if s]:
        lines.append("Synonyms: " + "; ".join(synonyms))
    return Document(id=stanza["id"][0].strip(), source="hpo", title=name,
                    text="\n".join(lines), has_abstract=bool(definition))


def iter_hpo(path: Path) -> Iterator[Document]:
    """Non-obsolete ``[Term]`` stanzas of an OBO file: title = name, text = definition
    (or the name when there is none) and, on a second line, "Synonyms: a; b"
    (discarded ``obsolete_synonym``s left out)."""
    stanza: dict[str, list[str]] | None = None
    with path.open(encoding="utf-8") as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            if line.startswith("["):
                if stanza is not None and (document := _hpo_document(stanza)):
                    yield document
                stanza = {} if line.strip() == "[Term]" else None
            elif stanza is not None and ": " in line:
                tag, value = line.split(": ", 1)
                stanza.setdefault(tag, []).append(value)
    if stanza is not None and (document := _hpo_document(stanza)):
        yield document


# -- ICD-10-CM -----------------------------------------------------------------------------

# Notes a diag element carries, in the order they are written into its text.
ICD_NOTES: tuple[tuple[str, str], ...] = (
    ("inclusionTerm", "Inclusion terms"), ("includes", "Includes"), ("notes", "Notes"),
    ("excludes1", "Excludes1"), ("excludes2", "Excludes2"), ("codeFirst", "Code first"),
    ("useAdditionalCode", "Use additional code"), ("codeAlso", "Code also"),
)


def _icd_document(diag: ET.Element) -> Document | None:
    code, desc = _norm(diag.findtext("name")), _text(diag.find("desc"))
    if not code:
        return None
    lines = [desc]
    for tag, label in ICD_NOTES:
        notes = [_text(n) for section in diag.iterfind(tag) for n in section.iterfind("note")]
        if notes := [n for n in notes if n]:
            lines.append(f"{label}: " + "; ".join(notes))
    return Document(id=f"ICD10CM:{code}", source="icd10cm", title=desc, text="\n".join(lines))


def iter_icd10cm(path: Path) -> Iterator[Document]:
    """Every ``<diag>`` with a code in the tabular XML, nested ones included, parents first.

    Text = the description, then one line per note section the code itself carries
    ("Excludes1: a; b"); notes inherited from parent codes are not repeated.
    """
    pending: list[tuple[ET.Element, bool]] = []  # open diags, and whether each was yielded
    with path.open("rb") as handle:
        for event, elem in ET.iterparse(handle, events=("start", "end")):
            if elem.tag != "diag":
                continue
            if event == "start":
                # A diag's own name, desc and notes precede its nested diags: the parent is
                # complete once its first child starts, so parents are yielded first.
                if pending and not pending[-1][1]:
                    if document := _icd_document(pending[-1][0]):
                        yield document
                    pending[-1] = (pending[-1][0], True)
                pending.append((elem, False))
                continue
            _, done = pending.pop()
            if not done and (document := _icd_document(elem)):
                yield document
            elem.clear()


# -- all sources ---------------------------------------------------------------------------


def iter_corpus(data_dir: Path, sources: tuple[Source, ...] = SOURCES) -> Iterator[Document]:
    """Documents of every source, from files verified against the data manifest.

    Raises ``DataError`` (before yielding anything of that source) when a source's files are
    missing or changed. A document id seen before (one PMID in two MEDLINE files, taken in
    file name order) is skipped and counted in a warning.
    """
    seen: set[str] = set()
    duplicates = 0
    for source in sources:
        files = sorted(require(data_dir, source))
        if source == "medline":
            stream: Iterator[Document] = (
                d for f in files if f.name.endswith((".xml", ".xml.gz"))
                for d in iter_medline(f))
        elif source == "hpo":
            stream = (d for f in files if f.suffix == ".obo" for d in iter_hpo(f))
        else:
            stream = (d for f in files if f.suffix == ".xml" for d in iter_icd10cm(f))
        for document in stream:
            if document.id in seen:
                duplicates += 1
                continue
            seen.add(document.id)
            yield document
    if duplicates:
        log.warning("%d documents with an id seen before were skipped", duplicates)


def major_topic_counts(documents: Iterable[Document]) -> dict[str, tuple[str, int]]:
    """MeSH descriptor UI -> (descriptor name, number of citations indexed with it as a
    major topic). The citations of a descriptor are relevance judgments for queries on it."""
    names: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for document in documents:
        majors = {heading.ui: heading.descriptor for heading in document.mesh if heading.major}
        names.update(majors)
        counts.update(majors.keys())
    return {ui: (names[ui], count) for ui, count in counts.most_common()}

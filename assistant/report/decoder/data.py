"""The Indiana University chest X-ray reports (Open-i): records, conditioning and split.

Each report carries the MeSH finding codes NLM assigned to it (``major``: for example
``Cardiomegaly/mild`` or ``Opacity/lung/base/left``; ``normal`` when nothing was found),
an INDICATION, and the FINDINGS and IMPRESSION the radiologist wrote. The decoder is
conditioned on the codes (and the indication) and its target is FINDINGS + IMPRESSION:
the codes have the structure an image encoder's findings have.

The split is by report, 70/10/20 with a fixed seed; its manifest (report ids and split,
no text: the reports are CC BY-NC-ND) is committed as ``iu_split.csv`` beside this file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from assistant.data.manifest import DataError

SPLIT_MANIFEST = Path(__file__).with_name("iu_split.csv")
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
SPLIT_SEED = 20261125
NORMAL = "normal"
# Codes that say nothing about findings: dropped from the conditioning.
UNINFORMATIVE = frozenset({"No Indexing"})


@dataclass(frozen=True)
class Finding:
    """One conditioning finding: a term with its modifiers (location, severity) and the
    probability the producer gave it (1.0 for an indexer's code)."""

    term: str
    modifiers: tuple[str, ...] = ()
    probability: float = 1.0

    @classmethod
    def from_code(cls, code: str, probability: float = 1.0) -> Finding:
        """``"Opacity/lung/base/left"`` -> term ``Opacity``, modifiers (lung, base, left)."""
        parts = [p.strip() for p in code.split("/") if p.strip()]
        if not parts:
            raise ValueError(f"empty finding code {code!r}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability of {code!r} must be within [0, 1], got {probability}")
        return cls(parts[0], tuple(m.lower() for m in parts[1:]), probability)

    @property
    def code(self) -> str:
        return "/".join((self.term, *self.modifiers))


@dataclass(frozen=True)
class ReportRecord:
    uid: str  # "CXR3029"
    findings: tuple[Finding, ...]
    indication: str
    findings_text: str
    impression_text: str

    @property
    def target(self) -> str:
        """What the decoder learns to write: FINDINGS then IMPRESSION."""
        return " ".join(t for t in (self.findings_text, self.impression_text) if t)

    @property
    def is_normal(self) -> bool:
        return all(f.term.lower() == NORMAL for f in self.findings)


def _record(xml: bytes, name: str) -> ReportRecord | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DataError(f"IU X-ray report {name} is not valid XML: {exc}") from exc
    uid_el = root.find("uId")
    if uid_el is None or not uid_el.get("id"):
        raise DataError(f"IU X-ray report {name} has no uId")
    sections = {a.get("Label"): " ".join((a.text or "").split())
                for a in root.iter("AbstractText")}
    findings_text, impression = sections.get("FINDINGS", ""), sections.get("IMPRESSION", "")
    if not (findings_text or impression):
        return None
    codes = [" ".join((e.text or "").split()) for e in root.iter("major")]
    findings = tuple(Finding.from_code(c) for c in codes if c and c not in UNINFORMATIVE)
    return ReportRecord(str(uid_el.get("id")), findings, sections.get("INDICATION", ""),
                        findings_text, impression)


def read_reports(archive: Path) -> list[ReportRecord]:
    """Every report with FINDINGS or IMPRESSION, in id order."""
    if not archive.is_file():
        raise DataError(f"{archive} is missing: run `assistant data fetch --only iu_xray`")
    records: list[ReportRecord] = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            rec = _record(handle.read(), member.name)
            if rec is not None:
                records.append(rec)
    return sorted(records, key=lambda r: int(r.uid.removeprefix("CXR")))


def make_split(uids: Sequence[str], seed: int = SPLIT_SEED) -> dict[str, str]:
    """Report id -> train / val / test, 70/10/20, shuffled with ``seed``."""
    order = sorted(uids)
    random.Random(seed).shuffle(order)
    n_train = round(SPLIT_FRACTIONS[0] * len(order))
    n_val = round(SPLIT_FRACTIONS[1] * len(order))
    return {u: ("train" if i < n_train else "val" if i < n_train + n_val else "test")
            for i, u in enumerate(order)}


def write_split(split: dict[str, str], path: Path = SPLIT_MANIFEST) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["uid", "split"])
    for uid in sorted(split, key=lambda u: int(u.removeprefix("CXR"))):
        writer.writerow([uid, split[uid]])
    path.write_text(buffer.getvalue())


def read_split(path: Path = SPLIT_MANIFEST) -> dict[str, str]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    split = {r["uid"]: r["split"] for r in rows}
    bad = {s for s in split.values() if s not in SPLITS}
    if bad:
        raise DataError(f"{path}: unknown split names {sorted(bad)}")
    return split


def manifest_sha256(path: Path = SPLIT_MANIFEST) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split_records(records: Iterable[ReportRecord], split: dict[str, str],
                  ) -> dict[str, list[ReportRecord]]:
    """Records by split; a record missing from the manifest is an error (the data changed)."""
    out: dict[str, list[ReportRecord]] = {s: [] for s in SPLITS}
    missing = []
    for rec in records:
        if rec.uid not in split:
            missing.append(rec.uid)
            continue
        out[split[rec.uid]].append(rec)
    if missing:
        raise DataError(f"{len(missing)} reports are not in the split manifest "
                        f"(first {missing[:3]}): the data differs from what it was made for")
    return out

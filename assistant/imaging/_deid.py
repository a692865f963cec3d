"""De-identify a parsed DICOM data set before anything is read from it for metadata
(private; used by ``_dicom``).

Two steps, after the header checks and before any attribute is converted:

1. the StudyInstanceUID is taken from its raw bytes (never converted, so pydicom's value
   validation cannot echo it into a warning), for the caller to keep only as a keyed hash;
2. the data set is cut down to what reading the pixels needs: the image pixel and LUT
   module (group 0028), the pixel data (group 7FE0), and Modality, BodyPartExamined,
   SOPClassUID, SpecificCharacterSet and ImagerPixelSpacing; the file meta keeps only its
   transfer syntax and SOP class. What is left goes through dicognito's anonymizer (the
   DICOM basic application level confidentiality profile as dicognito implements it: names,
   ids, UIDs, dates, addresses replaced), which records itself in DeidentificationMethod
   (and sets PatientIdentityRemoved only where BurnedInAnnotation is NO: text burned into
   the pixels is not looked for).

Everything the reader returns or reports comes from the de-identified data set, so no
name, id, birth date, address, free text or private tag can reach a response, a log line
or a stored result through it, whatever the file holds.
"""

from __future__ import annotations

import logging

from dicognito.anonymizer import Anonymizer
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

logger = logging.getLogger(__name__)

_KEEP_GROUPS = frozenset({0x0028, 0x7FE0})
_KEEP_TAGS = frozenset(Tag(keyword) for keyword in (
    "SpecificCharacterSet", "SOPClassUID", "Modality", "BodyPartExamined",
    "ImagerPixelSpacing"))
_KEEP_FILE_META = frozenset(Tag(keyword) for keyword in (
    "FileMetaInformationGroupLength", "FileMetaInformationVersion",
    "MediaStorageSOPClassUID", "TransferSyntaxUID"))
_STUDY_UID = Tag("StudyInstanceUID")
_MAX_UID_CHARS = 64  # a UID is at most 64 characters (PS3.5 9.1)


def study_uid(ds: Dataset) -> str | None:
    """The StudyInstanceUID from its raw bytes, or None when absent or implausible."""
    try:
        raw = ds.get_item(_STUDY_UID)
    except (KeyError, ValueError, TypeError):
        return None
    value = getattr(raw, "value", None)
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace")
    elif isinstance(value, str):
        text = value
    else:
        return None
    text = text.strip(" \x00")
    return text if 0 < len(text) <= _MAX_UID_CHARS else None


def _keep(tag: BaseTag, allowed: frozenset[BaseTag]) -> bool:
    return tag.group in _KEEP_GROUPS or tag in allowed


def deidentify(ds: Dataset) -> str | None:
    """Cut ``ds`` down to its image attributes and anonymize the rest, in place (see the
    module's docstring); returns the StudyInstanceUID it held, for hashing."""
    uid = study_uid(ds)
    for tag in [t for t in ds.keys() if not _keep(t, _KEEP_TAGS)]:  # noqa: SIM118 (tags)
        del ds[tag]
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        for tag in [t for t in file_meta.keys() if t not in _KEEP_FILE_META]:  # noqa: SIM118
            del file_meta[tag]
    try:
        Anonymizer().anonymize(ds)
    except Exception:  # dicognito on a malformed element: what is left is technical already
        logger.debug("dicognito could not anonymize the remaining attributes", exc_info=True)
    return uid

"""Unpacking an uploaded zip: entries never used as paths, limits checked before and
while unpacking (zip bombs), what is left out, and archives refused with the reason."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from assistant.batch.archive import unpack_zip
from assistant.batch.errors import BatchInputError, BatchTooLargeError, NotAnArchiveError
from assistant.config import BatchConfig, Limits

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
CONFIG = BatchConfig(max_zip_members=10, max_zip_uncompressed_bytes=1_000_000, max_files=5)
LIMITS = Limits(max_upload_bytes=100_000)


def _zip(entries: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def _encrypted(data: bytes) -> io.BytesIO:
    """The archive with its entries flagged as encrypted (zipfile cannot write that)."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = out.find(signature)
        out[at + offset] |= 0x1
    return io.BytesIO(bytes(out))


def test_entries_unpacked_under_numbers_with_clean_names(tmp_path: Path) -> None:
    archive = _zip({"scans/b.png": PNG, "../../evil.png": PNG, "/abs/c.PNG": PNG,
                    "IM0001": b"\x00" * 128 + b"DICM" + b"\x00" * 8, "notes.txt": b"hi",
                    "__MACOSX/scans/._b.png": PNG, ".DS_Store": b"x", "empty/": b""})
    items, ignored = unpack_zip(archive, tmp_path / "job", CONFIG, LIMITS)
    assert [i.source for i in items] == ["IM0001", "abs/c.PNG", "evil.png", "scans/b.png"]
    assert ignored == 1  # notes.txt
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == [
        "000000", "000001", "000002", "000003"]
    assert all(i.path is not None and i.path.parent == tmp_path / "job" for i in items)
    assert not (tmp_path / "evil.png").exists()


def test_an_entry_too_large_for_an_image_fails_alone(tmp_path: Path) -> None:
    items, _ = unpack_zip(_zip({"big.png": PNG + b"\x00" * 200_000, "ok.png": PNG}),
                          tmp_path / "job", CONFIG, LIMITS)
    big, ok = items
    assert big.path is None and "file too large" in str(big.error)
    assert ok.path is not None and ok.error is None


@pytest.mark.parametrize(("entries", "words"), [
    ({f"{i}.png": PNG for i in range(11)}, "11 entries"),
    ({"bomb.png": b"\x00" * 2_000_000}, "unpacks to 2000000 bytes"),
    ({f"{i}.png": PNG for i in range(6)}, "6 studies"),
])
def test_limits(tmp_path: Path, entries: dict[str, bytes], words: str) -> None:
    with pytest.raises(BatchTooLargeError, match=words):
        unpack_zip(_zip(entries), tmp_path / "job", CONFIG, LIMITS)
    assert not (tmp_path / "job").exists()


def test_a_header_that_lies_about_its_size_cannot_inflate_more(tmp_path: Path) -> None:
    data = _zip({"bomb.png": PNG + b"\x00" * 2_000_000}).getvalue()
    # Rewrite the declared sizes (local header and central directory) to 50 bytes.
    real = (len(PNG) + 2_000_000).to_bytes(4, "little")
    forged = io.BytesIO(data.replace(real, (50).to_bytes(4, "little")))
    with pytest.raises((BatchInputError, BatchTooLargeError)):
        unpack_zip(forged, tmp_path / "job", CONFIG, Limits(max_upload_bytes=10_000_000))
    assert not (tmp_path / "job").exists()


def test_archives_refused(tmp_path: Path) -> None:
    with pytest.raises(NotAnArchiveError):
        unpack_zip(io.BytesIO(PNG), tmp_path / "a", CONFIG, LIMITS)
    with pytest.raises(BatchInputError, match="cannot be read"):
        unpack_zip(io.BytesIO(b"PK\x03\x04" + b"\x00" * 50), tmp_path / "b", CONFIG, LIMITS)
    with pytest.raises(BatchInputError, match="no PNG, JPEG or DICOM"):
        unpack_zip(_zip({"a.txt": b"x"}), tmp_path / "c", CONFIG, LIMITS)
    with pytest.raises(BatchInputError, match="encrypted"):
        unpack_zip(_encrypted(_zip({"a.png": PNG}).getvalue()), tmp_path / "d", CONFIG, LIMITS)
    truncated = io.BytesIO(_zip({"a.png": PNG * 100}).getvalue()[:-30])
    with pytest.raises(BatchInputError):
        unpack_zip(truncated, tmp_path / "e", CONFIG, LIMITS)
    assert not any(tmp_path.iterdir())

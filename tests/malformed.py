"""Malformed inputs, shared by the bad-input tests and the fuzzing scripts
(``scripts/fuzz_readers.py``, ``scripts/fuzz_service.py``).

- ``seeds``: real, valid files (PNG and JPEG variants made here; pydicom's DICOM test files,
  plain and compressed, from the data folder) to mutate;
- ``crafted``: named hostile inputs, each with the HTTP status an upload of it must get
  from ``/v1/images/inspect`` under the default limits: absurd dimensions in PNG, JPEG and
  DICOM headers (a DICOM Rows of 100,000 written with the wrong value representation; a
  JPEG 2000 or JPEG frame claiming more pixels than the DICOM around it),
  absurd frame counts, decompression bombs, a DICOM / executable polyglot, wrong value
  representations, truncations, 0 bytes, text;
- ``mutate``: a random structural mutation (bytes flipped, cut, inserted, duplicated,
  spliced from another seed) from a ``random.Random``, for the fuzzers.
"""

from __future__ import annotations

import copy
import io
import random
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset

DICOM_SEEDS = ("MR_small.dcm", "CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
               "MR_small_jpeg_ls_lossless.dcm", "emri_small.dcm", "US1_UNCR.dcm",
               "SC_rgb_jpeg_dcmtk.dcm", "mlut_18.dcm", "vlut_04.dcm", "RG1_J2KI.dcm")
MAX_SEED_BYTES = 400_000


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with(width: int, height: int, idat: bytes, depth: int = 8, colour: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def deflate_zeros(n_bytes: int) -> bytes:
    """zlib data inflating to ``n_bytes`` zeros (about 1,000:1), made a chunk at a time."""
    z = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    out = [z.compress(chunk) for _ in range(n_bytes >> 20)]
    out.append(z.compress(bytes(n_bytes & ((1 << 20) - 1))))
    return b"".join(out) + z.flush()


def _encode(ext: str, image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    assert ok
    return bytes(buffer.tobytes())


def raster_seeds() -> dict[str, bytes]:
    grey = ((np.add.outer(np.arange(24), np.arange(32)) * 5) % 256).astype(np.uint8)
    colour = cv2.merge([grey, 255 - grey, grey // 2])
    return {"grey.png": _encode(".png", grey), "colour.png": _encode(".png", colour),
            "grey16.png": _encode(".png", grey.astype(np.uint16) * 257),
            "rgba.png": _encode(".png", cv2.merge([grey, grey, grey, 255 - grey])),
            "grey.jpg": _encode(".jpg", grey), "colour.jpg": _encode(".jpg", colour)}


def seeds(data_dir: Path) -> dict[str, bytes]:
    """Valid files to mutate: made rasters and the DICOM test files that are present."""
    out = raster_seeds()
    for name in DICOM_SEEDS:
        path = data_dir / "dicom" / name
        if path.is_file() and path.stat().st_size <= MAX_SEED_BYTES:
            out[name] = path.read_bytes()
    return out


def _dicom(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    return buffer.getvalue()


def _explicit_element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR", b"OF", b"OD", b"OL"):
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def dicom_rows_as_ul(rows: int, columns: int) -> bytes:
    """A bare explicit-VR little-endian data set whose Rows and Columns are written as UL
    (the dictionary says US), so they can claim 100,000; 16 bytes of pixel data."""
    elements = [
        _explicit_element(0x0008, 0x0060, b"CS", b"MR"),
        _explicit_element(0x0028, 0x0002, b"US", struct.pack("<H", 1)),
        _explicit_element(0x0028, 0x0004, b"CS", b"MONOCHROME2 "),
        _explicit_element(0x0028, 0x0010, b"UL", struct.pack("<I", rows)),
        _explicit_element(0x0028, 0x0011, b"UL", struct.pack("<I", columns)),
        _explicit_element(0x0028, 0x0100, b"US", struct.pack("<H", 8)),
        _explicit_element(0x0028, 0x0101, b"US", struct.pack("<H", 8)),
        _explicit_element(0x0028, 0x0103, b"US", struct.pack("<H", 0)),
        _explicit_element(0x7FE0, 0x0010, b"OB", bytes(16)),
    ]
    return b"".join(elements)


def crafted(data_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Named hostile inputs and the status ``/v1/images/inspect`` must answer each with."""
    mr = (data_dir / "dicom" / "MR_small.dcm").read_bytes()
    cases: dict[str, tuple[bytes, int]] = {
        "empty": (b"", 422),
        "text-named-png": (b"just some text, not an image\n" * 4, 415),
        "png-claims-100000x100000": (png_with(100_000, 100_000, zlib.compress(b"\x00" * 64)),
                                     413),
        "png-deflate-bomb-8000x8000": (png_with(8000, 8000, deflate_zeros(8000 * 8001)), 413),
        "png-truncated-idat": (png_with(64, 64, deflate_zeros(65 * 64))[:-40], 422),
        "jpeg-claims-65535x65535": (
            b"\xff\xd8\xff\xc0" + struct.pack(">HBHHB", 17, 8, 65535, 65535, 3) + bytes(9)
            + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + bytes(32) + b"\xff\xd9", 413),
        "dicom-rows-100000-as-ul": (dicom_rows_as_ul(100_000, 100_000), 413),
        "dicom-polyglot-mz-preamble": (
            b"MZ\x90\x00\x03" + bytes(55) + b"This program cannot be run in DOS mode."
            + bytes(128 - 99) + mr[128:], 415),
        "dicom-truncated-half": (mr[: len(mr) // 2], 422),
        "dicom-header-only": (mr[:400], 422),
        "dicom-zero-preamble-only": (bytes(128) + b"DICM", 422),
    }
    j2k = data_dir / "dicom" / "MR_small_jp2klossless.dcm"
    if j2k.is_file():
        cases["dicom-j2k-claims-50000x50000"] = (
            with_codestream_size(j2k.read_bytes(), 50_000, 50_000), 413)
        cases["dicom-j2k-disagrees-with-rows"] = (
            with_codestream_size(j2k.read_bytes(), 4000, 4000), 422)
    jpeg = data_dir / "dicom" / "SC_rgb_jpeg_dcmtk.dcm"
    if jpeg.is_file():
        cases["dicom-jpeg-claims-65535x65535"] = (
            with_codestream_size(jpeg.read_bytes(), 65535, 65535), 413)
    ds = pydicom.dcmread(io.BytesIO(mr))
    changes: dict[str, tuple[dict[str, object], int]] = {
        "dicom-65535x65535": ({"Rows": 65535, "Columns": 65535}, 413),
        "dicom-1e9-frames": ({"NumberOfFrames": 1_000_000_000}, 413),
        "dicom-bits-allocated-0": ({"BitsAllocated": 0}, 422),
        "dicom-bits-stored-40": ({"BitsStored": 40}, 422),
        "dicom-photometric-bogus": ({"PhotometricInterpretation": "BOGUS"}, 422),
        "dicom-samples-per-pixel-7": ({"SamplesPerPixel": 7}, 422),
        "dicom-window-width-nan": ({"WindowWidth": "nan", "WindowCenter": "inf"}, 200),
        "dicom-rescale-slope-1e308": ({"RescaleSlope": "1e308", "RescaleIntercept": "-1e308"},
                                      200),
    }
    for name, (attributes, status) in changes.items():
        changed = copy.deepcopy(ds)
        with warnings.catch_warnings():  # pydicom warns of the values it is asked to hold
            warnings.simplefilter("ignore")
            for keyword, value in attributes.items():
                setattr(changed, keyword, value)
        cases[name] = (_dicom(changed), status)
    cases["dicom-pixel-data-as-sq"] = (_dicom_raw_vr(mr, b"OW", b"SQ"), 422)
    no_pixels = copy.deepcopy(ds)
    del no_pixels.PixelData
    cases["dicom-no-pixel-data"] = (_dicom(no_pixels), 422)
    return cases


def _dicom_raw_vr(data: bytes, old: bytes, new: bytes) -> bytes:
    """The pixel data element's VR rewritten in the bytes (pydicom would not write it)."""
    tag = b"\xe0\x7f\x10\x00"
    at = data.rfind(tag + old)
    assert at > 0
    return data[: at + 4] + new + data[at + 6:]


def with_codestream_size(data: bytes, width: int, height: int) -> bytes:
    """A compressed DICOM whose JPEG 2000 (SIZ) or JPEG (SOF) header claims another size
    than its Rows and Columns."""
    out = bytearray(data)
    at = out.find(b"\xff\x4f\xff\x51")
    if at >= 0:
        out[at + 8: at + 16] = struct.pack(">II", width, height)
        out[at + 24: at + 32] = struct.pack(">II", width, height)  # one tile
        return bytes(out)
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc3", b"\xff\xf7"):
        at = out.find(marker, out.find(b"\xff\xd8"))
        if at >= 0:
            out[at + 5: at + 9] = struct.pack(">HH", height, width)
            return bytes(out)
    raise ValueError("no JPEG 2000 or JPEG header in the data")


def deflated_bomb(source: bytes, inflated_mib: int) -> bytes:
    """``source`` (with file meta) as a deflated DICOM whose data set inflates to more than
    ``inflated_mib`` MiB (a private OB element of zeros)."""
    ds = pydicom.dcmread(io.BytesIO(source))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    small = io.BytesIO()
    ds.save_as(small, enforce_file_format=True)
    raw = small.getvalue()
    meta_end = 144 + int.from_bytes(raw[140:144], "little")
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [z.compress(zlib.decompress(raw[meta_end:], -zlib.MAX_WBITS)),
             z.compress(struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, inflated_mib << 20))]
    parts += [z.compress(bytes(1 << 20)) for _ in range(inflated_mib)]
    return raw[:meta_end] + b"".join(parts) + z.flush()


def mutate(rng: random.Random, data: bytes, others: list[bytes] | None = None) -> bytes:
    """1-8 random edits (byte set, bit flip, delete, insert, duplicate a run, splice a run
    from another seed, overwrite with an interesting integer), then maybe a cut."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not out:
            out.extend(rng.randbytes(rng.randint(1, 16)))
            continue
        at = rng.randrange(len(out))
        action = rng.randrange(7)
        if action == 0:
            out[at] = rng.randrange(256)
        elif action == 1:
            out[at] ^= 1 << rng.randrange(8)
        elif action == 2:
            del out[at: at + rng.randint(1, 64)]
        elif action == 3:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif action == 4:
            run = out[at: at + rng.randint(1, 256)]
            out[at:at] = run * rng.randint(1, 4)
        elif action == 5 and others:
            source = rng.choice(others)
            start = rng.randrange(max(1, len(source)))
            out[at:at] = source[start: start + rng.randint(1, 512)]
        else:
            value = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0xFFFFFFFF))
            out[at: at + 4] = struct.pack("<I", value)
    if rng.random() < 0.2:
        del out[rng.randrange(len(out) + 1):]
    return bytes(out)

"""Does the diagnosis change with how the same image is stored? Every Br35H test-fold image
is analysed as it was fetched, then again after re-encoding it several ways, through the
same pipeline the service calls, and each re-encoding's verdicts are compared with the
original's: scope decisions that changed, labels that changed, the largest probability
change, and the errors against the true label.

The re-encodings start from the image's grey levels (8 bits; some Br35H JPEGs carry colour
noise, which the model never sees): lossless ones (PNG 8-bit, PNG 16-bit, RGBA PNG, DICOM
12-bit MONOCHROME2, MONOCHROME1 stored inverted, signed 16-bit with a rescale, a rescale
slope and intercept), lossy ones (JPEG at quality 100, 95 and 85, progressive JPEG 95) and
resampled ones (2x bicubic, 0.75x area). Lossless encodings must give the same verdicts;
the lossy and resampled ones measure how far the model is from that.

    .venv/bin/python scripts/check_encodings.py [--limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from assistant.config import Settings
from assistant.imaging import read_image
from assistant.imaging.preprocess import to_grey
from assistant.pipeline import Pipeline
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest

Grey = npt.NDArray[np.uint8]
LOSSLESS = ("png8", "png16", "png-rgba", "dicom12", "dicom-mono1", "dicom-signed",
            "dicom-rescale")


def dicom(values: npt.NDArray[np.integer], photometric: str = "MONOCHROME2",
          bits: int = 12, signed: bool = False,
          rescale: tuple[float, float] | None = None) -> bytes:
    """A secondary-capture MR DICOM holding ``values`` as 16-bit samples."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = values.astype(np.int16 if signed else np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _encode(ext: str, image: npt.NDArray[Any], *params: int) -> bytes:
    ok, data = cv2.imencode(ext, image, list(params))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {ext}")
    return data.tobytes()


def _resized(grey: Grey, scale: float, interpolation: int) -> bytes:
    height, width = grey.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return _encode(".png", cv2.resize(grey, size, interpolation=interpolation))


ENCODINGS: dict[str, Callable[[Grey], bytes]] = {
    "png8": lambda g: _encode(".png", g),
    "png16": lambda g: _encode(".png", g.astype(np.uint16) * 257),
    "png-rgba": lambda g: _encode(".png", cv2.cvtColor(g, cv2.COLOR_GRAY2BGRA)),
    "dicom12": lambda g: dicom(g.astype(np.uint16) * 16),
    "dicom-mono1": lambda g: dicom((255 - g.astype(np.uint16)) * 16, "MONOCHROME1"),
    "dicom-signed": lambda g: dicom(g.astype(np.int16) * 4 - 1024, bits=16, signed=True,
                                    rescale=(1.0, 1024.0)),
    "dicom-rescale": lambda g: dicom(g.astype(np.uint16) * 16, rescale=(0.5, -100.0)),
    "jpeg100": lambda g: _encode(".jpg", g, cv2.IMWRITE_JPEG_QUALITY, 100),
    "jpeg95": lambda g: _encode(".jpg", g, cv2.IMWRITE_JPEG_QUALITY, 95),
    "jpeg85": lambda g: _encode(".jpg", g, cv2.IMWRITE_JPEG_QUALITY, 85),
    "jpeg95-progressive": lambda g: _encode(".jpg", g, cv2.IMWRITE_JPEG_QUALITY, 95,
                                            cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "resized-2x-bicubic": lambda g: _resized(g, 2.0, cv2.INTER_CUBIC),
    "resized-0.75x-area": lambda g: _resized(g, 0.75, cv2.INTER_AREA),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N test-fold images")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    settings = Settings()
    pipeline = Pipeline.from_settings(settings, citations=False)
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD]
    rows = rows[:args.limit] if args.limit else rows
    scope: Counter[str] = Counter()
    label: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    deltas: dict[str, list[float]] = defaultdict(list)
    examples: list[str] = []
    for row in rows:
        original = (settings.data_dir / row.path).read_bytes()
        reference = pipeline.analyze(original).diagnosis
        wrong["original"] += reference.in_scope and (reference.label == "tumour") != row.label
        grey = np.round(to_grey(read_image(original).pixels) * 255).astype(np.uint8)
        for name, encode in ENCODINGS.items():
            verdict = pipeline.analyze(encode(grey)).diagnosis
            if verdict.in_scope != reference.in_scope:
                scope[name] += 1
                examples.append(f"{row.path} {name}: in scope {reference.in_scope} -> "
                                f"{verdict.in_scope} ({verdict.scope_reason})")
                continue
            if verdict.label != reference.label:
                label[name] += 1
                examples.append(f"{row.path} {name}: {reference.label} "
                                f"{reference.probability:.4f} -> {verdict.label} "
                                f"{verdict.probability:.4f}")
            if verdict.probability is not None and reference.probability is not None:
                deltas[name].append(abs(verdict.probability - reference.probability))
            wrong[name] += verdict.in_scope and (verdict.label == "tumour") != row.label
    figures = {name: {"scope_changed": scope[name], "label_changed": label[name],
                      "max_probability_change": max(deltas[name], default=0.0),
                      "errors": wrong[name]} for name in ENCODINGS}
    print(f"{len(rows)} test-fold images; errors against the true label as fetched: "
          f"{wrong['original']}")
    print(f"{'encoding':20s} {'scope changed':>14s} {'label changed':>14s} "
          f"{'max |dp|':>9s} {'errors':>7s}")
    for name, f in figures.items():
        print(f"{name:20s} {f['scope_changed']:14d} {f['label_changed']:14d} "
              f"{f['max_probability_change']:9.4f} {f['errors']:7d}")
    for line in examples:
        print("  " + line)
    print(f"{time.perf_counter() - start:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"images": len(rows), "figures": figures,
                                         "changes": examples}, indent=1) + "\n")
    if any(scope[n] or label[n] for n in LOSSLESS):
        sys.exit(1)  # a lossless encoding changed a verdict


if __name__ == "__main__":
    main()

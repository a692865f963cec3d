"""The same image stored other ways: the grey levels of a fetched image re-encoded as PNG,
DICOM, JPEG and resampled copies, and the fetched image itself re-encoded in colour.
``tests/vision/test_release.py`` checks the lossless ones give the release's diagnosis;
``scripts/check_encodings.py`` measures them all over the test fold."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from assistant.imaging import read_image
from assistant.vision import restore

Grey = npt.NDArray[np.uint8]


def grey_levels(data: bytes) -> Grey:
    """The 8-bit grey levels of an encoded image (some Br35H JPEGs carry colour noise: the
    model sees their luminance either way)."""
    return restore.grey_levels(read_image(data).pixels)


def dicom(values: npt.NDArray[np.integer], photometric: str = "MONOCHROME2",
          bits: int = 12, signed: bool = False,
          rescale: tuple[float, float] | None = None, modality: str = "MR",
          body_part: str | None = None) -> bytes:
    """A secondary-capture DICOM (MR unless ``modality`` says otherwise) holding
    ``values`` as 16-bit samples."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    if body_part is not None:
        ds.BodyPartExamined = body_part
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


# Each holds exactly the grey levels it was given: the diagnosis must not change.
LOSSLESS: dict[str, Callable[[Grey], bytes]] = {
    "png8": lambda g: _encode(".png", g),
    "png16": lambda g: _encode(".png", g.astype(np.uint16) * 257),
    "png-rgb": lambda g: _encode(".png", cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)),
    "png-rgba": lambda g: _encode(".png", cv2.cvtColor(g, cv2.COLOR_GRAY2BGRA)),
    "dicom12": lambda g: dicom(g.astype(np.uint16) * 16),
    "dicom-mono1": lambda g: dicom((255 - g.astype(np.uint16)) * 16, "MONOCHROME1"),
    "dicom-signed": lambda g: dicom(g.astype(np.int16) * 4 - 1024, bits=16, signed=True,
                                    rescale=(1.0, 1024.0)),
    "dicom-rescale": lambda g: dicom(g.astype(np.uint16) * 16, rescale=(0.5, -100.0)),
}

ENCODINGS: dict[str, Callable[[Grey], bytes]] = {
    **LOSSLESS,
    "jpeg100": lambda g: _encode(".jpg", g, cv2.IMWRITE_JPEG_QUALITY, 100),
    "jpeg95": lambda g: _encode(".jpg", g, cv2.IMWRITE_JPEG_QUALITY, 95),
    "jpeg85": lambda g: _encode(".jpg", g, cv2.IMWRITE_JPEG_QUALITY, 85),
    "jpeg75": lambda g: _encode(".jpg", g, cv2.IMWRITE_JPEG_QUALITY, 75),
    "jpeg60": lambda g: _encode(".jpg", g, cv2.IMWRITE_JPEG_QUALITY, 60),
    "jpeg95-progressive": lambda g: _encode(".jpg", g, cv2.IMWRITE_JPEG_QUALITY, 95,
                                            cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "resized-2x-bicubic": lambda g: _resized(g, 2.0, cv2.INTER_CUBIC),
    "resized-0.75x-area": lambda g: _resized(g, 0.75, cv2.INTER_AREA),
}


def _fetched(data: bytes) -> npt.NDArray[Any]:
    """The fetched image's pixels as the reader decodes them (``IMREAD_UNCHANGED``: no EXIF
    rotation, channels kept)."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


# The image as fetched, colour noise and all (what a user's own converter would write), not
# its grey levels. The PNG holds exactly the fetched pixels: its verdict must not change.
FROM_FETCHED_LOSSLESS: dict[str, Callable[[bytes], bytes]] = {
    "colour-png": lambda d: _encode(".png", _fetched(d)),
}
FROM_FETCHED: dict[str, Callable[[bytes], bytes]] = {
    **FROM_FETCHED_LOSSLESS,
    "colour-jpeg75": lambda d: _encode(".jpg", _fetched(d), cv2.IMWRITE_JPEG_QUALITY, 75),
}

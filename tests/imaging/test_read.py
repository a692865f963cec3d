"""Tests for ``assistant.imaging.read``: real DICOM files, generated PNG/JPEG, bad input.

Expected values are computed here from the stored pixel values (read with
pydicom) and the DICOM formulas, so that each test fails if the step it names
(rescale, window, inversion, LUT, frame choice) is skipped or wrong.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.sequence import Sequence

from assistant.config import Limits
from assistant.imaging import (
    ImageInputError,
    ImageTooLargeError,
    NoPixelDataError,
    UnreadableImageError,
    UnsupportedFormatError,
    read_dicom_values,
    read_image,
    sniff_format,
)
from assistant.imaging import _dicom as dicom_module

# Corrupt files make pydicom warn; the warnings are expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

DicomPath = Callable[[str], Path]


# ---------------------------------------------------------------- helpers


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def hand_png(width: int, height: int, depth: int, colour: int, rows: list[bytes]) -> bytes:
    """A PNG built byte by byte (the header may claim any size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + row for row in rows))  # filter type 0 per row
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def encode(ext: str, image: np.ndarray, *params: int) -> bytes:
    ok, buffer = cv2.imencode(ext, image, list(params))
    assert ok
    return buffer.tobytes()


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    return buffer.getvalue()


def window(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2 linear window, written out independently of the module."""
    return np.clip((x.astype(np.float64) - (centre - 0.5)) / (width - 1) + 0.5, 0, 1)


def gradient(height: int = 48, width: int = 64) -> np.ndarray:
    return ((np.add.outer(np.arange(height), np.arange(width)) * 2) % 256).astype(np.uint8)


# ---------------------------------------------------------------- DICOM values


def test_ct_values_are_stored_times_slope_plus_intercept(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    values, meta = read_dicom_values(dicom_path("CT_small.dcm"))
    assert float(ds.RescaleIntercept) == -1024  # so the test sees the rescale at all
    np.testing.assert_array_equal(values, expected.astype(np.float32))
    assert values.dtype == np.float32
    assert (meta.modality, meta.format, meta.window) == ("CT", "dicom", None)


def test_changed_rescale_slope_doubles_the_stored_part(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    intercept = float(ds.RescaleIntercept)
    ds.RescaleSlope = 2
    doubled, _ = read_dicom_values(dicom_bytes(ds))
    original, _ = read_dicom_values(dicom_path("CT_small.dcm"))
    np.testing.assert_array_equal(doubled - intercept, 2 * (original - intercept))
    assert not np.array_equal(doubled, original)


def test_rescale_in_enhanced_functional_groups_is_used(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = 3, -1000
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    del ds.RescaleSlope, ds.RescaleIntercept
    values, _ = read_dicom_values(dicom_bytes(ds))
    np.testing.assert_array_equal(values, (ds.pixel_array * 3.0 - 1000).astype(np.float32))


def test_a_header_with_several_modalities_reads_as_dicom_writes_them(
        dicom_path: DicomPath) -> None:
    """Modality holds one value; a file with two had come back as "['MR', 'CT']"."""
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    ds.Modality = ["MR", "CT"]
    assert read_image(dicom_bytes(ds)).meta.modality == "MR\\CT"


def test_an_empty_pixel_data_element_is_no_pixel_data(dicom_path: DicomPath) -> None:
    """It had been "could not decode ...: TypeError: object of type 'NoneType' has no
    len()"."""
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    ds.PixelData = b""
    with pytest.raises(NoPixelDataError, match="PixelData element is empty"):
        read_image(dicom_bytes(ds))


def test_modality_lut_sequence_is_applied(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("mlut_18.dcm"))
    item = ds.ModalityLUTSequence[0]
    n_entries, first, _ = item.LUTDescriptor
    lut = np.asarray(item.LUTData, dtype=np.float64)
    stored = ds.pixel_array.astype(np.int64)
    expected = lut[np.clip(stored - first, 0, n_entries - 1)]
    values, _ = read_dicom_values(dicom_path("mlut_18.dcm"))
    np.testing.assert_array_equal(values, expected.astype(np.float32))
    assert not np.array_equal(values, stored)


def test_bits_stored_masks_unsigned_high_bits(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 12, 0)
    raw = np.frombuffer(ds.PixelData, dtype="<u2").copy()
    raw[0] = 0xF005  # garbage above bit 12 (e.g. overlay bits) must be ignored
    ds.PixelData = raw.tobytes()
    values, meta = read_dicom_values(dicom_bytes(ds))
    assert values[0, 0] == 5
    assert values.max() <= 2**12 - 1
    assert meta.bit_depth == 12


def test_bits_stored_sign_extends_signed_values(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("693_UNCI.dcm"))
    assert (ds.BitsStored, ds.PixelRepresentation) == (14, 1)
    raw = np.frombuffer(ds.PixelData, dtype="<u2").copy()
    raw[0] = 0x3FFF  # -1 in 14-bit two's complement
    ds.PixelData = raw.tobytes()
    values, _ = read_dicom_values(dicom_bytes(ds))
    intercept = float(ds.RescaleIntercept)
    assert values[0, 0] == -1 + intercept
    assert values.min() >= -(2**13) + intercept and values.max() <= 2**13 - 1 + intercept


# ---------------------------------------------------------------- DICOM display


def test_mr_window_follows_the_dicom_formula(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("MR_small.dcm"))
    image = read_image(dicom_path("MR_small.dcm"))
    expected = window(ds.pixel_array, 600, 1600)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    assert image.meta.window == (600.0, 1600.0)
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (64, 64)


def test_monochrome1_is_inverted(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = read_image(dicom_bytes(ds)).pixels
    normal = read_image(dicom_path("MR_small.dcm")).pixels
    np.testing.assert_allclose(inverted, 1.0 - normal, atol=1e-6)
    assert not np.allclose(inverted, normal)


def test_real_monochrome1_radiograph(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("RG1_UNCI.dcm"))
    image = read_image(dicom_path("RG1_UNCI.dcm"))
    expected = 1.0 - window(ds.pixel_array, 15000, 30000)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    meta = image.meta
    assert (meta.photometric, meta.modality, meta.body_part) == ("MONOCHROME1", "CR", "CHEST")
    assert (meta.height, meta.width, meta.bit_depth) == (1955, 1841, 15)
    assert meta.pixel_spacing_mm is None  # the file says 0.000\0.000


def test_voi_lut_sequence_is_applied(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("vlut_04.dcm"))
    item = ds.VOILUTSequence[0]
    n_entries, first, bits = item.LUTDescriptor
    # The file's LUT is linear (a plain stretch); swap in a curve so that ignoring
    # the LUT, or min-max instead of it, gives different numbers.
    curve = [round((2**bits - 1) * (i / (n_entries - 1)) ** 2) for i in range(n_entries)]
    item.LUTData = curve
    stored = ds.pixel_array.astype(np.int64)
    expected = np.asarray(curve, np.float64)[np.clip(stored - first, 0, n_entries - 1)]
    image = read_image(dicom_bytes(ds))
    np.testing.assert_allclose(image.pixels, expected / (2**bits - 1), atol=1e-6)
    assert image.meta.window is None
    min_max = (stored - stored.min()) / (stored.max() - stored.min())
    assert not np.allclose(image.pixels, min_max, atol=1e-3)


def test_multiframe_returns_the_middle_frame(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("emri_small.dcm"))
    frames = ds.pixel_array
    assert not np.array_equal(frames[5], frames[0])
    image = read_image(dicom_path("emri_small.dcm"))
    assert (image.meta.frame_count, image.meta.frame_index) == (10, 5)
    frame = frames[5].astype(np.float64)
    expected = (frame - frame.min()) / (frame.max() - frame.min())  # no window in the file
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    values, _ = read_dicom_values(dicom_path("emri_small.dcm"))
    np.testing.assert_array_equal(values, frames[5])


def test_multiframe_jpeg_ls_matches_uncompressed(dicom_path: DicomPath) -> None:
    compressed = read_image(dicom_path("emri_small_jpeg_ls_lossless.dcm"))
    plain = read_image(dicom_path("emri_small.dcm"))
    np.testing.assert_array_equal(compressed.pixels, plain.pixels)
    assert compressed.meta.transfer_syntax == "JPEG-LS Lossless Image Compression"


def test_multiframe_colour_jpeg(dicom_path: DicomPath) -> None:
    path = dicom_path("color3d_jpeg_baseline.dcm")
    image = read_image(path)
    assert image.pixels.shape == (480, 640, 3)
    assert (image.meta.frame_count, image.meta.frame_index, image.meta.channels) == (120, 60, 3)
    expected = pixel_array(path, index=60) / 255.0  # pydicom converts YBR_FULL_422 to RGB
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    assert not np.allclose(image.pixels, pixel_array(path, index=0) / 255.0, atol=1e-3)


def test_rgb_ultrasound(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("US1_UNCR.dcm"))
    image = read_image(dicom_path("US1_UNCR.dcm"))
    assert image.pixels.shape == (480, 640, 3)
    np.testing.assert_allclose(image.pixels, ds.pixel_array / 255.0, atol=1e-6)
    assert image.meta.photometric == "RGB"


def test_compressed_colour_matches_uncompressed(dicom_path: DicomPath) -> None:
    j2k = read_image(dicom_path("US1_J2KR.dcm"))  # YBR_RCT, reversible
    np.testing.assert_array_equal(j2k.pixels, read_image(dicom_path("US1_UNCR.dcm")).pixels)
    assert j2k.meta.photometric == "YBR_RCT"


def test_sixteen_bit_rgb(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("SC_rgb_16bit.dcm"))
    image = read_image(dicom_path("SC_rgb_16bit.dcm"))
    np.testing.assert_allclose(image.pixels, ds.pixel_array / 65535.0, atol=1e-6)


def test_palette_colour(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("OBXXXX1A.dcm"))
    assert ds.RedPaletteColorLookupTableDescriptor == [256, 0, 16]
    stored = ds.pixel_array
    luts = [
        np.frombuffer(ds[f"{colour}PaletteColorLookupTableData"].value, dtype="<u2")
        for colour in ("Red", "Green", "Blue")
    ]
    expected = np.stack([lut[stored] for lut in luts], axis=-1) / 65535.0
    image = read_image(dicom_path("OBXXXX1A.dcm"))
    assert image.pixels.shape == (600, 800, 3) and image.meta.photometric == "PALETTE COLOR"
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"]
)
def test_compressed_greyscale_matches_uncompressed(dicom_path: DicomPath, name: str) -> None:
    compressed = read_image(dicom_path(name))
    np.testing.assert_array_equal(compressed.pixels, read_image(dicom_path("MR_small.dcm")).pixels)


def test_lossy_jpeg2000_monochrome1_close_to_uncompressed(dicom_path: DicomPath) -> None:
    lossy = read_image(dicom_path("RG1_J2KI.dcm"))
    plain = read_image(dicom_path("RG1_UNCI.dcm"))
    assert lossy.meta.photometric == "MONOCHROME1"
    assert float(np.abs(lossy.pixels - plain.pixels).mean()) < 0.01


def test_segmentation_one_bit(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("liver.dcm"))
    image = read_image(dicom_path("liver.dcm"))
    assert (image.meta.frame_count, image.meta.frame_index, image.meta.bit_depth) == (3, 1, 1)
    np.testing.assert_array_equal(image.pixels, ds.pixel_array[1].astype(np.float32))


@pytest.mark.parametrize(
    ("implicit", "syntax"),
    [(False, "Explicit VR Little Endian"), (True, "Implicit VR Little Endian")],
)
def test_dicom_without_preamble_or_meta(dicom_path: DicomPath, implicit: bool, syntax: str) -> None:
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    buffer = io.BytesIO()
    pydicom.dcmwrite(
        buffer, ds, implicit_vr=implicit, little_endian=True, enforce_file_format=False
    )
    data = buffer.getvalue()
    assert data[:2] == b"\x08\x00" and data[128:132] != b"DICM"
    assert sniff_format(data) == "dicom"
    values, meta = read_dicom_values(data)
    np.testing.assert_array_equal(values, read_dicom_values(dicom_path("CT_small.dcm"))[0])
    assert meta.transfer_syntax == syntax


def test_shipped_no_meta_file_is_refused(dicom_path: DicomPath) -> None:
    # pydicom's no_meta.dcm starts with a stray 0x20 byte before the (0008,0005) tag;
    # pydicom itself parses it as one garbage element, so it is not recognised as DICOM.
    data = dicom_path("no_meta.dcm").read_bytes()
    assert data[:1] == b"\x20"
    with pytest.raises(UnsupportedFormatError):
        read_image(data)


# ---------------------------------------------------------------- DICOM errors


@pytest.mark.parametrize(
    ("name", "sop_class"),
    [("test-SR.dcm", "Comprehensive SR Storage"), ("rtplan.dcm", "RT Plan Storage")],
)
def test_no_pixel_data(dicom_path: DicomPath, name: str, sop_class: str) -> None:
    ds = pydicom.dcmread(dicom_path(name))
    with pytest.raises(NoPixelDataError, match=sop_class) as info:
        read_image(dicom_path(name))
    assert str(ds.SOPInstanceUID) not in str(info.value)


def test_truncated_pixel_data_names_the_transfer_syntax(dicom_path: DicomPath) -> None:
    with pytest.raises(UnreadableImageError, match="Explicit VR Little Endian"):
        read_image(dicom_path("MR_truncated.dcm"))


def test_too_short_jpeg2000_file(dicom_path: DicomPath) -> None:
    # The encapsulated pixel data is cut off; pydicom then returns an empty data set.
    with pytest.raises(UnreadableImageError, match="empty") as info:
        read_image(dicom_path("emri_small_jpeg_2k_lossless_too_short.dcm"))
    assert not isinstance(info.value, NoPixelDataError)


def test_truncated_copy_of_ct(dicom_path: DicomPath) -> None:
    data = dicom_path("CT_small.dcm").read_bytes()
    with pytest.raises(UnreadableImageError):
        read_image(data[: int(len(data) * 0.6)])


def test_undecodable_jpeg_extended_names_the_transfer_syntax(dicom_path: DicomPath) -> None:
    # Neither pylibjpeg nor libjpeg-turbo accepts this 12-bit file's scan header.
    with pytest.raises(UnreadableImageError, match=r"JPEG Extended \(Process 2 and 4\)"):
        read_image(dicom_path("JPEG-lossy.dcm"))


def test_missing_rows_is_unreadable(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    del ds.Rows
    with pytest.raises(UnreadableImageError, match="Rows/Columns"):
        read_image(dicom_bytes(ds))


def test_constant_image_without_window_is_zeros(dicom_path: DicomPath) -> None:
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    ds.PixelData = np.full((128, 128), 77, dtype="<i2").tobytes()
    image = read_image(dicom_bytes(ds))
    np.testing.assert_array_equal(image.pixels, np.zeros((128, 128), np.float32))


def test_dicom_pixel_limit_checked_before_decoding(
    dicom_path: DicomPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    ds.Rows = ds.Columns = 60000
    data = dicom_bytes(ds)

    def must_not_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixel data decoded before the size check")

    monkeypatch.setattr(dicom_module, "pixel_array", must_not_decode)
    with pytest.raises(ImageTooLargeError) as info:
        read_image(data)
    assert (info.value.limit_name, info.value.actual) == ("max_pixels", 60000 * 60000)


def test_frame_limit_checked_before_decoding(
    dicom_path: DicomPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixel data decoded before the frame check")

    monkeypatch.setattr(dicom_module, "pixel_array", must_not_decode)
    with pytest.raises(ImageTooLargeError) as info:
        read_image(dicom_path("emri_small.dcm"), Limits(max_frames=5))
    assert (info.value.limit_name, info.value.limit, info.value.actual) == ("max_frames", 5, 10)


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm"])
def test_metadata_has_no_patient_identifiers(dicom_path: DicomPath, name: str) -> None:
    ds = pydicom.dcmread(dicom_path(name))
    dumped = str(read_image(dicom_path(name)).meta.to_dict())
    dumped += str(read_dicom_values(dicom_path(name))[1].to_dict())
    for keyword in ("PatientName", "PatientID", "SOPInstanceUID", "StudyInstanceUID"):
        value = str(ds.get(keyword) or "")
        assert value and value not in dumped, keyword


# ---------------------------------------------------------------- PNG and JPEG


def test_png_grey_8_bit() -> None:
    grey = gradient()
    image = read_image(encode(".png", grey))
    np.testing.assert_array_equal(image.pixels, grey.astype(np.float32) / 255)
    assert (image.meta.format, image.meta.channels, image.meta.bit_depth) == ("png", 1, 8)
    assert (image.meta.width, image.meta.height) == (64, 48)


def test_png_grey_16_bit_exact() -> None:
    grey = np.array([[0, 1, 2, 1000], [32768, 65533, 65534, 65535]], dtype=np.uint16)
    image = read_image(encode(".png", grey))
    np.testing.assert_array_equal(image.pixels, (grey / 65535).astype(np.float32))
    assert image.meta.bit_depth == 16


def test_png_red_is_red() -> None:
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 255  # OpenCV order: red is the last channel
    image = read_image(encode(".png", bgr))
    assert image.pixels.shape == (8, 8, 3)
    np.testing.assert_array_equal(image.pixels[0, 0], [1.0, 0.0, 0.0])


def test_png_rgba_composited_over_black() -> None:
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., 1] = 200  # green
    bgra[..., 3] = 51  # alpha 0.2
    image = read_image(encode(".png", bgra))
    np.testing.assert_allclose(image.pixels[0, 0], [0.0, 200 / 255 * 0.2, 0.0], atol=1e-6)


def test_png_grey_alpha_composited() -> None:
    data = hand_png(2, 1, 8, 4, [bytes([200, 128, 100, 255])])
    image = read_image(data)
    np.testing.assert_allclose(image.pixels, [[200 / 255 * 128 / 255, 100 / 255]], atol=1e-6)


def test_png_palette_is_colour() -> None:
    palette = png_chunk(b"PLTE", bytes([255, 0, 0, 0, 0, 255]))
    base = hand_png(2, 1, 8, 3, [bytes([0, 1])])
    data = base[:33] + palette + base[33:]
    image = read_image(data)
    np.testing.assert_array_equal(image.pixels[0], [[1, 0, 0], [0, 0, 1]])


def test_grey_saved_as_rgb_comes_back_grey() -> None:
    grey = gradient()
    three = cv2.merge([grey, grey, grey])
    from_png = read_image(encode(".png", three))
    from_jpeg = read_image(encode(".jpg", three, cv2.IMWRITE_JPEG_QUALITY, 100))
    assert from_png.pixels.shape == (48, 64) and from_png.meta.channels == 1
    np.testing.assert_array_equal(from_png.pixels, read_image(encode(".png", grey)).pixels)
    assert from_jpeg.pixels.shape == (48, 64) and from_jpeg.meta.channels == 1


def test_same_grey_image_as_png_and_jpeg() -> None:
    grey = gradient()
    png = read_image(encode(".png", grey))
    jpeg = read_image(encode(".jpg", grey, cv2.IMWRITE_JPEG_QUALITY, 100))
    assert jpeg.meta.format == "jpeg" and jpeg.pixels.shape == png.pixels.shape
    assert float(np.abs(jpeg.pixels - png.pixels).max()) < 0.02


def test_jpeg_colour_channel_order() -> None:
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 2] = 255
    pixels = read_image(encode(".jpg", bgr, cv2.IMWRITE_JPEG_QUALITY, 100)).pixels
    assert pixels.shape == (16, 16, 3)
    assert pixels[8, 8, 0] > 0.95 and pixels[8, 8, 1:].max() < 0.05


# ---------------------------------------------------------------- bad input


def test_empty_input() -> None:
    with pytest.raises(UnreadableImageError, match="empty file: 0 bytes"):
        read_image(b"")


def test_text_named_png_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_text("patient notes, definitely not an image\n")
    with pytest.raises(UnsupportedFormatError, match="text") as info:
        read_image(path)
    assert "PNG, JPEG and DICOM" in str(info.value)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"GIF89a\x01\x00\x01\x00" + bytes(20), "GIF"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(20), "PDF"),
        (b"PK\x03\x04" + bytes(30), "ZIP"),
        (b"\x7fELF\x02\x01\x01" + bytes(30), "ELF/PE executable"),
        (b"MZ\x90\x00\x03" + bytes(30), "ELF/PE executable"),
        (bytes([0x00, 0x01, 0xFE, 0x80]) * 10, "unrecognised"),
    ],
)
def test_other_formats_are_named(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedFormatError, match=name):
        read_image(data)


def test_png_claiming_huge_size_fails_fast_without_allocating() -> None:
    data = hand_png(100_000, 100_000, 8, 0, [b"\x00"])
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageTooLargeError) as info:
            read_image(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.limit_name == "max_pixels"
    assert elapsed < 0.5 and peak < 50 * 2**20


def test_jpeg_claiming_huge_size_fails_fast_without_allocating() -> None:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 60000, 60000, 3) + bytes(9)
    data = b"\xff\xd8" + b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + sof
    data += b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + bytes(64) + b"\xff\xd9"
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageTooLargeError) as info:
            read_image(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (info.value.limit_name, info.value.actual) == ("max_pixels", 60000 * 60000)
    assert elapsed < 0.5 and peak < 50 * 2**20


def test_too_many_bytes(dicom_path: DicomPath) -> None:
    limits = Limits(max_upload_bytes=1000)
    with pytest.raises(ImageTooLargeError) as info:
        read_image(dicom_path("MR_small.dcm").read_bytes(), limits)
    assert (info.value.limit_name, info.value.limit) == ("max_upload_bytes", 1000)
    with pytest.raises(ImageTooLargeError, match="limit is 1000"):
        read_image(dicom_path("MR_small.dcm"), limits)


def test_truncated_png() -> None:
    data = encode(".png", gradient())
    with pytest.raises(UnreadableImageError, match="truncated PNG"):
        read_image(data[: len(data) // 2])


def test_truncated_jpeg() -> None:
    data = encode(".jpg", gradient())
    with pytest.raises(UnreadableImageError, match="truncated JPEG"):
        read_image(data[: len(data) - 40])


def _texture(height: int, width: int) -> np.ndarray:
    noise = (np.random.default_rng(0).random((height, width)) * 255).astype(np.uint8)
    return np.asarray(cv2.GaussianBlur(noise, (5, 5), 2))


@pytest.mark.parametrize("keep", [0.7, 0.4])
def test_a_jpeg_cut_short_with_its_end_marker_put_back(keep: float) -> None:
    """The decoder fills the missing blocks with flat grey and says so only on stderr: a
    Br35H slice cut to 95% had been diagnosed, its last rows grey."""
    grey = _texture(128, 96)
    colour = np.dstack([grey, np.roll(grey, 7, axis=1), grey[::-1]])  # 4:2:0 chroma
    for image in (grey, colour):
        data = encode(".jpg", image)
        with pytest.raises(UnreadableImageError, match="scan data ends early"):
            read_image(data[: int(len(data) * keep)] + b"\xff\xd9")


def test_flat_grey_in_a_whole_jpeg_is_an_image() -> None:
    """Not a fill: a uniform grey image, and an image with a mid-grey band along its foot
    (a first version refused the band: the row above it is content edge to edge)."""
    for flat in (np.full((64, 48), 128, np.uint8), np.full((64, 48, 3), 128, np.uint8)):
        assert read_image(encode(".jpg", flat)).pixels.shape[:2] == (64, 48)
    banded = _texture(256, 256)
    banded[203:] = 128
    for quality in (75, 90, 95):
        ok, data = cv2.imencode(".jpg", banded, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok and read_image(data.tobytes()).pixels.shape == (256, 256)


def test_png_with_bad_ihdr_checksum() -> None:
    data = bytearray(encode(".png", gradient()))
    data[20] ^= 0xFF  # inside the IHDR body
    with pytest.raises(UnreadableImageError, match="checksum"):
        read_image(bytes(data))


def test_read_dicom_values_refuses_png() -> None:
    with pytest.raises(UnsupportedFormatError, match="expected DICOM"):
        read_dicom_values(encode(".png", gradient()))


# ---------------------------------------------------------------- property tests


def _read_or_typed_error(data: bytes) -> None:
    """Only ImageInputError subclasses may escape; a success must be display-ready."""
    try:
        image = read_image(data)
    except ImageInputError:
        return
    pixels = image.pixels
    assert pixels.dtype == np.float32 and pixels.ndim in (2, 3)
    assert np.isfinite(pixels).all()
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0


def _seeds(dicom_path: DicomPath) -> list[bytes]:
    grey = gradient(16, 16)
    return [
        encode(".png", grey),
        encode(".png", cv2.merge([grey, 255 - grey, grey])),
        encode(".jpg", grey),
        dicom_path("MR_small.dcm").read_bytes(),
    ]


def _mutate(draw: st.DataObject, original: bytes) -> bytes:
    """Up to 8 byte replacements, deletions or insertions, then a random cut."""
    data = bytearray(original)
    for _ in range(draw.draw(st.integers(0, 8))):
        if not data:
            break
        position = draw.draw(st.integers(0, len(data) - 1))
        action = draw.draw(st.sampled_from(["replace", "delete", "insert"]))
        if action == "replace":
            data[position] = draw.draw(st.integers(0, 255))
        elif action == "delete":
            del data[position : position + draw.draw(st.integers(1, 16))]
        else:
            data[position:position] = draw.draw(st.binary(min_size=1, max_size=8))
    return bytes(data[: draw.draw(st.integers(0, len(data)))])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_typed_errors(data: bytes) -> None:
    _read_or_typed_error(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_after_a_dicom_tag_only_raise_typed_errors(tail: bytes) -> None:
    _read_or_typed_error(b"\x08\x00\x05\x00CS" + tail)  # takes the force=True path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_files_only_raise_typed_errors(dicom_path: DicomPath, data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(_seeds(dicom_path)))
    _read_or_typed_error(_mutate(data, original))


def _with_exif_orientation(jpeg: bytes, orientation: int, order: str) -> bytes:
    """``jpeg`` with an APP1 EXIF segment whose first directory holds one Orientation tag,
    in Intel ("<") or Motorola (">") byte order, as a camera writes it."""
    head = b"II*\x00" if order == "<" else b"MM\x00*"
    ifd = (struct.pack(order + "IH", 8, 1)
           + struct.pack(order + "HHIH", 0x0112, 3, 1, orientation) + b"\x00\x00"
           + struct.pack(order + "I", 0))
    payload = b"Exif\x00\x00" + head + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_the_first_exif_segment_gives_the_orientation() -> None:
    """As libjpeg and Pillow read it: a later EXIF segment (an editor's copy) does not."""
    stored = np.zeros((48, 80), np.uint8)
    stored[4:20, 6:30] = 255
    ok, encoded = cv2.imencode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    twice = _with_exif_orientation(_with_exif_orientation(encoded.tobytes(), 3, "<"), 6, ">")
    pixels = read_image(twice, Limits()).pixels  # the segment inserted last comes first
    np.testing.assert_array_equal(pixels, np.rot90(read_image(encoded.tobytes()).pixels, -1))


# What a viewer shows for each EXIF orientation, from the rows as stored (TIFF 6.0, tag 274).
_SHOWN = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
          5: np.transpose, 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a.T, 2),
          8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied(orientation: int, order: str) -> None:
    stored = np.zeros((48, 80), np.uint8)
    stored[4:20, 6:30] = 255  # a block near the top left corner: every turn moves it
    stored[30:44, 60:64] = 128
    ok, encoded = cv2.imencode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    data = _with_exif_orientation(encoded.tobytes(), orientation, order)
    image = read_image(data, Limits())
    as_stored = read_image(encoded.tobytes(), Limits()).pixels
    np.testing.assert_array_equal(image.pixels, _SHOWN[orientation](as_stored))
    assert (image.meta.height, image.meta.width) == image.pixels.shape
    assert image.meta.orientation == orientation  # said, so that sides are "as displayed"
    # OpenCV applies the orientation itself when it decodes to grey: the same pixels
    shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_allclose(image.pixels, shown / 255.0, atol=1e-6)


def test_pydicom_neither_logs_nor_warns_what_the_reader_reports(
        caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder) -> None:
    """A bad value's warning quotes it (it could be a patient's name or date) and a failed
    decoder logs its traceback: the reader's one-line error says what was wrong."""
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files"
    if not (folder / "badVR.dcm").is_file():
        pytest.skip("pydicom's test files are not installed")
    for name in ("badVR.dcm", "JPEG-lossy.dcm"):
        with pytest.raises(ImageInputError):
            read_image((folder / name).read_bytes())
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
    assert not [w for w in recwarn if "pydicom" in str(w.filename)]


@pytest.mark.parametrize(("frame", "words"), [
    (b"\xff\xf7\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x11\x00", "JPEG-LS"),  # SOF55
    (b"\xff\xc1\x00\x0b\x0c\x00\x10\x00\x10\x01\x01\x11\x00", "12-bit JPEG"),  # SOF1, 12 bits
])
def test_jpeg_kinds_opencv_does_not_decode_are_unsupported_not_corrupt(frame: bytes,
                                                                        words: str) -> None:
    """DICOM decodes these inside its transfer syntaxes; as a file of their own they are a
    format this reader does not take (415), not a broken file (422)."""
    data = b"\xff\xd8" + frame + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x00" * 64
    with pytest.raises(UnsupportedFormatError, match=words):
        read_image(data + b"\xff\xd9")

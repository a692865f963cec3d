"""DICOM: parse, check the header against the limits, decode one frame, map to display.

Private; the public face is ``assistant.imaging.read``. The display pipeline is
the DICOM grayscale pipeline (PS3.3 C.11), in this order:

    stored values -> Modality LUT or rescale -> VOI LUT or window (else min-max)
    -> MONOCHROME1 inversion

Colour images (RGB, YBR_* converted to RGB by pydicom, PALETTE COLOR through its
lookup table) are only scaled to [0, 1]. Only the image-pixel, LUT and a few
descriptive attributes are read; before any of them is, the data set is de-identified
(``_deid``: cut down to the image attributes, then dicognito), keeping the
StudyInstanceUID aside for a keyed hash.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, replace
from io import BytesIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from assistant.config import Limits
from assistant.imaging._common import (
    DECODER_ERRORS,
    DecodedImage,
    ImageMeta,
    check_pixel_count,
    collapse_grey,
    decode_slot,
    describe_error,
    to_unit_float,
)
from assistant.imaging._deid import deidentify
from assistant.imaging._encapsulated import check_codestream, check_deflated
from assistant.imaging.errors import ImageTooLargeError, NoPixelDataError, UnreadableImageError

logger = logging.getLogger(__name__)

# pydicom logs a pixel decoder's failure with its traceback, and warns of an invalid value
# quoting the value, which could be a patient's name or date. The reader reports every
# failure itself, in one line, and never repeats a header's values: pydicom stays quiet.
logging.getLogger("pydicom").setLevel(logging.CRITICAL)
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")  # warnings issued by pydicom

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
_PALETTE = "PALETTE COLOR"
# Enhanced multi-frame objects keep these per frame in functional groups.
_FUNCTIONAL_GROUPS = (
    ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
    ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
    ("PixelMeasuresSequence", ("PixelSpacing",)),
)


@dataclass(frozen=True)
class DicomFrame:
    """One decoded frame before display mapping."""

    stored: np.ndarray  # as decoded: (H, W) or (H, W, 3), integer (or float pixel data)
    values: np.ndarray  # float32 modality values (grey) or the stored samples (colour)
    dataset: Dataset  # de-identified (``_deid``): image attributes only
    meta: ImageMeta  # window is None here: nothing has been applied yet
    study_uid: str | None = None  # for a keyed hash only: never returned, logged or stored


@dataclass(frozen=True)
class _Opened:
    """A parsed, checked and de-identified data set, its pixels not decoded yet."""

    ds: Dataset
    rows: int
    columns: int
    n_frames: int
    syntax: UID
    study_uid: str | None


def _open(data: bytes, limits: Limits) -> _Opened:
    """Parse, check the limits (the compressed frame's own header too), de-identify."""
    check_deflated(data, limits)  # before pydicom inflates it whole
    ds = _parse(data)
    rows, columns, n_frames = _check_header(ds, limits)
    syntax = _transfer_syntax(ds)
    _hoist_functional_groups(ds, n_frames // 2)
    uid = deidentify(ds)  # from here on, ds holds image attributes only
    if syntax.is_encapsulated and "PixelData" in ds:  # the codestream's own size, first
        frame = get_frame(ds.PixelData, n_frames // 2, number_of_frames=n_frames)
        check_codestream(frame, rows, columns, limits)
    return _Opened(ds, rows, columns, n_frames, syntax, uid)


def read_frame(data: bytes, limits: Limits) -> DicomFrame:
    """Parse, check limits, decode the middle frame and apply the Modality LUT."""
    opened = _open(data, limits)
    with decode_slot(opened.rows * opened.columns):
        return _decode(opened)


def read_display(data: bytes, limits: Limits) -> DecodedImage:
    """``to_display(read_frame(...))``, a large frame holding its decode slot throughout."""
    opened = _open(data, limits)
    with decode_slot(opened.rows * opened.columns):
        return to_display(_decode(opened))


def _decode(opened: _Opened) -> DicomFrame:
    """Decode the middle frame and apply the Modality LUT."""
    ds, rows, columns, n_frames = opened.ds, opened.rows, opened.columns, opened.n_frames
    index, syntax, uid = n_frames // 2, opened.syntax, opened.study_uid
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if photometric not in (*_MONOCHROME, *_COLOUR, _PALETTE):
        raise UnreadableImageError(f"unsupported DICOM photometric interpretation {photometric!r}")
    shape = (rows, columns, 3) if photometric in _COLOUR else (rows, columns)
    stored = _decode_frame(ds, index, syntax, shape)
    values = apply_modality_lut(stored, ds) if photometric in _MONOCHROME else stored
    meta = ImageMeta(
        format="dicom",
        width=columns,
        height=rows,
        channels=1 if stored.ndim == 2 else 3,
        bit_depth=_bits_stored(ds),
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        photometric=photometric,
        pixel_spacing_mm=_pixel_spacing(ds),
        frame_count=n_frames,
        frame_index=index,
        transfer_syntax=syntax.name,
    )
    return DicomFrame(stored, np.asarray(values, dtype=np.float32), ds, meta, uid)



def to_display(frame: DicomFrame) -> DecodedImage:
    """Modality values -> display values in [0, 1] (VOI, inversion, colour scaling)."""
    ds, photometric = frame.dataset, frame.meta.photometric
    window = None
    if photometric == _PALETTE:
        rgb = apply_color_lut(frame.stored, ds)[..., :3]  # drop any alpha LUT
        pixels = to_unit_float(rgb, 255 if rgb.dtype == np.uint8 else 65535)
    elif photometric in _COLOUR:
        pixels = to_unit_float(frame.stored, 2**frame.meta.bit_depth - 1)
    else:
        pixels, window = _voi(frame.values, ds)
        if photometric == "MONOCHROME1":  # minimum value is white
            pixels = 1.0 - pixels
    pixels = collapse_grey(pixels.astype(np.float32, copy=False))
    meta = replace(frame.meta, channels=1 if pixels.ndim == 2 else 3, window=window)
    return DecodedImage(pixels=pixels, meta=meta, study_uid=frame.study_uid)


def _parse(data: bytes) -> Dataset:
    # Without the 128-byte preamble and "DICM" pydicom needs force=True.
    has_preamble = data[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(BytesIO(data), force=not has_preamble)
    except DECODER_ERRORS as exc:
        raise UnreadableImageError(f"could not parse DICOM: {describe_error(exc)}") from exc
    if len(ds) == 0:
        # pydicom drops a data set whose last (undefined-length) element is cut off.
        raise UnreadableImageError("DICOM data set is empty (truncated file?)")
    return ds


def _check_header(ds: Dataset, limits: Limits) -> tuple[int, int, int]:
    """Rows, columns and frame count, refused before decoding if over the limits."""
    present = [keyword for keyword in _PIXEL_KEYWORDS if keyword in ds]
    if not present:
        file_meta = getattr(ds, "file_meta", Dataset())
        uid = ds.get("SOPClassUID") or file_meta.get("MediaStorageSOPClassUID")
        sop_class = UID(str(uid)).name if uid else "unknown"
        raise NoPixelDataError(f"DICOM object has no pixel data (SOP class {sop_class})")
    if all(not ds[keyword].value for keyword in present):  # the element, with no bytes
        raise NoPixelDataError(f"DICOM object's {present[0]} element is empty")
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if rows is None or columns is None or int(rows) <= 0 or int(columns) <= 0:
        raise UnreadableImageError("DICOM image has no valid Rows/Columns")
    check_pixel_count(int(columns), int(rows), limits)
    raw_frames = ds.get("NumberOfFrames")
    n_frames = max(int(raw_frames), 1) if raw_frames not in (None, "") else 1
    if n_frames > limits.max_frames:
        raise ImageTooLargeError(
            f"DICOM object has {n_frames} frames; the limit is {limits.max_frames}",
            limit_name="max_frames",
            limit=limits.max_frames,
            actual=n_frames,
        )
    return int(rows), int(columns), n_frames


def _transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax, inferred from the encoding when there is no file meta."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None:
        file_meta = ds.file_meta = FileMetaDataset()
    if file_meta.get("TransferSyntaxUID"):
        return UID(str(file_meta.TransferSyntaxUID))
    implicit, little = ds.original_encoding
    if implicit or implicit is None:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    file_meta.TransferSyntaxUID = syntax
    return syntax


def _hoist_functional_groups(ds: Dataset, index: int) -> None:
    """Copy frame `index`'s rescale, window and spacing to the top level (if absent there).

    pydicom's LUT functions and the rest of this module read the top level.
    Per-frame values override shared ones.
    """
    groups = []
    for keyword, item in (
        ("SharedFunctionalGroupsSequence", 0),
        ("PerFrameFunctionalGroupsSequence", index),
    ):
        sequence = ds.get(keyword)
        if sequence and item < len(sequence):
            groups.append(sequence[item])
    found: dict[str, object] = {}
    for group in groups:
        for sequence_keyword, keywords in _FUNCTIONAL_GROUPS:
            items = group.get(sequence_keyword)
            if items:
                found.update({k: items[0][k].value for k in keywords if k in items[0]})
    for keyword, value in found.items():
        if keyword not in ds:
            setattr(ds, keyword, value)


def _decode_frame(ds: Dataset, index: int, syntax: UID, shape: tuple[int, ...]) -> np.ndarray:
    """Decode only frame `index` (pydicom applies BitsStored masking and sign extension)."""
    try:
        frame = pixel_array(ds, index=index)
    except DECODER_ERRORS as exc:
        raise UnreadableImageError(
            f"could not decode the {syntax.name} pixel data: {describe_error(exc)}"
        ) from exc
    if frame.shape != shape:
        raise UnreadableImageError(
            f"decoded pixel data has shape {frame.shape}, expected {shape} from the header"
        )
    return frame


def _voi(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, tuple[float, float] | None]:
    """VOI LUT, else the first window, else min-max; returns ([0, 1] values, window used)."""
    if ds.get("VOILUTSequence"):
        return _voi_lut(values, ds), None
    window = _first_window(ds)
    if window is None:
        return _min_max(values), None
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    return _apply_window(values, *window, function), window


def _voi_lut(values: np.ndarray, ds: Dataset) -> np.ndarray:
    n_entries, first_mapped, bits = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor)
    n_entries = n_entries or 2**16  # 0 means 65536 entries
    # The LUT is indexed by integers; clip first so that pydicom's uint16 index cannot wrap.
    index = np.clip(np.rint(values), first_mapped, first_mapped + n_entries - 1)
    return to_unit_float(apply_voi(index.astype(np.int64), ds), 2**bits - 1)


def _apply_window(values: np.ndarray, centre: float, width: float, function: str) -> np.ndarray:
    """Window centre/width per PS3.3 C.11.2.1.2, output in [0, 1]."""
    x = values.astype(np.float64)
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - centre) / width))
    elif function == "LINEAR_EXACT":
        y = (x - centre) / width + 0.5
    elif width == 1.0:  # LINEAR degenerates to a threshold at c - 0.5
        y = (x > centre - 0.5).astype(np.float64)
    else:
        y = (x - (centre - 0.5)) / (width - 1.0) + 0.5
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def _min_max(values: np.ndarray) -> np.ndarray:
    """Stretch the frame's finite range to [0, 1]; a constant frame gives zeros."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.float32)
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    out = (values.astype(np.float64) - low) / (high - low)
    return np.nan_to_num(np.clip(out, 0.0, 1.0), nan=0.0).astype(np.float32)


def _first_window(ds: Dataset) -> tuple[float, float] | None:
    centre = _first_number(ds.get("WindowCenter"))
    width = _first_number(ds.get("WindowWidth"))
    if centre is None or width is None:
        return None
    if width < 1.0:  # PS3.3 C.11.2.1.2: width shall be >= 1
        logger.info("ignoring DICOM window with width %s < 1", width)
        return None
    return centre, width


def _first_number(value: object) -> float | None:
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _bits_stored(ds: Dataset) -> int:
    bits = ds.get("BitsStored") or ds.get("BitsAllocated") or 8
    return int(bits)


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if isinstance(value, (MultiValue, list)):  # several values: DICOM's own separator, not
        value = "\\".join(str(v).strip() for v in value)  # Python's "['MR', 'CT']"
    text = str(value).strip() if value is not None else ""
    return text[:64] or None


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """PixelSpacing, else ImagerPixelSpacing, in mm; zero or malformed values give None."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if isinstance(value, (MultiValue, list)) and len(value) == 2:
            row, column = _first_number(value[0]), _first_number(value[1])
            if row is not None and column is not None and row > 0 and column > 0:
                return row, column
    return None

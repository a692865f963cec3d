"""Hostile and malformed images: only the reader's typed errors (``ImageInputError``) may
escape, the sizes are refused from the headers (fast, without allocating), and a success
is display-ready. Property tests over mutations of real seeds (PNG, JPEG, plain and
compressed DICOM), over DICOM attributes set to arbitrary values, and over truncation."""

from __future__ import annotations

import copy
import io
import random
import threading
import time
import tracemalloc
from typing import Any

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.config import Limits
from assistant.imaging import ImageInputError, read_image
from assistant.imaging._common import LARGE_DECODES
from assistant.service.errors import image_error_status
from tests.conftest import data_dir
from tests.malformed import crafted, deflate_zeros, deflated_bomb, mutate, png_with, seeds

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]

SEEDS = seeds(data_dir())
SEED_NAMES = sorted(SEEDS)
CRAFTED = crafted(data_dir())
PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def status_of(data: bytes, limits: Limits | None = None) -> int:
    """The HTTP status the service would answer: 200, or the typed error's; anything else
    raised fails the test. A success must be finite values in [0, 1]."""
    try:
        image = read_image(data, limits)
    except ImageInputError as exc:
        return image_error_status(exc)[0]
    pixels = image.pixels
    assert pixels.dtype == np.float32 and pixels.ndim in (2, 3)
    assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0
    return 200


def test_the_seeds_are_read() -> None:
    assert len(SEEDS) >= 14, sorted(SEEDS)  # the DICOM seeds come from `assistant data fetch`
    assert all(status_of(data) == 200 for data in SEEDS.values())


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_input_gets_its_status_fast_and_small(name: str) -> None:
    data, expected = CRAFTED[name]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        status = status_of(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == expected
    if expected == 413:  # refused from the header: no pixel buffer was made
        assert elapsed < 0.5 and peak < 20 * 2**20, (elapsed, peak)


@PROPERTY
@given(st.sampled_from(SEED_NAMES), st.integers(0, 2**32 - 1))
def test_mutated_seeds_only_raise_typed_errors(name: str, seed: int) -> None:
    rng = random.Random(seed)
    status_of(mutate(rng, SEEDS[name], list(SEEDS.values())))


@PROPERTY
@given(st.sampled_from([n for n in SEED_NAMES if n.endswith(".dcm")]), st.data())
def test_truncated_dicom_only_raises_typed_errors(name: str, data: st.DataObject) -> None:
    original = SEEDS[name]
    cut = data.draw(st.integers(0, len(original) - 1))
    # A cut through the last delimiters of encapsulated pixel data can still be read.
    assert status_of(original[:cut]) in (200, 413, 415, 422)


_NUMBER_TEXT = st.sampled_from(["", "0", "-1", "1e308", "-1e308", "nan", "inf", "1\\2", "abc",
                                "3.5", "4096", "9" * 20])
_ATTRIBUTES: dict[str, st.SearchStrategy[object]] = {
    "Rows": st.integers(0, 4096), "Columns": st.integers(0, 4096),
    "BitsAllocated": st.sampled_from([0, 1, 7, 8, 12, 16, 32, 64, 255]),
    "BitsStored": st.integers(0, 70), "HighBit": st.integers(0, 70),
    "PixelRepresentation": st.integers(0, 3), "SamplesPerPixel": st.integers(0, 5),
    "PlanarConfiguration": st.integers(0, 3),
    "PhotometricInterpretation": st.sampled_from(
        ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR",
         "ARGB", "", "monochrome2"]),
    "NumberOfFrames": _NUMBER_TEXT, "WindowCenter": _NUMBER_TEXT, "WindowWidth": _NUMBER_TEXT,
    "RescaleSlope": _NUMBER_TEXT, "RescaleIntercept": _NUMBER_TEXT,
    "VOILUTFunction": st.sampled_from(["LINEAR", "SIGMOID", "LINEAR_EXACT", "BOGUS"]),
}


_DATASETS = {name: pydicom.dcmread(io.BytesIO(SEEDS[name]))
             for name in ("MR_small.dcm", "CT_small.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                          "MR_small_RLE.dcm")
             if name in SEEDS}


@PROPERTY
@given(st.sampled_from(sorted(_DATASETS)),
       st.dictionaries(st.sampled_from(sorted(_ATTRIBUTES)), st.none(), min_size=1,
                       max_size=4), st.data())
def test_dicom_with_arbitrary_header_values_only_raises_typed_errors(
        name: str, keys: dict[str, None], data: st.DataObject) -> None:
    ds = copy.deepcopy(_DATASETS[name])
    for keyword in keys:
        value = data.draw(_ATTRIBUTES[keyword], label=keyword)
        try:
            setattr(ds, keyword, value)
        except (ValueError, TypeError, OverflowError):
            return  # pydicom refuses to hold it: no file to read
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    except (ValueError, TypeError, OverflowError, AttributeError, KeyError, Exception):
        return  # pydicom cannot write it
    status_of(buffer.getvalue())


def test_a_tight_pixel_limit_refuses_a_seed_from_its_header() -> None:
    limits = Limits(max_pixels=16 * 16)
    assert all(status_of(SEEDS[name], limits) == 413 for name in SEED_NAMES)


def test_deflate_bomb_is_refused_while_inflating() -> None:
    bomb = deflated_bomb(SEEDS["MR_small.dcm"], 40)  # 40 MiB from about 40 kB
    assert len(bomb) < 100_000
    limits = Limits(max_inflated_bytes=8 * 2**20)
    tracemalloc.start()
    try:
        assert status_of(bomb, limits) == 413
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20
    assert status_of(bomb, Limits(max_inflated_bytes=64 * 2**20)) == 200  # under: read


@pytest.mark.parametrize(("side", "most"), [(2100, LARGE_DECODES), (64, 4)])
def test_large_frames_are_decoded_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch,
                                                  side: int, most: int) -> None:
    from assistant.imaging import _raster

    data = png_with(side, side, deflate_zeros(side * (side + 1)))
    decode = _raster._decode_with_cv2
    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def counted(*args: Any) -> Any:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.2)
        try:
            return decode(*args)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(_raster, "_decode_with_cv2", counted)
    threads = [threading.Thread(target=read_image, args=(data,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state["most"] == most

"""glibc malloc tuning at start-up: the service keeps its heap flat, batch work keeps it
warm.

The service (``assistant serve``): glibc raises its mmap threshold to the size of the
largest block freed so far (up to 32 MiB), so after the first batch of images the
multi-megabyte arrays (decoded images, activations, heatmaps) come from the heap, where
blocks of ever-different sizes fragment it: in the load test (``scripts/load_test.py``) the
resident heap grew 26-38% over 2,000 mixed requests. A fixed threshold (blocks from 1 MiB
up are mapped, and returned to the system when freed) and two arenas keep it flat (-0.1%
over the same run).

Batch work (``assistant draft``, the benchmarks): every mapped block is new memory that
the kernel zero-fills page by page on first touch. A model batch of 32 slices allocates
activations of about 50 MB (above glibc's 32 MiB ceiling, so always mapped): measured with
``scripts/bench_vision.py``, minor page faults took about 40% of the model's time. There
blocks up to 64 MiB come from the heap and up to 256 MiB of free heap is kept for the next
batch (``BatchConfig``).

``mallopt`` through ctypes; elsewhere than glibc (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from assistant.config import BatchConfig

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int, arena_max: int, trim_threshold: int = 0) -> bool:
    """Set glibc's mmap threshold, arena count and trim threshold (a value of 0 leaves that
    one alone); True when glibc took them."""
    if not mmap_threshold and not arena_max and not trim_threshold:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("not glibc: malloc left as it is")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = True
    if mmap_threshold:
        ok &= mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
    if arena_max:
        ok &= mallopt(M_ARENA_MAX, arena_max) == 1
    if trim_threshold:
        ok &= mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    log.info("malloc: mmap threshold %s, arenas %s, trim threshold %s (%s)",
             mmap_threshold or "default", arena_max or "default", trim_threshold or "default",
             "set" if ok else "refused")
    return bool(ok)


def keep_heap(batch: BatchConfig) -> bool:
    """Batch work: freed blocks stay in the heap for the next model batch."""
    return tune_malloc(batch.malloc_mmap_threshold, 0, batch.malloc_trim_threshold)

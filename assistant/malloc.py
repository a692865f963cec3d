"""glibc malloc tuning at start-up: freed blocks are kept in the heap for the next
model batch instead of being mapped and zero-filled anew.

Every mapped block is new memory that the kernel zero-fills page by page on first touch.
A batch of 32 slices allocates activations of about 50 MB, above glibc's 32 MiB ceiling
for its moving mmap threshold, so always mapped: measured with ``scripts/bench_vision.py``,
minor page faults took about 40% of the model's time.

Batch work (``assistant draft``, the benchmarks, ``BatchConfig``): blocks up to 64 MiB
come from the heap and up to 256 MiB of free heap is kept for the next batch.

The service (``assistant serve``, ``ServiceConfig``): the same 64 MiB threshold, two
arenas, and once more than 32 MiB is free at the heap's top glibc returns it (all but a
small pad) to the system: an analysis batch's arrays (a few megabytes each for a batch of
4) are reused, a burst of very large images is given back. An earlier policy mapped every
block from 1 MiB up (decoded images, activations, heatmaps) to keep the heap flat (glibc
as it comes grew it 26-38% over 2,000 mixed requests of ``scripts/load_test.py``), but
then an analysis cost 41-43 ms of CPU at concurrency 8 instead of 26-32
(``scripts/bench_service.py``). With this one resident memory rose 3.6% over 2,000 mixed
requests and 2.6% over 6,000, flat after the first few hundred.

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

"""Keep the server's heap from growing under mixed load: glibc malloc tuning at start-up.

glibc raises its mmap threshold to the size of the largest block freed so far (up to
32 MiB), so after the first batch of images the multi-megabyte arrays (decoded images,
activations, heatmaps) come from the heap, where blocks of ever-different sizes fragment
it: in the load test (``scripts/load_test.py``) the resident heap grew 26-38% over 2,000
mixed requests. A fixed threshold (blocks from 1 MiB up are mapped, and returned to the
system when freed) and two arenas keep it flat (-0.1% over the same run).

``mallopt`` through ctypes; elsewhere than glibc (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int, arena_max: int) -> bool:
    """Set glibc's mmap threshold and arena count (a value of 0 leaves that one alone);
    True when glibc took them."""
    if not mmap_threshold and not arena_max:
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
    log.info("malloc: mmap threshold %s, arenas %s (%s)", mmap_threshold or "default",
             arena_max or "default", "set" if ok else "refused")
    return bool(ok)

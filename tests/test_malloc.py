"""glibc malloc tuning: batch work reuses freed blocks instead of mapping new zeroed pages."""

import json
import platform
import subprocess
import sys

import pytest

from assistant.malloc import tune_malloc

# Activations of argv[2] floats made and freed as a model batch does, under the policy
# argv[1]; prints the minor page faults of each of 16 rounds.
_ROUNDS = """
import json, resource, sys, torch
from assistant.config import BatchConfig, ServiceConfig
from assistant.malloc import keep_heap, tune_malloc
if sys.argv[1] == "batch":
    assert keep_heap(BatchConfig())
elif sys.argv[1] == "service":
    svc = ServiceConfig()
    assert tune_malloc(svc.malloc_mmap_threshold, svc.malloc_arena_max,
                       svc.malloc_trim_threshold)
elif sys.argv[1] == "flat":  # the service's policy before: every block from 1 MiB mapped
    assert tune_malloc(1024 * 1024, 2)
x = torch.rand(int(sys.argv[2]))
def round_():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = (x * 2).clamp_(0, 1)
    z = y + 1
    del y, z
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps([round_() for _ in range(16)]))
"""


def _faults(policy: str, floats: int = 10_000_000) -> list[int]:
    out = subprocess.run([sys.executable, "-c", _ROUNDS, policy, str(floats)], capture_output=True,
                         text=True, check=True, timeout=120)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_nothing_to_set_is_a_no_op() -> None:
    assert tune_malloc(0, 0, 0) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_batch_work_stops_faulting_in_fresh_pages_for_each_batch() -> None:
    pages = 2 * 40_000_000 // 4096  # two 40 MB tensors a round
    default, batch = _faults("default"), _faults("batch")
    assert min(default[-8:]) > pages // 2  # glibc as it comes: mapped anew every round
    # Tuned, the heap keeps the blocks once it has settled. Here it settles by the fourth
    # round; a CI run still faulted one tensor in the sixth, so the last eight rounds
    # together may fault at most one round's worth, where glibc as it comes faults eight.
    assert sum(batch[-8:]) < pages


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_service_reuses_an_analysis_batchs_blocks() -> None:
    """Arrays of a few megabytes, as a service batch of 4 makes: the service's policy takes
    them from the heap again, where its former flat-heap policy mapped them every round."""
    floats = 1_500_000  # 6 MB a tensor
    pages = 2 * 4 * floats // 4096
    flat, service = _faults("flat", floats), _faults("service", floats)
    assert min(flat[-8:]) > pages // 2
    assert sum(service[-8:]) < pages

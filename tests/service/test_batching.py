"""The micro-batcher on its own: a plain function stands in for the pipeline's batch."""

import asyncio
import threading
import time

import pytest

from assistant.service.batching import MicroBatcher
from assistant.service.errors import BusyError, NotReadyError


class Doubler:
    """Doubles each item; records the batches; refuses negative numbers."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay = delay

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if any(i < 0 for i in items):
            raise ValueError(f"negative item in {items}")
        return [2 * i for i in items]


def test_requests_within_the_window_share_a_batch() -> None:
    run = Doubler(delay=0.05)
    sizes: list[int] = []

    async def main() -> list[int]:
        batcher = MicroBatcher(run, max_batch=4, max_wait_s=0.05,
                               on_batch=lambda n, _: sizes.append(n))
        batcher.start()
        try:
            first = await batcher.submit(0)  # alone: runs at once
            rest = await asyncio.gather(*(batcher.submit(i) for i in range(1, 10)))
            return [first, *rest]
        finally:
            await batcher.stop()

    assert asyncio.run(main()) == [2 * i for i in range(10)]
    assert run.batches[0] == [0]
    assert all(len(b) <= 4 for b in run.batches) and max(len(b) for b in run.batches) > 1
    assert sorted(i for b in run.batches for i in b) == list(range(10))
    assert sizes == [len(b) for b in run.batches]
    assert run.threads and all(name.startswith("batch-worker") for name in run.threads)


def test_a_bad_item_fails_only_its_own_request() -> None:
    run = Doubler(delay=0.02)

    async def main() -> list[int | BaseException]:
        batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.05)
        batcher.start()
        try:
            await batcher.submit(100)  # the next batch gathers under "load"
            await asyncio.gather(batcher.submit(101), batcher.submit(102))
            return await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 2)),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError)
    assert [1, -1, 2] in run.batches  # batched together, then retried one at a time
    assert run.batches[-3:] == [[1], [-1], [2]]


def test_a_full_queue_is_busy_and_a_stopped_batcher_not_ready() -> None:
    async def main() -> None:
        batcher = MicroBatcher(Doubler(delay=0.2), max_batch=1, max_queued=1)
        with pytest.raises(NotReadyError):
            await batcher.submit(1)
        batcher.start()
        running = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)  # taken by the worker: the queue is empty again
        queued = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0)
        with pytest.raises(BusyError, match="already waiting"):
            await batcher.submit(3)
        assert await running == 2 and await queued == 4
        await batcher.stop()
        with pytest.raises(NotReadyError):
            await batcher.submit(4)

    asyncio.run(main())


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Doubler(), max_batch=0)


class Overlap:
    """Sleeps per batch and records how many batches ran at the same moment."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        return [2 * i for i in items]


@pytest.mark.parametrize("in_flight", [1, 2])
def test_in_flight_bounds_the_batches_running_at_once(in_flight: int) -> None:
    run = Overlap(delay=0.05)

    async def main() -> list[int]:
        batcher = MicroBatcher(run, max_batch=2, max_wait_s=0.0, in_flight=in_flight)
        batcher.start()
        try:
            return list(await asyncio.gather(*(batcher.submit(i) for i in range(12))))
        finally:
            await batcher.stop()

    assert asyncio.run(main()) == [2 * i for i in range(12)]
    assert run.most == in_flight
    with pytest.raises(ValueError, match="in_flight"):
        MicroBatcher(run, in_flight=0)

"""Micro-batching: requests that arrive within a few milliseconds share one model batch.

One asyncio task gathers jobs from a bounded queue, up to ``max_batch``: jobs queued while
the model was busy join the next batch without waiting, and, under load (the last batch
held more than one job), the first job waits at most ``max_wait_s`` for others. A lone
request after a quiet spell is not kept waiting for company that is not coming. Batches run
in worker threads off the event loop, at most ``in_flight`` at once: with 2, a second batch
gathers and runs while the first is still in its per-image work (decoding, head geometry,
the overlay PNG), which batching does not share and which holds one core.
A batch that raises is run again one job at a time, so that one bad image fails only its
own request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from assistant.service.errors import BusyError, NotReadyError

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Job(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out] = field(repr=False)


class MicroBatcher(Generic[In, Out]):
    """``await submit(item)`` -> ``run([... item ...])``'s result for it.

    ``run`` takes a list of items and returns one result per item, in order; it runs in a
    worker thread. ``on_batch(size, seconds)`` is told of every batch run.
    """

    def __init__(self, run: Callable[[list[In]], Sequence[Out]], max_batch: int = 16,
                 max_wait_s: float = 0.005, max_queued: int = 64,
                 on_batch: Callable[[int, float], None] | None = None,
                 in_flight: int = 1, what: str = "analyses") -> None:
        if max_batch < 1 or max_wait_s < 0 or max_queued < 1 or in_flight < 1:
            raise ValueError(f"need max_batch >= 1, max_wait_s >= 0, max_queued >= 1 and "
                             f"in_flight >= 1; got {max_batch}, {max_wait_s}, {max_queued}, "
                             f"{in_flight}")
        self.run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queued = max_queued
        self.on_batch = on_batch
        self.in_flight = in_flight
        self.what = what  # what the jobs are, for the busy and not-ready messages
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[_Job[In, Out]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._last_size = 0  # jobs in the last batch: > 1 means requests are overlapping

    def start(self) -> None:
        """Start the gathering task (call from the event loop)."""
        self._queue = asyncio.Queue(self.max_queued)
        self._executor = ThreadPoolExecutor(self.in_flight, thread_name_prefix="batch-worker")
        self._slots = asyncio.Semaphore(self.in_flight)
        self._task = asyncio.create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop gathering; jobs still queued fail with ``NotReadyError``."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(NotReadyError("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, item: In) -> Out:
        if self._queue is None or self._task is None or self._task.done():
            raise NotReadyError(f"the worker for {self.what} is not running")
        job: _Job[In, Out] = _Job(item, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise BusyError(f"{self.max_queued} {self.what} are already waiting for the model: "
                            "retry shortly") from None
        return await job.future

    async def _gather(self, queue: asyncio.Queue[_Job[In, Out]]) -> list[_Job[In, Out]]:
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.max_wait_s if self._last_size > 1 else 0.0)
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        self._last_size = len(batch)
        return [job for job in batch if not job.future.done()]  # cancelled: client gone

    async def _loop(self) -> None:
        assert self._queue is not None and self._slots is not None
        while True:
            await self._slots.acquire()  # a worker is free: gather its batch now
            try:
                batch = await self._gather(self._queue)
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._dispatch(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _dispatch(self, batch: list[_Job[In, Out]]) -> None:
        assert self._slots is not None
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run_batch, [job.item for job in batch])
        finally:
            self._slots.release()
        for job, result in zip(batch, results, strict=True):
            if job.future.done():
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def _run_batch(self, items: list[In]) -> list[Out | BaseException]:
        """In the worker thread: the batch's results, or each item's own exception."""
        start = time.perf_counter()
        try:
            results: list[Out | BaseException] = list(self.run(items))
        except Exception as exc:
            if len(items) == 1:
                results = [exc]
            else:
                log.info("a batch of %d failed (%s): running its items one at a time",
                         len(items), type(exc).__name__)
                results = [self._run_one(item) for item in items]
        if self.on_batch is not None:
            self.on_batch(len(items), time.perf_counter() - start)
        return results

    def _run_one(self, item: In) -> Out | BaseException:
        try:
            return self.run([item])[0]
        except Exception as exc:
            return exc

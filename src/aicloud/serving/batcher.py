"""The dynamic batcher: concurrent requests are grouped into one model call.

    batcher = DynamicBatcher(run_batch, max_batch_size=8, max_wait_ms=2, max_queue=256, timeout_s=30)
    result = await batcher.submit(item)          # from any request handler on the event loop

Semantics (docs/serving.md):

* a request waits in a bounded FIFO queue; when ``max_queue`` items are waiting, :meth:`submit` raises
  :class:`QueueFullError` (503, ``Retry-After``);
* a batch closes when it holds ``max_batch_size`` units (an item's ``size``, e.g. its rows; 1 by
  default) or ``max_wait_ms`` after its FIRST item was submitted, whichever comes first; when that
  item arrived while the previous batch ran, the wait counts from the end of that batch instead
  (otherwise the requests queued behind a running batch fire at once, without the clients the
  batch just answered, and batches lock into uneven pairs such as 4 + 28 under steady load). It never
  exceeds ``max_batch_size``, except that one item bigger than that runs alone;
* a batch collected right after a worker freed closes early, before ``max_wait_ms``, once it holds
  what was queued when the worker freed plus as many units as the batch that just ended (the
  clients that batch answered, back with their next request): under a closed loop of 8 clients a
  batch closes when the 8th arrives instead of waiting out ``max_wait_ms`` for requests that cannot
  come. It closes early only at a size at least that of the batch before it, so batches still grow
  with the load; a first request that comes more than ``max_wait_ms`` after the last free (an idle
  replica) waits the full ``max_wait_ms``. ``max_wait_ms = 0`` is
  "natural" batching: a batch is whatever is queued when the worker is free, so a lone request pays no
  wait and requests that arrive while a batch runs are grouped into the next one;
* batches run in ``workers`` worker threads (1 by default: one batch at a time, as model calls are CPU
  bound and use their own intra-op threads), so the event loop keeps accepting requests meanwhile.
  With ``workers`` > 1 the next batch is collected while the others run, and a batch that closes
  while other workers are idle takes only its share of what waits (32 queued, 2 idle workers: 16
  each), so that the workers run side by side rather than one of them running everything; give each
  worker fewer intra-op threads (a deployment's ``batch_workers`` splits its ``cpus`` among them);
* one bad item fails only its own request: ``run_batch`` may put an ``Exception`` instance in an
  item's slot, and when ``run_batch`` raises, the batch is run again item by item, so that only the
  items that raise alone fail;
* a request that waits longer than ``timeout_s`` in total raises :class:`RequestTimeoutError` (504);
* a cancelled :meth:`submit` (the client disconnected, or a timeout) removes its item from the queue,
  or, when its batch already runs, discards the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from aicloud.errors import AicloudError, UnavailableError

log = logging.getLogger("aicloud.serving")


class QueueFullError(UnavailableError):
    """The replica's request queue is full: retry after ``retry_after`` seconds (503)."""

    code = "queue_full"

    def __init__(self, max_queue: int, retry_after: float = 1.0) -> None:
        super().__init__(
            f"the replica's queue is full ({max_queue} requests waiting); retry later or add replicas",
            details={"max_queue": max_queue, "retry_after": retry_after},
        )
        self.retry_after = retry_after


class RequestTimeoutError(AicloudError):
    """The request was not answered within the deployment's ``timeout_s`` (504)."""

    code = "timeout"
    status_code = 504

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"the request was not answered within {timeout_s:g} s (the deployment's timeout_s)",
            details={"timeout_s": timeout_s},
        )


@dataclass(eq=False, slots=True)
class BatchItem:
    """One queued request: its value, its size in units, and the future its result lands in."""

    value: Any
    size: int
    future: asyncio.Future[Any]
    enqueued: float
    timer: asyncio.TimerHandle | None = None


BatchObserver = Callable[[int, list[float], float], None]
"""Called after each batch with its size (units), each item's queue time and the model call's time,
in seconds."""


class DynamicBatcher:
    """Groups concurrent :meth:`submit` calls into calls of ``run_batch`` (see the module docstring)."""

    def __init__(
        self,
        run_batch: Callable[[list[Any]], list[Any]],
        max_batch_size: int = 8,
        max_wait_ms: float = 0.0,
        max_queue: int = 1024,
        timeout_s: float = 60.0,
        *,
        workers: int = 1,
        on_batch: BatchObserver | None = None,
        name: str = "batch",
    ) -> None:
        if not callable(run_batch):
            raise TypeError("run_batch must be a callable taking a list of inputs and returning a list")
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0 (0: no wait, natural batching), got {max_wait_ms!r}")
        if not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be an int >= 1, got {max_queue!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.workers = workers
        self.on_batch = on_batch
        self._queue: deque[BatchItem] = deque()
        self._units = 0  # units waiting in the queue
        self._running = 0  # batches in the worker threads
        self._free_since = 0.0  # when a worker last became free
        self._expect = max_batch_size  # a batch collected right after a worker freed closes at this
        self._waiter: asyncio.Future[None] | None = None  # the collector sleeps on it
        self._need = 1  # queued units that wake the collector early (0: only a free worker does)
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"aicloud-{name}")
        self._closed = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, value: Any, size: int = 1) -> Any:
        """Queue ``value`` and wait for its result (re-raises its own exception)."""
        item = self.enqueue(value, size)
        try:
            return await item.future
        except asyncio.CancelledError:
            self.discard(item)
            raise

    def enqueue(self, value: Any, size: int = 1) -> BatchItem:
        """Queue ``value`` and return its item at once: await ``item.future`` for the result (it
        fails with :class:`RequestTimeoutError` after ``timeout_s``); :meth:`discard` drops it."""
        if self._closed:
            raise UnavailableError("the replica is shutting down")
        if len(self._queue) >= self.max_queue:
            raise QueueFullError(self.max_queue)
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._collect(), name="aicloud-batcher")
        item = BatchItem(value, max(1, int(size)), loop.create_future(), time.perf_counter())
        item.timer = loop.call_later(self.timeout_s, self._expire, item)
        self._queue.append(item)
        self._units += item.size
        if self._need and self._units >= self._need:
            self._wake()
        return item

    def discard(self, item: BatchItem, error: BaseException | None = None) -> None:
        """Drop ``item``: out of the queue, or, when its batch already runs, its result is dropped.
        Its future fails with ``error``, or is cancelled when no error is given."""
        try:
            self._queue.remove(item)
            self._units -= item.size
        except ValueError:
            pass
        if item.timer is not None:
            item.timer.cancel()
        if not item.future.done():
            if error is None:
                item.future.cancel()
            else:
                item.future.set_exception(error)

    def _expire(self, item: BatchItem) -> None:
        self.discard(item, RequestTimeoutError(self.timeout_s))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _sleep(self, need: int, timeout: float | None = None) -> None:
        """Sleep until ``need`` units are queued (0: until a worker frees), or ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._need = need
        timer = loop.call_later(timeout, self._wake) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            self._need = 0
            if timer is not None:
                timer.cancel()

    def _pop(self) -> BatchItem:
        item = self._queue.popleft()
        self._units -= item.size
        return item

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self.max_batch_size
        while True:
            while self._running >= self.workers:
                await self._sleep(0)
            while not self._queue:
                await self._sleep(1)
            first = self._pop()
            if first.future.done():
                continue
            batch, units = [first], first.size
            deadline = max(first.enqueued, self._free_since) + self.max_wait_s
            idle_before = first.enqueued - self._free_since > self.max_wait_s  # no answered clients due
            expect = limit if idle_before else min(limit, self._expect)
            while units < limit:
                if self._queue:
                    nxt = self._queue[0]
                    if nxt.future.done():
                        self._pop()
                        continue
                    if units + nxt.size > limit:
                        break
                    batch.append(self._pop())
                    units += nxt.size
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or units >= expect:
                    break
                await self._sleep(expect - units, remaining)
            idle = self.workers - self._running
            if idle > 1:  # share what waits among the idle workers, rather than one runs it all
                share = -(-(units + self._units) // idle)
                while units > share and len(batch) > 1:
                    back = batch.pop()
                    units -= back.size
                    self._queue.appendleft(back)
                    self._units += back.size
            live = [it for it in batch if not it.future.done()]
            if not live:
                continue
            self._running += 1
            started = time.perf_counter()
            running = loop.run_in_executor(self._executor, self._run_timed, [it.value for it in live])
            running.add_done_callback(partial(self._finish, live, started))

    def _finish(
        self, live: list[BatchItem], started: float, running: asyncio.Future[tuple[list[Any], float]]
    ) -> None:
        """On the loop, when a batch ends: hand each request its result, free the worker."""
        self._running -= 1
        self._free_since = time.perf_counter()
        units = sum(it.size for it in live)
        self._expect = self._units + units  # queued now + the answered clients coming back
        self._wake()
        try:
            results, seconds = running.result()
        except BaseException:  # cancelled at shutdown (or the worker thread died)
            results, seconds = [UnavailableError("the replica is shutting down")] * len(live), 0.0
        for it, result in zip(live, results, strict=True):
            if it.timer is not None:
                it.timer.cancel()
            if it.future.done():
                continue
            if isinstance(result, BaseException):
                it.future.set_exception(result)
            else:
                it.future.set_result(result)
        if self.on_batch is not None:
            try:
                self.on_batch(units, [started - it.enqueued for it in live], seconds)
            except Exception:  # metrics must never break serving
                log.exception("batch observer failed")

    def _run_timed(self, values: list[Any]) -> tuple[list[Any], float]:
        """In a worker thread: :meth:`_run_safely` and the seconds it took."""
        started = time.perf_counter()
        results = self._run_safely(values)
        return results, time.perf_counter() - started

    def _run_safely(self, values: list[Any]) -> list[Any]:
        """``run_batch(values)``; when it raises, each item again alone so only bad items fail."""
        try:
            results = list(self.run_batch(values))
            if len(results) != len(values):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(values)} inputs")
            return results
        except Exception as exc:
            if len(values) == 1:
                return [exc]
        out: list[Any] = []
        for value in values:
            try:
                (result,) = self.run_batch([value])
                out.append(result)
            except Exception as exc:
                out.append(exc)
        return out

    async def close(self) -> None:
        """Stop collecting; queued requests fail with 503."""
        self._closed = True
        for item in list(self._queue):
            self.discard(item, UnavailableError("the replica is shutting down"))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

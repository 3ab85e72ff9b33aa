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
  exceeds ``max_batch_size``, except that one item bigger than that runs alone. ``max_wait_ms = 0`` is
  "natural" batching: a batch is whatever is queued when the worker is free, so a lone request pays no
  wait and requests that arrive while a batch runs are grouped into the next one;
* the batch runs in one worker thread (one batch at a time: model calls are CPU bound and use their
  own intra-op threads), so the event loop keeps accepting requests meanwhile;
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
from dataclasses import dataclass, field
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


@dataclass(eq=False)
class _Item:
    value: Any
    size: int
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.perf_counter)


BatchObserver = Callable[[int, list[float]], None]
"""Called after each batch with its size (units) and each item's queue time in seconds."""


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
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"aicloud-{name}")
        self._closed = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, value: Any, size: int = 1) -> Any:
        """Queue ``value`` and wait for its result (re-raises its own exception)."""
        if self._closed:
            raise UnavailableError("the replica is shutting down")
        if len(self._queue) >= self.max_queue:
            raise QueueFullError(self.max_queue)
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._collect(), name="aicloud-batcher")
        assert self._wakeup is not None
        item = _Item(value, max(1, int(size)), loop.create_future())
        self._queue.append(item)
        self._wakeup.set()
        try:
            async with asyncio.timeout(self.timeout_s):
                return await item.future
        except TimeoutError:
            self._discard(item)
            raise RequestTimeoutError(self.timeout_s) from None
        except asyncio.CancelledError:
            self._discard(item)
            raise

    def _discard(self, item: _Item) -> None:
        with contextlib.suppress(ValueError):  # already in a running batch: its result is dropped
            self._queue.remove(item)
        if not item.future.done():
            item.future.cancel()

    async def _collect(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        loop = asyncio.get_running_loop()
        free_since = 0.0  # when the previous batch ended
        while True:
            while not self._queue:
                wakeup.clear()
                await wakeup.wait()
            first = self._queue.popleft()
            if first.future.done():
                continue
            batch, units = [first], first.size
            deadline = max(first.enqueued, free_since) + self.max_wait_s
            while units < self.max_batch_size:
                if self._queue:
                    nxt = self._queue[0]
                    if nxt.future.done():
                        self._queue.popleft()
                        continue
                    if units + nxt.size > self.max_batch_size:
                        break
                    batch.append(self._queue.popleft())
                    units += nxt.size
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                wakeup.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await wakeup.wait()
                except TimeoutError:
                    pass
            live = [it for it in batch if not it.future.done()]
            if not live:
                continue
            started = time.perf_counter()
            results = await loop.run_in_executor(self._executor, self._run_safely, [it.value for it in live])
            free_since = time.perf_counter()
            for it, result in zip(live, results, strict=True):
                if it.future.done():
                    continue
                if isinstance(result, BaseException):
                    it.future.set_exception(result)
                else:
                    it.future.set_result(result)
            if self.on_batch is not None:
                try:
                    self.on_batch(sum(it.size for it in live), [started - it.enqueued for it in live])
                except Exception:  # metrics must never break serving
                    log.exception("batch observer failed")

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
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(UnavailableError("the replica is shutting down"))
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

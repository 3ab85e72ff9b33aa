"""aicloud.serving.batcher: batching, queue bounds, timeouts, cancellation, per-item failures."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from aicloud.serving.batcher import DynamicBatcher, QueueFullError, RequestTimeoutError


class Recorder:
    """A fake run_batch: doubles numbers, records batch sizes, fails on "bad", sleeps on demand."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.delay = delay
        self.gate = gate

    def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        if self.gate is not None:
            self.gate.wait(5)
        if self.delay:
            time.sleep(self.delay)
        if "bad" in items:
            raise ValueError("bad item")
        return [ValueError("slot") if x == "slot-error" else x * 2 for x in items]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_groups_concurrent_requests_and_never_exceeds_max() -> None:
    rec = Recorder(delay=0.01)

    async def main() -> list[Any]:
        b = DynamicBatcher(rec, max_batch_size=4, max_wait_ms=20, max_queue=100, timeout_s=5)
        out = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.close()
        return out

    assert run(main()) == [i * 2 for i in range(10)]
    assert max(len(b) for b in rec.batches) == 4
    assert sum(len(b) for b in rec.batches) == 10
    assert len(rec.batches) == 3


def test_batch_closes_max_wait_after_first_item() -> None:
    rec = Recorder()

    async def main() -> float:
        b = DynamicBatcher(rec, max_batch_size=8, max_wait_ms=50, timeout_s=5)
        started = time.perf_counter()
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(b.submit(2))
        await asyncio.gather(first, second)
        elapsed = time.perf_counter() - started
        await b.close()
        return elapsed

    elapsed = run(main())
    assert rec.batches == [[1, 2]]  # both in one batch: the second came within the wait
    assert 0.045 <= elapsed < 0.5


def test_requests_queued_behind_a_running_batch_get_a_fresh_wait() -> None:
    """An item that waited through the previous batch does not fire alone the moment that batch
    ends: requests answered by that batch come back within the wait and join it."""
    gate = threading.Event()
    rec = Recorder(gate=gate)

    async def main() -> None:
        b = DynamicBatcher(rec, max_batch_size=8, max_wait_ms=200, timeout_s=5)
        first = asyncio.ensure_future(b.submit(1))
        while not rec.batches:  # batch [1] runs (and blocks on the gate)
            await asyncio.sleep(0.005)
        second = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0.3)  # longer than the wait: 2's own deadline has passed
        gate.set()
        await first
        third = asyncio.ensure_future(b.submit(3))  # the client batch [1] answered, back at once
        await asyncio.gather(second, third)
        await b.close()

    run(main())
    assert rec.batches == [[1], [2, 3]]


def test_a_closed_loop_batch_closes_when_the_answered_clients_are_back() -> None:
    """Three clients in a closed loop: after their batch of 3 is answered, the next batch closes the
    moment the third is back, not max_wait_ms (here 2 s) later."""
    rec = Recorder()

    async def client(b: DynamicBatcher, k: int, rounds: int) -> None:
        for i in range(rounds):
            await b.submit(10 * k + i)

    async def main() -> float:
        b = DynamicBatcher(rec, max_batch_size=32, max_wait_ms=2000, timeout_s=10)
        started = time.perf_counter()
        await asyncio.gather(*(client(b, k, 4) for k in range(3)))
        elapsed = time.perf_counter() - started
        await b.close()
        return elapsed

    elapsed = run(main())
    assert [sorted(batch) for batch in rec.batches] == [[10 * k + i for k in range(3)] for i in range(4)]
    assert elapsed < 2.0 + 1.0  # only the first batch waited out the 2 s (nothing was answered yet)


def test_a_request_after_an_idle_spell_waits_the_full_window() -> None:
    """The early close applies only right after a batch ended: a request that comes to an idle
    replica (more than max_wait_ms after the last batch) waits the full window for company."""
    rec = Recorder()

    async def main() -> None:
        b = DynamicBatcher(rec, max_batch_size=8, max_wait_ms=100, timeout_s=5)
        await b.submit(1)  # a batch of 1 ends: a next batch right after it would close at 1
        await asyncio.sleep(0.25)  # idle for longer than the window
        first = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0.03)
        await asyncio.gather(first, b.submit(3))
        await b.close()

    run(main())
    assert rec.batches == [[1], [2, 3]]


def test_zero_wait_runs_a_lone_request_at_once() -> None:
    rec = Recorder()

    async def lone(max_wait_ms: float) -> float:
        b = DynamicBatcher(rec, max_batch_size=8, max_wait_ms=max_wait_ms, timeout_s=5)
        started = time.perf_counter()
        assert await b.submit(3) == 6
        elapsed = time.perf_counter() - started
        await b.close()
        return elapsed

    # the behaviour, not a speed: a lone request waits the window for company (1.5 s here),
    # and with no window it does not wait at all (a loaded machine answers well within a second)
    assert run(lone(1500)) >= 1.4
    assert run(lone(0)) < 1.0


def test_sizes_count_rows_and_a_big_item_runs_alone() -> None:
    rec = Recorder()

    async def main() -> None:
        b = DynamicBatcher(rec, max_batch_size=4, max_wait_ms=10, timeout_s=5)
        await asyncio.gather(b.submit(1, size=3), b.submit(2, size=3), b.submit(3, size=9))
        await b.close()

    run(main())
    assert rec.batches == [[1], [2], [3]]


def test_one_bad_item_fails_only_its_request() -> None:
    rec = Recorder()

    async def main() -> list[Any]:
        b = DynamicBatcher(rec, max_batch_size=8, max_wait_ms=20, timeout_s=5)
        out = await asyncio.gather(
            b.submit(1), b.submit("bad"), b.submit(2), b.submit("slot-error"), return_exceptions=True
        )
        await b.close()
        return out

    out = run(main())
    assert out[0] == 2 and out[2] == 4
    assert isinstance(out[1], ValueError) and str(out[1]) == "bad item"
    assert isinstance(out[3], ValueError) and str(out[3]) == "slot"


def test_full_queue_raises_queue_full() -> None:
    gate = threading.Event()
    rec = Recorder(gate=gate)

    async def main() -> None:
        b = DynamicBatcher(rec, max_batch_size=1, max_wait_ms=0, max_queue=2, timeout_s=5)
        running = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.02)  # item 0 is in the worker, blocked on the gate
        waiting = [asyncio.ensure_future(b.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError) as info:
            await b.submit(3)
        assert info.value.status_code == 503 and info.value.retry_after >= 1
        gate.set()
        assert await running == 0
        assert [await w for w in waiting] == [2, 4]
        await b.close()

    run(main())


def test_timeout_raises_504_and_drops_the_item() -> None:
    gate = threading.Event()
    rec = Recorder(gate=gate)

    async def main() -> None:
        b = DynamicBatcher(rec, max_batch_size=1, max_wait_ms=0, max_queue=10, timeout_s=0.05)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.01)
        with pytest.raises(RequestTimeoutError) as info:
            await b.submit(1)  # waits behind the blocked batch
        assert info.value.status_code == 504
        assert b.queued == 0  # removed from the queue
        gate.set()
        with pytest.raises(RequestTimeoutError):
            await first
        await asyncio.sleep(0.02)
        await b.close()

    run(main())
    assert rec.batches == [[0]]  # item 1 never ran


def test_cancelled_request_is_removed_from_the_queue() -> None:
    gate = threading.Event()
    rec = Recorder(gate=gate)

    async def main() -> None:
        b = DynamicBatcher(rec, max_batch_size=4, max_wait_ms=0, max_queue=10, timeout_s=5)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(b.submit(1))
        kept = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert b.queued == 1
        gate.set()
        assert await first == 0 and await kept == 4
        await b.close()

    run(main())
    assert rec.batches == [[0], [2]]


def test_observer_sees_sizes_and_queue_times() -> None:
    seen: list[tuple[int, list[float], float]] = []

    async def main() -> None:
        b = DynamicBatcher(
            Recorder(),
            max_batch_size=8,
            max_wait_ms=5,
            timeout_s=5,
            on_batch=lambda n, q, t: seen.append((n, q, t)),
        )
        await asyncio.gather(b.submit(1), b.submit(2, size=2))
        await b.close()

    run(main())
    assert seen and seen[0][0] == 3 and len(seen[0][1]) == 2 and all(q >= 0 for q in seen[0][1])
    assert seen[0][2] > 0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_batch_size": 0}, {"max_wait_ms": -1}, {"max_queue": 0}, {"timeout_s": 0}, {"workers": 0}],
)
def test_bad_arguments_are_refused_eagerly(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DynamicBatcher(Recorder(), **kwargs)


def test_workers_run_batches_side_by_side() -> None:
    """With workers=2 the next batch is collected and started while the first still runs."""
    gate = threading.Event()
    running: list[int] = []
    peak = [0]
    lock = threading.Lock()

    def run_batch(items: list[Any]) -> list[Any]:
        with lock:
            running.append(1)
            peak[0] = max(peak[0], len(running))
        gate.wait(5)
        with lock:
            running.pop()
        return [x * 2 for x in items]

    async def main() -> list[Any]:
        b = DynamicBatcher(run_batch, max_batch_size=2, max_wait_ms=0, timeout_s=5, workers=2)
        tasks = [asyncio.ensure_future(b.submit(i)) for i in range(6)]
        deadline = time.perf_counter() + 2
        while peak[0] < 2 and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        assert b.queued > 0  # both workers busy: the rest waits, no third batch starts
        gate.set()
        out = await asyncio.gather(*tasks)
        await b.close()
        return out

    assert run(main()) == [i * 2 for i in range(6)]
    assert peak[0] == 2


def test_one_worker_runs_one_batch_at_a_time() -> None:
    seen = []
    lock = threading.Lock()
    active = [0]

    def run_batch(items: list[Any]) -> list[Any]:
        with lock:
            active[0] += 1
            seen.append(active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return items

    async def main() -> None:
        b = DynamicBatcher(run_batch, max_batch_size=1, max_wait_ms=0, timeout_s=5)
        await asyncio.gather(*(b.submit(i) for i in range(5)))
        await b.close()

    run(main())
    assert seen == [1] * 5


@pytest.mark.parametrize("receive_kind", ["asgi", "channel"])
def test_a_disconnected_client_drops_its_queued_work(receive_kind: str) -> None:
    """Over HTTP ``submit`` watches ``receive()`` with a task; the gateway channel's receive offers
    the disconnect as a future (``disconnected()``), watched with a callback."""
    from aicloud.serving.asgi import ClientGone, submit
    from aicloud.serving.channel import _Receive

    gate = threading.Event()
    rec = Recorder(gate=gate)

    async def main() -> None:
        b = DynamicBatcher(rec, max_batch_size=1, max_wait_ms=0, timeout_s=5)
        first = asyncio.ensure_future(b.submit(0))
        while not rec.batches:
            await asyncio.sleep(0.005)
        hang_up = asyncio.Event()

        async def asgi_receive() -> dict[str, Any]:
            await hang_up.wait()
            return {"type": "http.disconnect"}

        channel_receive = _Receive(b"")
        assert (await channel_receive())["type"] == "http.request"
        receive = asgi_receive if receive_kind == "asgi" else channel_receive
        gone = asyncio.ensure_future(submit(receive, b, 1, 1))
        await asyncio.sleep(0.01)
        assert b.queued == 1
        hang_up.set()
        channel_receive.disconnected().set_result(None)
        with pytest.raises(ClientGone):
            await gone
        assert b.queued == 0
        gate.set()
        assert await first == 0
        kept = _Receive(b"")  # a caller that stays gets its answer
        assert await submit(kept, b, 2, 1) == 4  # the recorder doubles
        await b.close()

    run(main())
    assert rec.batches == [[0], [2]]  # the gone client's item never ran


def test_idle_workers_share_what_waits() -> None:
    """32 requests that arrive together on 2 idle workers run as 2 batches of 16 side by side, not
    as one batch of 32 with the other worker idle."""
    rec = Recorder(delay=0.05)

    async def main() -> None:
        b = DynamicBatcher(rec, max_batch_size=32, max_wait_ms=20, timeout_s=5, workers=2)
        await asyncio.gather(*(b.submit(i) for i in range(32)))
        await asyncio.gather(*(b.submit(i) for i in range(3)))
        await b.close()

    run(main())
    assert sorted(len(x) for x in rec.batches[:2]) == [16, 16]
    assert sorted(len(x) for x in rec.batches[2:]) == [1, 2]
    assert sorted(x for b in rec.batches[:2] for x in b) == list(range(32))

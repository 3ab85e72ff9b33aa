"""aicloud.wire.http1: each response leaves in one write, a streamed head is not held back (on a
recording transport; under a real server in tests/integration/test_serving_http1_server.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aicloud.wire.http1 import JOIN_LIMIT, HeadHolder


class Recorder:
    """A transport that records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


def with_holder(check: Callable[[Recorder, HeadHolder], Awaitable[None]]) -> None:
    """Run ``check`` in an event loop with a recording transport and a holder around it."""

    async def main() -> None:
        t = Recorder()
        await check(t, HeadHolder(t, asyncio.get_running_loop()))  # type: ignore[arg-type]

    asyncio.run(main())


def test_the_head_waits_for_the_body_and_both_leave_in_one_write() -> None:
    with_holder(_the_head_waits_for_the_body_and_both_leave_in_one_write)


async def _the_head_waits_for_the_body_and_both_leave_in_one_write(t: Recorder, holder: HeadHolder) -> None:
    holder.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert t.writes == []
    holder.write(b"{}")
    assert t.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    holder.write(b"more")  # later chunks of a streamed body pass straight through
    assert t.writes[-1] == b"more"
    await asyncio.sleep(0)  # the flush scheduled for the head finds nothing held
    assert len(t.writes) == 2
    assert holder.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the transport's


def test_an_interim_answer_passes_and_the_real_head_is_held() -> None:
    with_holder(_an_interim_answer_passes_and_the_real_head_is_held)


async def _an_interim_answer_passes_and_the_real_head_is_held(t: Recorder, holder: HeadHolder) -> None:
    holder.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert t.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    holder.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    holder.write(b"{}")
    assert t.writes[1:] == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


def test_a_head_whose_body_does_not_follow_goes_at_the_end_of_the_loop_iteration() -> None:
    with_holder(_a_head_whose_body_does_not_follow_goes_at_the_end_of_the_loop_iteration)


async def _a_head_whose_body_does_not_follow_goes_at_the_end_of_the_loop_iteration(
    t: Recorder, holder: HeadHolder
) -> None:
    holder.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await asyncio.sleep(0)
    assert t.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    holder.write(b"5\r\nhello\r\n")
    assert t.writes[-1] == b"5\r\nhello\r\n"


def test_a_large_body_follows_the_head_without_a_copy_and_close_sends_a_held_head() -> None:
    with_holder(_a_large_body_follows_the_head_without_a_copy_and_close_sends_a_held_head)


async def _a_large_body_follows_the_head_without_a_copy_and_close_sends_a_held_head(
    t: Recorder, holder: HeadHolder
) -> None:
    big = b"x" * (JOIN_LIMIT + 1)
    holder.write(b"HEAD\r\n\r\n")
    holder.write(big)
    assert t.writes == [b"HEAD\r\n\r\n", big]
    other = Recorder()
    held = HeadHolder(other, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
    held.close()
    assert other.writes == [b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"]
    assert other.closed

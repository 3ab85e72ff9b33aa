"""EdgeChanges: the controller wakes the long-polls of the nodes whose assignments changed; and the
address and health helpers of controllers/edge_placement.py."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

from aicloud.controllers.edge_placement import EdgeChanges, node_online, replica_url
from aicloud.entities.edge import EdgeNode


def test_a_change_from_another_thread_wakes_the_nodes_poll_only() -> None:
    changes = EdgeChanges()

    async def main() -> tuple[float, float]:
        seq_a, seq_b = changes.seq("a"), changes.seq("b")
        threading.Timer(0.2, changes.notify, args=(["a"],)).start()
        started = time.monotonic()
        polls = [
            asyncio.ensure_future(changes.wait("a", seq_a, 20)),
            asyncio.ensure_future(changes.wait("b", seq_b, 1)),
        ]
        await asyncio.sleep(0.05)
        assert changes.polling("a") and changes.polling("b")
        await asyncio.gather(*polls)
        return time.monotonic() - started, changes.seq("a") - seq_a

    took, moved = asyncio.run(main())
    assert moved == 1 and took < 10  # woken, not timed out (b timed out after 1 s)
    assert not changes.polling("a") and not changes.polling("b")


def test_a_change_before_the_wait_returns_at_once() -> None:
    changes = EdgeChanges()
    seq = changes.seq("a")
    changes.notify(["a"])
    started = time.monotonic()
    asyncio.run(changes.wait("a", seq, 20))
    assert time.monotonic() - started < 10


def test_a_node_is_online_while_it_calls_or_polls() -> None:
    now = datetime.now(UTC)
    node = EdgeNode("edn_1", "ws", "pos", "tok", now, last_seen_at=now - timedelta(seconds=5))
    assert node_online(node, 30) and not node_online(node, 2)
    assert not node_online(EdgeNode("edn_2", "ws", "pos2", "tok2", now), 30)  # never called


def test_a_replica_url_is_the_address_host_and_the_replica_port() -> None:
    assert replica_url("http://10.0.0.5", 18100) == "http://10.0.0.5:18100"
    assert replica_url("http://pos.local:8080", 18100) == "http://pos.local:18100"
    assert replica_url("http://[fd00::1]", 9) == "http://[fd00::1]:9"
    assert replica_url(None, 9) is None and replica_url("http://h", 0) is None


def test_closing_answers_every_open_poll_and_later_ones_at_once() -> None:
    changes = EdgeChanges()

    async def main() -> None:
        polls = [asyncio.ensure_future(changes.wait(n, changes.seq(n), 20)) for n in ("a", "b")]
        await asyncio.sleep(0.05)
        threading.Thread(target=changes.close).start()  # as the server's signal handler does
        await asyncio.wait_for(asyncio.gather(*polls), 10)
        await asyncio.wait_for(changes.wait("c", changes.seq("c"), 20), 10)

    asyncio.run(main())
    assert changes.closed and not changes.polling("a")

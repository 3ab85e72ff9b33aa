"""The endpoint proxy over real HTTP: the gateway's raw ASGI app and echo replicas on uvicorn in threads."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from gateway_helpers import OTHER_WS, WS, World, error_of, make_world, slot

from aicloud.auth import PrincipalCache
from aicloud.entities import Role
from aicloud.wire.tcp import free_port

from helpers import assert_oip_error


@pytest.fixture(scope="module", params=["channel", "http"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    """Every test runs twice: buffered requests over the replica channel (the default), and all of
    them over plain HTTP/1.1 (``Gateway(channel=False)``)."""
    with make_world(channel=request.param == "channel") as w:
        yield w


@pytest.fixture(autouse=True)
def _fresh(world: World) -> None:
    for ep in world.registry.all():
        world.registry.remove(ep.deployment_id)
    world.registry.on_demand = lambda: None
    world.a.seen.clear()
    world.b.seen.clear()


# -- auth -----------------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_401(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    r = httpx.post(world.url("alpha", "predict"), json={})
    assert r.status_code == 401 and error_of(r)["code"] == "unauthenticated"
    assert_oip_error(httpx.get(world.url("alpha", "v2/health/ready")), 401)  # the protocol's shape
    r = httpx.get(world.url("alpha", "v2"), headers={"Authorization": "Bearer aic_nope"})
    assert_oip_error(r, 401)
    forged = world.token[:-4] + "AAAA"
    r = httpx.get(world.url("alpha", "v2"), headers=world.auth(forged))
    assert r.status_code == 401
    assert world.a.seen == []


def test_workspace_token_of_any_role_calls_its_endpoints(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    for role in Role:
        r = httpx.post(
            world.url("alpha", "predict"),
            json={"inputs": [[1]]},
            headers=world.auth(world.store.mint(WS, role)),
        )
        assert r.status_code == 200, r.text
    other = world.store.mint(OTHER_WS, Role.ADMIN)
    r = httpx.post(world.url("alpha", "predict"), json={}, headers=world.auth(other))
    assert r.status_code == 404
    err = error_of(r)
    assert err["code"] == "not_found" and "alpha" in err["message"]


def test_endpoint_token_is_limited_to_its_endpoint(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    world.endpoint("beta", slot("r2", world.b_url))
    scoped = world.store.mint(WS, Role.VIEWER, scope="endpoint:alpha")
    assert httpx.post(world.url("alpha", "predict"), json={}, headers=world.auth(scoped)).status_code == 200
    r = httpx.post(world.url("beta", "predict"), json={}, headers=world.auth(scoped))
    assert r.status_code == 404 and "beta" in error_of(r)["message"]
    assert world.b.seen == []


def test_replica_tokens_cannot_call_endpoints(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    replica = world.store.mint(WS, Role.VIEWER, scope="deployment:dep_0123456789")
    r = httpx.post(world.url("alpha", "predict"), json={}, headers=world.auth(replica))
    assert r.status_code == 403 and error_of(r)["code"] == "permission_denied"


def test_unknown_deployment_is_404_naming_it(world: World) -> None:
    r = httpx.get(world.url("ghost", "predict"), headers=world.auth())
    assert r.status_code == 404
    err = error_of(r)
    assert err["code"] == "not_found" and "ghost" in err["message"]
    assert "ghost" in assert_oip_error(httpx.get(world.url("ghost", "v2"), headers=world.auth()), 404)


def test_tokens_are_cached(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    token = world.store.mint(WS)
    assert httpx.get(world.url("alpha", "v2"), headers=world.auth(token)).status_code == 200
    world.store.tokens.rows.clear()  # the database no longer answers for it
    try:
        assert httpx.get(world.url("alpha", "v2"), headers=world.auth(token)).status_code == 200
    finally:
        world.host.principals = PrincipalCache(ttl=60)
        world.token = world.store.mint(WS)


# -- forwarding -----------------------------------------------------------------------------------


def test_replica_key_replaces_the_callers_token_and_path_query_pass(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    r = httpx.get(world.url("alpha", "v2/models/alpha%2Fx/ready?x=1&y=a%20b"), headers=world.auth())
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert "x-replica" not in r.headers  # only the relevant response headers come back
    (seen,) = world.a.seen
    assert seen.authorization == "Bearer key-alpha"
    assert seen.path == "/v2/models/alpha/x/ready"  # uvicorn decodes %2F in scope["path"]
    assert seen.query == "x=1&y=a%20b"
    assert "cookie" not in seen.headers


def test_each_replica_is_called_with_its_own_key(world: World) -> None:
    ep = world.endpoint("keys", slot("r1", world.a_url, key="key-r1"), slot("r2", world.b_url, key="key-r2"))
    assert httpx.get(world.url("keys", "v2"), headers=world.auth()).status_code == 200
    world.registry.set_replica(ep, slot("r1", world.a_url, draining=True))  # a slot update keeps the key
    assert httpx.get(world.url("keys", "v2"), headers=world.auth()).status_code == 200
    world.registry.set_replica(ep, slot("r1", world.a_url))
    world.registry.set_replica(ep, slot("r2", world.b_url, draining=True))
    assert httpx.get(world.url("keys", "v2"), headers=world.auth()).status_code == 200
    assert [s.authorization for s in world.a.seen] == ["Bearer key-r1", "Bearer key-r1"]
    assert [s.authorization for s in world.b.seen] == ["Bearer key-r2"]
    assert "key-r1" not in repr(ep.replicas["r1"])  # a key is a secret: never in a log line


def test_head_is_forwarded(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    r = httpx.head(world.url("alpha", "v2/health/ready"), headers=world.auth())
    assert r.status_code == 200 and r.content == b""
    assert world.a.seen[0].method == "HEAD"


def test_replica_errors_pass_through_unchanged(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    r = httpx.post(world.url("alpha", "predict?status=400"), json={}, headers=world.auth())
    assert r.status_code == 400 and r.json()["replica"] == "a"


def test_binary_tensor_body_is_byte_identical(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    header = b'{"inputs":[{"name":"x","shape":[4],"datatype":"BYTES","parameters":{"binary_data_size":260}}]}'
    body = header + os.urandom(260)
    r = httpx.post(
        world.url("alpha", "echo"),
        content=body,
        headers={
            **world.auth(),
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["inference-header-content-length"] == str(len(header))
    assert r.headers["content-type"] == "application/octet-stream"


def test_large_bodies_stream_both_ways(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    body = os.urandom(20 * 1024 * 1024)
    r = httpx.post(world.url("alpha", "infer"), content=body, headers=world.auth(), timeout=60)
    assert r.status_code == 200
    assert r.json()["length"] == len(body) and r.json()["sha256"] == hashlib.sha256(body).hexdigest()
    with httpx.stream(
        "POST",
        world.url("alpha", "echo"),
        content=iter([body[:7_000_000], body[7_000_000:]]),
        headers=world.auth(),
        timeout=60,
    ) as r:
        assert r.status_code == 200
        got = b"".join(r.iter_bytes())
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    ep = world.registry.get(WS, "alpha")
    assert ep is not None and ep.inflight == 0


def test_least_outstanding_spreads_concurrent_load(world: World) -> None:
    ep = world.endpoint("alpha", slot("r1", world.a_url), slot("r2", world.b_url))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=world.auth(), timeout=30) as client:
            return await asyncio.gather(
                *(client.post(world.url("alpha", "predict?sleep=0.1"), json={}) for _ in range(20))
            )

    rs = asyncio.run(burst())
    assert all(r.status_code == 200 for r in rs)
    assert len(world.a.seen) == 10 and len(world.b.seen) == 10
    assert ep.inflight == 0 and all(s.inflight == 0 for s in ep.replicas.values())
    assert time.monotonic() - ep.last_request < 5


def test_draining_replica_gets_nothing(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url, generation=2, draining=True), slot("r2", world.b_url))
    for _ in range(5):
        assert httpx.get(world.url("alpha", "v2"), headers=world.auth()).json()["replica"] == "b"
    assert world.a.seen == []


# -- cold start -----------------------------------------------------------------------------------


def test_cold_request_is_held_until_a_replica_is_ready(world: World) -> None:
    ep = world.endpoint("cold")
    demanded = threading.Event()
    world.registry.on_demand = demanded.set

    def controller() -> None:
        assert demanded.wait(10)
        assert ep.start_requested and ep.waiting == 1
        time.sleep(0.3)
        world.registry.set_replica(ep, slot("r1", world.a_url, key="key-cold"))

    thread = threading.Thread(target=controller)
    thread.start()
    started = time.monotonic()
    r = httpx.post(world.url("cold", "predict"), json={"inputs": []}, headers=world.auth(), timeout=30)
    thread.join()
    assert r.status_code == 200, r.text
    assert r.json()["replica"] == "a"
    assert time.monotonic() - started >= 0.3
    assert ep.waiting == 0 and ep.inflight == 0


def test_hold_timeout_is_503_saying_the_deployment_could_not_start(world: World) -> None:
    ep = world.endpoint("stuck")
    ep.timeout_s = 0.3
    r = httpx.get(world.url("stuck", "predict"), headers=world.auth())
    assert r.status_code == 503
    err = error_of(r)
    assert err["code"] == "unavailable" and "could not start" in err["message"]
    assert ep.waiting == 0 and ep.start_requested


# -- retries --------------------------------------------------------------------------------------


def test_refused_connection_retries_on_another_replica(world: World) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    # The dead replica is newer, so it wins the tie and is tried first.
    ep = world.endpoint("alpha", slot("dead", dead, generation=2), slot("r2", world.b_url))
    r = httpx.post(world.url("alpha", "predict"), json={"inputs": [[1]]}, headers=world.auth())
    assert r.status_code == 200 and r.json()["replica"] == "b"
    big = os.urandom(3 * 1024 * 1024)  # streamed, but not a byte was sent to the dead replica
    world.host.gateway._suspect.clear()
    r = httpx.post(world.url("alpha", "infer"), content=big, headers=world.auth(), timeout=30)
    assert r.status_code == 200 and r.json()["sha256"] == hashlib.sha256(big).hexdigest()
    assert all(s.inflight == 0 for s in ep.replicas.values())


def _hang_up_server() -> tuple[str, socket.socket]:
    """A 'replica' that accepts a connection, reads the request, and closes without answering."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", sock


def test_replica_that_hangs_up_is_retried_elsewhere(world: World) -> None:
    url, sock = _hang_up_server()
    try:
        world.endpoint("alpha", slot("bad", url, generation=2), slot("r2", world.b_url))
        for _ in range(3):
            r = httpx.post(world.url("alpha", "predict"), json={}, headers=world.auth())
            assert r.status_code == 200 and r.json()["replica"] == "b"
    finally:
        sock.close()


def test_only_replica_unreachable_is_503_in_error_shape(world: World) -> None:
    world.endpoint("alpha", slot("dead", f"http://127.0.0.1:{free_port()}"))
    r = httpx.get(world.url("alpha", "predict"), headers=world.auth())
    assert r.status_code == 503
    err = error_of(r)
    assert err["code"] == "unavailable" and "alpha" in err["message"]


# -- the connection pool and the raw ASGI layer ---------------------------------------------------


def test_connections_to_a_replica_are_kept_alive_and_reused(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    with httpx.Client(headers=world.auth()) as h:
        for _ in range(5):
            assert h.post(world.url("alpha", "predict"), json={"inputs": [[1]]}).status_code == 200
    assert len(world.a.seen) == 5
    assert len({s.client for s in world.a.seen}) == 1  # one connection for all five


def test_small_chunked_request_body_is_forwarded(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    r = httpx.post(world.url("alpha", "echo"), content=iter([b"abc", b"", b"def"]), headers=world.auth())
    assert r.status_code == 200 and r.content == b"abcdef"
    assert world.a.seen[0].headers.get("transfer-encoding") == "chunked"


def test_other_methods_and_paths_answer_in_the_error_shape(world: World) -> None:
    world.endpoint("alpha", slot("r1", world.a_url))
    r = httpx.put(world.url("alpha", "predict"), json={}, headers=world.auth())
    assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"
    r = httpx.get(f"{world.gateway.url}/v1/endpoints/alpha", headers=world.auth())
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    assert world.a.seen == []


def test_caller_going_away_stops_a_streamed_answer(world: World) -> None:
    ep = world.endpoint("alpha", slot("r1", world.a_url))
    with httpx.stream("GET", world.url("alpha", "stream"), headers=world.auth(), timeout=30) as r:
        assert r.status_code == 200
        assert next(r.iter_lines()).startswith("tick")
    deadline = time.monotonic() + 20
    while (world.a.disconnects == 0 or ep.inflight) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.a.disconnects == 1  # the gateway hung up on the replica too
    assert ep.inflight == 0


def test_caller_hanging_up_on_a_slow_call_withdraws_it_from_the_replica(world: World) -> None:
    ep = world.endpoint("alpha", slot("r1", world.a_url))
    world.a.disconnects = 0
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(world.url("alpha", "predict?sleep=20"), json={}, headers=world.auth(), timeout=0.6)
    deadline = time.monotonic() + 10
    while (world.a.disconnects == 0 or ep.inflight) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.a.disconnects == 1  # the replica saw it go: its batcher would drop the work
    assert ep.inflight == 0
    r = httpx.post(world.url("alpha", "predict"), json={}, headers=world.auth())
    assert r.status_code == 200  # the hop is still good for the next call

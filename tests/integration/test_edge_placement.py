"""Edge placement, the control plane's side (docs/edge.md, "Placement"): a deployment with
``placement: {edge: {...}}`` gets one replica per matching node, which the test plays through real
HTTP with the node token of a real join: assignments (etag, 304, a long-poll woken by a new
deployment), status reports (the replica turns ready), another node's id (403), a removed node
(401), a node that stops matching, a Service (422), the server's bundle cache, the offline marking,
and the gateway routing to an ``aicloud edge serve`` the test starts as the node would."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_cli import run_cli
from test_edge_bundle import edge_env

from aicloud import Client
from aicloud.testing.server import ServerProcess
from aicloud.wire.tcp import free_port

from helpers import assert_error
from model_files import digits_like, pixel_rows, register

pytestmark = pytest.mark.integration


def node_http(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def assignments(h: httpx.Client, node_id: str, etag: str | None = None, wait: float = 0) -> httpx.Response:
    headers = {"If-None-Match": etag} if etag else {}
    return h.get(f"/api/v1/edge/nodes/{node_id}/assignments", params={"wait": wait}, headers=headers)


def report(h: httpx.Client, node_id: str, body: dict[str, Any]) -> httpx.Response:
    return h.put(f"/api/v1/edge/nodes/{node_id}/status", json=body)


@pytest.fixture
def model_ref(client: Client, tmp_path: Path, unique: Callable[[str], str]) -> str:
    folder, _ = digits_like(tmp_path / "mlp")
    return register(client, folder, unique("edge-m"))


@pytest.mark.timeout(300)
def test_a_placed_deployment_is_assigned_to_the_matching_node_which_reports_it_ready(
    client: Client, server: ServerProcess, http: httpx.Client, model_ref: str, unique: Callable[[str], str]
) -> None:
    site = unique("shop")
    node = client.edge.join(unique("pos"), {"site": site, "zone": "eu"})
    other = client.edge.join(unique("pos"), {"site": unique("elsewhere")})
    node_id = node.node.id
    with node_http(server.url, node.token) as h:
        first = assignments(h, node_id)
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["assignments"] == [] and body["heartbeat_s"] == 10
        assert first.headers["etag"] == body["etag"]
        unchanged = assignments(h, node_id, etag=body["etag"])
        assert unchanged.status_code == 304 and unchanged.content == b""
        assert unchanged.headers["etag"] == body["etag"]

        # a long-poll open while the deployment is created wakes with it, well before its wait
        polled: dict[str, Any] = {}

        def poll() -> None:
            started = time.monotonic()
            polled["response"] = assignments(h, node_id, etag=f'"{body["etag"]}"', wait=30)
            polled["took"] = time.monotonic() - started

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.5)
        name = unique("edge-dep")
        d = client.deployments.create(name, model_ref, placement={"edge": {"site": site}})
        poller.join(40)
        got = polled["response"]
        assert got.status_code == 200, got.text
        assert polled["took"] < 25
        (assigned,) = got.json()["assignments"]
        model, version = model_ref.split(":")
        assert assigned["deployment"] == name and assigned["deployment_id"] == d.info.id
        assert (assigned["model"], assigned["version"], assigned["bundle"]) == (
            model,
            int(version),
            model_ref,
        )
        assert assigned["serve_key"] and assigned["max_batch_size"] == 32 and assigned["threads"] == 1
        etag = got.json()["etag"]
        assert got.headers["etag"] == etag != body["etag"]

        # the node reports it ready: the replica is ready, on that node, and so is the deployment
        ack = report(
            h,
            node_id,
            {
                "address": "http://127.0.0.1",
                "assignments": [
                    {
                        "replica_id": assigned["replica_id"],
                        "state": "ready",
                        "port": 9,
                        "requests": 5,
                        "errors": 1,
                        "latency_s_sum": 0.5,
                    },
                    {"replica_id": "rep_gone", "state": "ready", "port": 10},  # ignored
                ],
            },
        )
        assert ack.status_code == 200, ack.text
        assert ack.json() == {"etag": etag}
        shown = wait_for(
            lambda: (info := client.deployments.get(name).info).status == "ready" and info, "ready"
        )
        (replica,) = shown.replicas
        assert (replica.id, replica.state, replica.node_id) == (assigned["replica_id"], "ready", node_id)
        assert replica.node == node.node.name and shown.desired_replicas == 1
        (listed,) = [n for n in client.edge.nodes() if n.id == node_id]
        assert (listed.status, listed.address, listed.requests, listed.errors) == (
            "online",
            "http://127.0.0.1",
            5,
            1,
        )
        (served,) = client.deployments.get(name).metrics()["versions"]
        assert served["edge"] == {"requests": 5, "errors": 1, "mean_ms": 100.0}

        # an address the gateway must not be sent to is refused, and nothing of the report is kept
        for bad in ("http://169.254.169.254", "http://0.0.0.0", "http://[fe80::1]"):
            assert_error(report(h, node_id, {"address": bad, "assignments": []}), 422)
        assert [n.address for n in client.edge.nodes() if n.id == node_id] == ["http://127.0.0.1"]

        # another node's id is a 403, as for a pull
        assert_error(assignments(h, other.node.id), 403)
        assert_error(report(h, other.node.id, {"assignments": []}), 403)

        # the selector no longer matches: the node loses the assignment, the deployment waits
        client.deployments.get(name).update(placement={"edge": {"site": site, "zone": "us"}})
        gone = wait_for(lambda: assignments(h, node_id).json()["assignments"] == [], "unassigned")
        assert gone
        pending = wait_for(
            lambda: (info := client.deployments.get(name).info).status == "pending" and info, "pending"
        )
        assert "no edge node matches" in (pending.message or "") and pending.replicas == []

    # a removed node's token is refused, its open long-poll too (at once)
    with node_http(server.url, other.token) as h2:
        tag = assignments(h2, other.node.id).json()["etag"]
        waiting: dict[str, Any] = {}

        def wait_removed() -> None:
            started = time.monotonic()
            waiting["response"] = assignments(h2, other.node.id, etag=tag, wait=30)
            waiting["took"] = time.monotonic() - started

        poller = threading.Thread(target=wait_removed)
        poller.start()
        time.sleep(0.5)
        client.edge.remove(other.node.id)
        poller.join(40)
        assert_error(waiting["response"], 401)
        assert waiting["took"] < 25
        assert_error(assignments(h2, other.node.id), 401)
        assert_error(report(h2, other.node.id, {"assignments": []}), 401)
    client.deployments.get(name).delete()


def test_placement_is_refused_for_a_service_and_cannot_switch_sides(
    client: Client, http: httpx.Client, model_ref: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    code = tmp_path / "svc.py"
    code.write_text("from aicloud.serving import Service\nclass S(Service):\n    pass\n")
    digest = client.blobs.upload(code.read_bytes())
    refused = http.post(
        "/api/v1/deployments",
        json={
            "name": unique("svc"),
            "service": {"code": digest, "entrypoint": "svc.py:S"},
            "placement": {"edge": {"site": "shop1"}},
        },
    )
    assert "bundle" in assert_error(refused, 422)["message"]
    unknown = http.post(
        "/api/v1/deployments",
        json={"name": unique("x"), "model": model_ref, "placement": {"edge": {"site": "a"}, "nodes": 2}},
    )
    assert_error(unknown, 422)
    name = unique("edge-dep")
    http.post("/api/v1/deployments", json={"name": name, "model": model_ref, "placement": {"edge": {}}})
    kept = http.patch(f"/api/v1/deployments/{name}", json={"placement": None, "max_batch_size": 8})
    assert kept.status_code == 200  # None in a patch keeps the placement
    assert kept.json()["spec"]["placement"] == {"edge": {}, "replicas": None}
    switched = http.put(f"/api/v1/deployments/{name}", json={"model": model_ref})
    assert "delete it and create it again" in assert_error(switched, 422)["message"]
    assert http.delete(f"/api/v1/deployments/{name}").status_code == 204


@pytest.mark.timeout(300)
def test_a_fleet_pulls_one_cached_bundle(
    client: Client, server: ServerProcess, model_ref: str, unique: Callable[[str], str]
) -> None:
    node = client.edge.join(unique("pos"), {"site": unique("s")})
    cache = server.home / "cache" / "bundles"
    with node_http(server.url, node.token) as h:
        url = f"/api/v1/edge/nodes/{node.node.id}/bundle"
        first = h.post(url, json={"model": model_ref})
        assert first.status_code == 200, first.text
        name, number = model_ref.split(":")
        (version_id,) = [v.id for v in client.models.versions(name) if v.version == int(number)]
        cached = cache / f"{version_id}.bundle"
        assert cached.exists() and cached.stat().st_mode & 0o777 == 0o600
        made = cached.stat().st_mtime_ns, cached.stat().st_ino
        second = h.post(url, json={"model": model_ref})
        assert second.status_code == 200 and second.content == first.content
        assert (cached.stat().st_mtime_ns, cached.stat().st_ino) == made  # not made again
        # a cached file that fails its check is made again, never served
        cached.write_bytes(cached.read_bytes().replace(b"model.onnx", b"model.onnX", 1))
        third = h.post(url, json={"model": model_ref})
        assert third.status_code == 200 and b"model.onnX" not in third.content
        assert third.content == cached.read_bytes() and cached.stat().st_ino != made[1]


@pytest.fixture
def quick_server(make_server: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    yield make_server(env={"AICLOUD_EDGE_OFFLINE_AFTER_S": "3"})


@pytest.mark.timeout(400)
def test_the_gateway_routes_to_a_ready_edge_replica_until_its_node_goes_offline(
    quick_server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    srv = quick_server
    with Client(url=srv.url, token=srv.token) as client:
        folder, names = digits_like(tmp_path / "mlp")
        ref = register(client, folder, "digits")
        rows = pixel_rows(names, 8, seed=3)[names]
        want = client.models.load(ref)(rows).tolist()
        node = client.edge.join("shop1-pos", {"site": "shop1"})
        key = client.workspaces.signing_key().public_key
        client.deployments.create("counter", ref, placement={"edge": {"site": "shop1"}})
    node_id = node.node.id
    with node_http(srv.url, node.token) as h:
        (assigned,) = wait_for(lambda: assignments(h, node_id).json()["assignments"], "an assignment")
        pulled = h.post(f"/api/v1/edge/nodes/{node_id}/bundle", json={"model": assigned["bundle"]})
        assert pulled.status_code == 200, pulled.text
        bundle = tmp_path / "digits.bundle"
        bundle.write_bytes(pulled.content)
        token_file = tmp_path / "serve.key"
        token_file.write_text(assigned["serve_key"])
        token_file.chmod(0o600)
        port = free_port()
        log = tmp_path / "serve.log"
        argv = [sys.executable, "-m", "aicloud", "edge", "serve", str(bundle), "--key", key]
        argv += ["--port", str(port), "--token-file", str(token_file)]
        with log.open("w") as out:
            proc = subprocess.Popen(argv, env=edge_env(tmp_path / "node"), stdout=out, stderr=out)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as local:

                def up() -> bool:
                    assert proc.poll() is None, log.read_text()
                    try:
                        return local.get("/v2/health/ready").status_code == 200
                    except httpx.TransportError:
                        return False

                wait_for(up, "edge serve", timeout=120)
                assert local.post("/predict", json={"inputs": []}).status_code == 401  # needs the key
            status = {
                "address": "http://127.0.0.1",
                "assignments": [{"replica_id": assigned["replica_id"], "state": "ready", "port": port}],
            }
            assert report(h, node_id, status).status_code == 200
            with httpx.Client(
                base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=60
            ) as caller:

                def ready() -> bool:
                    report(h, node_id, status)  # a heartbeat
                    return bool(caller.get("/api/v1/deployments/counter").json()["status"] == "ready")

                wait_for(ready, "the deployment ready")
                got = caller.post("/v1/endpoints/counter/predict", json={"inputs": rows.to_dict("records")})
                assert got.status_code == 200, got.text
                assert got.json()["outputs"] == want

            # a restarted control plane routes to it again, with the serve key it kept sealed
            srv.stop()
            srv.start()
            with httpx.Client(
                base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=60
            ) as caller:
                wait_for(ready, "the deployment ready again")
                again = caller.post("/v1/endpoints/counter/predict", json={"inputs": rows.to_dict("records")})
                assert again.status_code == 200, again.text
                assert again.json()["outputs"] == want
                (served,) = caller.get("/api/v1/deployments/counter").json()["replicas"]
                assert served["id"] == assigned["replica_id"]

                # the node stops calling: offline after AICLOUD_EDGE_OFFLINE_AFTER_S, no more routing
                def offline() -> bool:
                    nodes = caller.get("/api/v1/edge/nodes").json()
                    return bool(nodes[0]["status"] == "offline")

                wait_for(offline, "the node offline", timeout=30)
                refused = wait_for(
                    lambda: (
                        (r := caller.post("/v1/endpoints/counter/predict", json={"inputs": []})).status_code
                        == 503
                        and r
                    ),
                    "a 503",
                )
                assert_error(refused, 503)
                shown = caller.get("/api/v1/deployments/counter").json()
                assert shown["status"] == "pending" and "offline" in shown["message"]
        finally:
            proc.terminate()
            proc.wait(15)


def test_the_cli_places_a_deployment_on_edge_nodes_and_shows_them(
    client: Client, server: ServerProcess, model_ref: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    site = unique("cli-shop")
    node = client.edge.join(unique("pos"), {"site": site})
    name = unique("edge-cli")
    placed = ["--model", model_ref, "--placement", f"edge:site={site}", "--no-wait"]
    run_cli(server, "deploy", "create", name, *placed)

    def shown() -> str | None:
        out = run_cli(server, "deploy", "show", name).stdout
        return out if "on edge node" in out else None

    out = wait_for(shown, "the replica on its node")
    assert f"on edge node {node.node.name}" in out and f"placed on edge site={site}" in out
    nodes = run_cli(server, "edge", "nodes").stdout
    assert node.node.name in nodes and "offline" in nodes  # it never called
    with httpx.Client(base_url=server.url, timeout=60) as browser:  # the console's deployment page
        assert browser.post("/signin", data={"token": server.token, "next": "/"}).status_code == 303
        page = browser.get(f"/deployments/{name}")
        assert page.status_code == 200 and f"edge nodes: site={site}" in page.text
        assert f"<td>{node.node.name}</td>" in page.text

    moved = run_cli(server, "deploy", "update", name, "--placement", f"edge:site={site},zone=x", "--no-wait")
    assert "zone=x" in moved.stdout
    wait_for(lambda: "no edge node matches" in run_cli(server, "deploy", "show", name).stdout, "unplaced")
    bad = run_cli(
        server, "deploy", "create", unique("x"), "--model", model_ref, "--placement", "cloud", check=False
    )
    assert bad.returncode == 2 and "edge:LABEL=VALUE" in bad.stderr

    file = tmp_path / "deploy.yaml"
    other = unique("edge-file")
    file.write_text(
        f"name: {other}\nmodel: {model_ref}\nplacement:\n  edge:\n    site: {site}\n  replicas: 1\n"
    )
    run_cli(server, "deploy", "apply", "-f", str(file), "--no-wait")
    assert client.deployments.get(other).info.spec["placement"] == {"edge": {"site": site}, "replicas": 1}
    for n in (name, other):
        client.deployments.get(n).delete()


def test_a_removed_node_loses_its_replicas(
    client: Client, server: ServerProcess, model_ref: str, unique: Callable[[str], str]
) -> None:
    site = unique("shop")
    node = client.edge.join(unique("pos"), {"site": site})
    name = unique("edge-rm")
    client.deployments.create(name, model_ref, placement={"edge": {"site": site}})
    wait_for(lambda: client.deployments.get(name).info.replicas, "a replica on the node")
    client.edge.remove(node.node.id)
    gone = wait_for(
        lambda: (
            (info := client.deployments.get(name).info).replicas == []
            and "no edge node" in (info.message or "")
        ),
        "the replica gone",
    )
    assert gone
    client.deployments.get(name).delete()


@pytest.mark.timeout(300)
def test_a_new_generation_is_placed_beside_the_old_one_until_the_node_has_it_ready(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    model = unique("edge-roll")
    folder, _ = digits_like(tmp_path / "mlp")
    register(client, folder, model)
    client.models.set_alias(model, "production", 1)
    site = unique("shop")
    node = client.edge.join(unique("pos"), {"site": site})
    name = unique("edge-roll")
    client.deployments.create(name, f"{model}@production", placement={"edge": {"site": site}})
    with node_http(server.url, node.token) as h:

        def placed(count: int) -> list[dict[str, Any]] | None:
            got: list[dict[str, Any]] = assignments(h, node.node.id).json()["assignments"]
            return got if len(got) == count else None

        def ready(*replicas: str, starting: tuple[str, ...] = ()) -> None:
            states = [(r, "ready") for r in replicas] + [(r, "starting") for r in starting]
            body = [{"replica_id": r, "state": s, "port": 9} for r, s in states]
            assert (
                report(h, node.node.id, {"address": "http://127.0.0.1", "assignments": body}).status_code
                == 200
            )

        (first,) = wait_for(lambda: placed(1), "the first assignment")
        ready(first["replica_id"])
        # the alias moves: the new version's replica is placed beside the old one, which keeps serving
        register(client, folder, model)
        client.models.set_alias(model, "production", 2)
        both = wait_for(lambda: placed(2), "the new version placed beside the old one")
        (second,) = [a for a in both if a["replica_id"] != first["replica_id"]]
        assert (second["version"], second["bundle"]) == (2, f"{model}:2")
        ready(first["replica_id"], starting=(second["replica_id"],))
        time.sleep(1.5)  # a pass or more: nothing is removed while the new one starts
        assert placed(2) is not None
        ready(first["replica_id"], second["replica_id"])
        (kept,) = wait_for(lambda: placed(1), "the old one removed")
        assert kept["replica_id"] == second["replica_id"]
        info = wait_for(lambda: (i := client.deployments.get(name).info).status == "ready" and i, "ready")
        assert info.model_version == 2 and [r.id for r in info.replicas] == [second["replica_id"]]

        # a replica setting is a new generation too; scaling alone is not
        client.deployments.get(name).update(min_replicas=0, max_replicas=3)
        time.sleep(1.5)
        assert [a["replica_id"] for a in placed(1) or []] == [second["replica_id"]]
        client.deployments.get(name).update(max_batch_size=8)
        third = wait_for(
            lambda: [a for a in (placed(2) or []) if a["max_batch_size"] == 8], "the new generation placed"
        )
        assert [a["max_batch_size"] for a in placed(2) or [] if a["replica_id"] == second["replica_id"]] == [
            32
        ]
        ready(second["replica_id"], third[0]["replica_id"])
        (last,) = wait_for(lambda: placed(1), "the older generation removed")
        assert last["replica_id"] == third[0]["replica_id"]
    client.deployments.get(name).delete()


def test_a_stopping_server_answers_the_open_long_polls(make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server()
    with Client(url=srv.url, token=srv.token) as client:
        node = client.edge.join("pos", {"site": "shop1"})
    with node_http(srv.url, node.token) as h:
        etag = assignments(h, node.node.id).json()["etag"]
        got: dict[str, Any] = {}
        poller = threading.Thread(
            target=lambda: got.update(r=assignments(h, node.node.id, etag=etag, wait=30).status_code)
        )
        poller.start()
        time.sleep(0.5)
        srv.stop()
        poller.join(40)
    assert got == {"r": 304}  # answered, not cut off by the shutdown

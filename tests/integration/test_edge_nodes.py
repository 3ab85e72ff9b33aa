"""Edge nodes, the registration and pull slice (docs/edge.md): a second process with its own home
joins the control plane with labels, pulls a signed bundle with its own narrowly scoped token, keeps
it on disk and serves it with the control plane stopped; a removed node's next pull is a 401 and it
deletes the bundles it held."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from test_edge_bundle import cli, edge_env, pixel_rows, register

from aicloud import Client
from aicloud.errors import PermissionDeniedError
from aicloud.testing.server import ServerProcess
from aicloud.wire.tcp import free_port

from helpers import assert_error
from model_files import digits_like

pytestmark = pytest.mark.integration


def node_file(home: Path) -> dict[str, str]:
    return dict(json.loads((home / ".aicloud" / "edge" / "node.json").read_text()))


def joined(url: str, token: str, home: Path, name: str, labels: str = "site=shop1") -> dict[str, str]:
    done = cli(["edge", "join", url, "--token", token, "--labels", labels, "--name", name], home)
    assert done.returncode == 0, done.stderr
    assert "joined" in done.stdout
    return node_file(home)


@pytest.mark.timeout(600)
def test_a_node_joins_pulls_and_serves_from_disk_with_the_control_plane_stopped(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = make_server()
    home = tmp_path / "node"
    with Client(url=srv.url, token=srv.token) as client:
        folder, names = digits_like(tmp_path / "mlp")
        ref = register(client, folder, "digits")
        client.models.set_alias("digits", "production", int(ref.split(":")[1]))
        state = joined(srv.url, srv.token, home, "shop1-pos", "site=shop1,zone=eu")
        nodes = client.edge.nodes()
        assert [(n.name, n.labels) for n in nodes] == [("shop1-pos", {"site": "shop1", "zone": "eu"})]
        assert nodes[0].id == state["node_id"] and nodes[0].last_seen_at is None
        assert state["token"] and state["token"] != srv.token
        pinned = (home / ".aicloud" / "edge" / "trusted.pub").read_text().strip()
        assert pinned == client.workspaces.signing_key().public_key
        rows = pixel_rows(names, 16, seed=2)[names]
        want = client.models.load(ref)(rows).tolist()

    done = cli(["edge", "pull", "digits@production"], home, timeout=300)
    assert done.returncode == 0, done.stderr
    bundle = home / ".aicloud" / "edge" / "bundles" / "digits-1.bundle"
    assert bundle.exists()
    listed = cli(["edge", "list"], home)
    assert "digits:1" in listed.stdout and "yes" in listed.stdout
    with Client(url=srv.url, token=srv.token) as client:
        assert client.edge.nodes()[0].last_seen_at is not None

    srv.stop()  # offline from here: the node serves what it holds, verified with the pinned key
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aicloud", "edge", "serve", str(bundle), "--port", str(port)],
            env=edge_env(home),
            stdout=out,
            stderr=out,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as h:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    if h.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            got = h.post("/predict", json={"inputs": rows.to_dict("records")})
            assert got.status_code == 200, got.text
            assert got.json()["outputs"] == want
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_nodes_token_only_pulls_its_own_bundles(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    home = tmp_path / "node"
    state = joined(server.url, server.token, home, unique("pos"))
    other = client.edge.join(unique("other"), {"site": "shop2"})
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {state['token']}"}) as h:
        assert_error(h.get("/api/v1/models"), 403)
        assert_error(h.get("/api/v1/edge/nodes"), 403)
        assert_error(h.post("/api/v1/jobs", json={}), 403)
        assert h.get("/api/v1/workspace/signing-key").status_code == 200
        pulled = h.post(f"/api/v1/edge/nodes/{other.node.id}/bundle", json={"model": "nope"})
        assert_error(pulled, 403)
        assert_error(h.post(f"/api/v1/edge/nodes/{state['node_id']}/bundle", json={"model": "nope"}), 404)
    with pytest.raises(PermissionDeniedError):  # a member's own token is not the node's either
        client.edge.pull(other.node.id, "nope", tmp_path / "x.bundle")
    again = cli(["edge", "join", server.url, "--token", server.token, "--name", unique("pos")], home)
    assert again.returncode == 1 and "joined already" in again.stderr
    bad = cli(["edge", "join", server.url, "--token", server.token, "--labels", "site"], tmp_path / "n2")
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


@pytest.mark.timeout(600)
def test_a_removed_node_is_refused_and_deletes_its_bundles(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    folder, _ = digits_like(tmp_path / "mlp")
    ref = register(client, folder, unique("edge-rm"))
    home = tmp_path / "node"
    state = joined(server.url, server.token, home, unique("pos"))
    done = cli(["edge", "pull", ref], home, timeout=300)
    assert done.returncode == 0, done.stderr
    bundles = home / ".aicloud" / "edge" / "bundles"
    assert len(list(bundles.glob("*.bundle"))) == 1

    client.edge.remove(state["node_id"])
    assert state["node_id"] not in {n.id for n in client.edge.nodes()}
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {state['token']}"}) as h:
        assert_error(h.get("/api/v1/whoami"), 401)
    refused = cli(["edge", "pull", ref], home, timeout=300)
    assert refused.returncode == 1
    assert "refused this node's token" in " ".join(refused.stderr.split())
    assert list(bundles.glob("*.bundle")) == []
    assert not (home / ".aicloud" / "edge" / "node.json").exists()
    later = cli(["edge", "pull", ref], home)
    assert later.returncode == 1 and "edge join" in later.stderr

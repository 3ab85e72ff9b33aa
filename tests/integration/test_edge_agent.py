"""The edge node agent (docs/edge.md#the-node-agent) against a real control plane: a second process
with its own home joins, runs `aicloud edge agent`, and serves the deployments placed on its labels
from `python -m aicloud.edge.serve` children with their serve keys; a child killed is restarted. In a
network namespace made by the test, the link to the control plane is cut: the node keeps serving,
comes back from a kill -9 of everything serving from disk, and when the link returns reports and
re-syncs (a deployment deleted meanwhile is stopped and its bundle deleted). A removed node's agent
stops serving, deletes what it held and exits 1 saying to join again."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_edge_bundle import cli, edge_env

from aicloud import Client
from aicloud.testing.server import ServerProcess
from aicloud.wire.tcp import free_port

from model_files import digits_like, pixel_rows, register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

OFFLINE_AFTER_S = 6  # the control plane's heartbeat_s is a third of it: 2 s


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A control plane on every address (the network namespace reaches it over a veth pair)."""
    env = {"AICLOUD_HOST": "0.0.0.0", "AICLOUD_EDGE_OFFLINE_AFTER_S": str(OFFLINE_AFTER_S)}
    proc = ServerProcess(tmp_path_factory.mktemp("edge-cp"), env=env).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def model(cp: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two versions of a digits-like model, and rows with the predictions each should answer."""
    tmp = tmp_path_factory.mktemp("edge-model")
    name = f"edge-agent-{uuid.uuid4().hex[:8]}"
    with Client(url=cp.url, token=cp.token) as client:
        folder, names = digits_like(tmp / "mlp")
        v1 = register(client, folder, name)
        v2 = register(client, folder, name)
        rows = pixel_rows(names, 8, seed=5)[names]
        want = client.models.load(v1)(rows).tolist()
    return {"v1": v1, "v2": v2, "rows": rows.to_dict("records"), "want": want}


def ports() -> str:
    """A range of 20 ports starting at one free now (other tests may run agents on the default range)."""
    base = free_port()
    while base + 20 > 65535:
        base = free_port()
    return f"{base}-{base + 19}"


def until(check: Callable[[], Any], what: str, timeout: float = 180, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.3)


class Node:
    """A node machine: its own home; commands run inside network namespace ``ns`` when given."""

    def __init__(self, home: Path, ns: str | None = None) -> None:
        self.home, self.ns = home, ns
        self.edge = home / ".aicloud" / "edge"
        self.log = home / "agent.log"
        self.agent: subprocess.Popen[bytes] | None = None

    def wrap(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *args] if self.ns else args

    def run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if self.ns is None:
            return cli(args, self.home, timeout)
        cmd = self.wrap([sys.executable, "-m", "aicloud", *args])
        return subprocess.run(cmd, env=edge_env(self.home), capture_output=True, text=True, timeout=timeout)

    def join(self, url: str, token: str, site: str) -> dict[str, str]:
        done = self.run(["edge", "join", url, "--token", token, "--labels", f"site={site}", "--name", site])
        assert done.returncode == 0, done.stderr
        return dict(json.loads((self.edge / "node.json").read_text()))

    def start(self, *extra: str) -> None:
        with self.log.open("a") as out:
            self.agent = subprocess.Popen(
                self.wrap([sys.executable, "-m", "aicloud", "edge", "agent", *extra]),
                env=edge_env(self.home),
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def children(self) -> list[int]:
        """The pids of the edge servers serving from this home (found by their bundle's path)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"aicloud.edge.serve" in cmd and any(str(self.home).encode() in c for c in cmd):
                    pids.append(int(entry.name))
        return pids

    def kill(self) -> None:
        """kill -9 the agent's process group and every child serving from this home."""
        if self.agent is not None and self.agent.poll() is None:
            os.killpg(self.agent.pid, signal.SIGKILL)
            self.agent.wait(10)
        for pid in self.children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        until(lambda: not self.children(), "the children to die", 30)

    def stop(self) -> int | None:
        if self.agent is None:
            return None
        if self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.agent.wait(30)
        self.kill()
        return self.agent.returncode

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.edge / "agent.json").read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def placed(self, deployment: str) -> dict[str, Any] | None:
        return next((a for a in self.state().get("assignments", []) if a["deployment"] == deployment), None)

    def key(self, replica_id: str) -> str:
        return (self.edge / "keys" / f"{replica_id}.key").read_text().strip()

    def http(self, method: str, port: int, path: str, key: str | None, body: Any = None) -> tuple[int, Any]:
        """One call to a replica on this node (from inside its namespace when it has one)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        url = f"http://127.0.0.1:{port}{path}"
        if self.ns is None:
            try:
                r = httpx.request(method, url, headers=headers, json=body, timeout=30)
            except httpx.TransportError:
                return 0, None
            return r.status_code, r.json() if r.headers.get("content-type", "").startswith(
                "application/json"
            ) else None
        script = (
            "import httpx, json, sys\n"
            "a = json.load(sys.stdin)\n"
            "try:\n"
            "    r = httpx.request(a['m'], a['u'], headers=a['h'], json=a['b'], timeout=30)\n"
            "    body = r.json() if 'json' in r.headers.get('content-type', '') else None\n"
            "    print(json.dumps([r.status_code, body]))\n"
            "except httpx.TransportError:\n"
            "    print(json.dumps([0, None]))\n"
        )
        done = subprocess.run(
            self.wrap([sys.executable, "-c", script]),
            input=json.dumps({"m": method, "u": url, "h": headers, "b": body}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        status, out = json.loads(done.stdout)
        return int(status), out

    def predict(self, deployment: str, rows: list[dict[str, float]]) -> Any:
        a = self.placed(deployment)
        assert a is not None, f"{deployment} is not placed: {self.state()}"
        status, out = self.http("POST", a["port"], "/predict", self.key(a["replica_id"]), {"inputs": rows})
        assert status == 200, (status, out)
        return out["outputs"]

    def serving(self, deployment: str) -> bool:
        a = self.placed(deployment)
        if a is None or not (self.edge / "keys" / f"{a['replica_id']}.key").exists():
            return False
        path = f"/v2/models/{a['model']}/versions/{a['version']}/ready"
        return self.http("GET", a["port"], path, self.key(a["replica_id"]))[0] == 200


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(name: str = "node", ns: str | None = None) -> Node:
        node = Node(tmp_path / name, ns)
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()


def test_a_node_serves_what_is_placed_on_it_with_its_serve_key(
    cp: ServerProcess, model: dict[str, Any], nodes: Callable[..., Node]
) -> None:
    site = f"shop-{uuid.uuid4().hex[:6]}"
    node = nodes()
    state = node.join(cp.url, cp.token, site)
    node.start("--advertise", "http://127.0.0.1", "--ports", ports())
    with Client(url=cp.url, token=cp.token) as client:
        dep = client.deployments.create(site, model=model["v1"], placement={"edge": {"site": site}})
        until(lambda: node.serving(site), "the node to serve the deployment", log=node.log)
        assert node.predict(site, model["rows"]) == model["want"]
        a = node.placed(site)
        assert a is not None and a["model"] == model["v1"].split(":")[0]
        assert node.http("POST", a["port"], "/predict", None, {"inputs": model["rows"]})[0] == 401
        assert node.http("POST", a["port"], "/predict", "wrong", {"inputs": model["rows"]})[0] == 401
        key = node.key(a["replica_id"])
        assert key not in node.log.read_text() and key not in (node.edge / "agent.json").read_text()
        assert all(key not in log.read_text() for log in (node.edge / "logs").iterdir())
        assert oct((node.edge / "keys" / f"{a['replica_id']}.key").stat().st_mode & 0o777) == "0o600"
        assert (node.edge / "bundles" / f"{a['version_id']}.bundle").exists()
        assert node.agent is not None
        for pid in [node.agent.pid, *node.children()]:  # aicloud[edge] is enough: no torch, no server
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "libtorch" not in maps and "sqlalchemy" not in maps, pid
        assert all(
            str(key) not in " ".join(Path(f"/proc/{p}/cmdline").read_text().split("\0"))
            for p in node.children()
        )

        def ready_on_cp() -> bool:
            reps = client.deployments.get(site).info.replicas
            return any(r.node_id == state["node_id"] and r.state.value == "ready" for r in reps)

        until(ready_on_cp, "the control plane to see the replica ready", log=node.log)
        assert dep.predict(model["rows"]) == model["want"]  # the gateway routes to the advertised node
        until(
            lambda: next(n for n in client.edge.nodes() if n.id == state["node_id"]).requests >= 1,
            "the node's request counts to reach the control plane",
            log=node.log,
        )

        # a child that dies is started again
        [pid] = node.children()
        os.kill(pid, signal.SIGKILL)
        until(
            lambda: node.children() not in ([], [pid]) and node.serving(site),
            "a restarted child",
            log=node.log,
        )
        assert node.predict(site, model["rows"]) == model["want"]

        second = node.run(["edge", "agent"])
        assert second.returncode == 1 and "another edge agent runs" in " ".join(second.stderr.split())
        listed = node.run(["edge", "list"])
        assert listed.returncode == 0 and str(a["port"]) in listed.stdout and site in listed.stdout

        dep.delete()
        until(
            lambda: node.placed(site) is None and not node.children(),
            "the replica to be removed",
            log=node.log,
        )
        assert not (node.edge / "bundles" / f"{a['version_id']}.bundle").exists()
        assert not (node.edge / "keys" / f"{a['replica_id']}.key").exists()
    assert node.stop() == 0
    assert "stopping" in node.log.read_text()


def test_a_removed_node_stops_serving_deletes_what_it_held_and_exits_1(
    cp: ServerProcess, model: dict[str, Any], nodes: Callable[..., Node]
) -> None:
    site = f"shop-{uuid.uuid4().hex[:6]}"
    node = nodes()
    state = node.join(cp.url, cp.token, site)
    node.start("--ports", ports())
    with Client(url=cp.url, token=cp.token) as client:
        client.deployments.create(site, model=model["v1"], placement={"edge": {"site": site}})
        until(lambda: node.serving(site), "the node to serve the deployment", log=node.log)
        a = node.placed(site)
        assert a is not None
        client.edge.remove(state["node_id"])
        assert node.agent is not None
        until(
            lambda: node.agent is not None and node.agent.poll() is not None,
            "the agent to exit",
            log=node.log,
        )
        assert node.agent.returncode == 1
    said = " ".join(node.log.read_text().split())
    assert "refused this node's token" in said and "aicloud edge join" in said
    assert node.children() == [] and node.http("GET", a["port"], "/v2/health/live", None)[0] == 0
    assert list((node.edge / "bundles").glob("*.bundle")) == []
    assert list((node.edge / "keys").glob("*.key")) == []
    assert not (node.edge / "agent.json").exists() and not (node.edge / "node.json").exists()
    assert json.loads((node.edge / "node.json.revoked").read_text())["token"] == ""


# --- the network cut


def netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to make a network namespace"
    missing = [t for t in ("ip",) if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else None


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[dict[str, str]]:
    """A network namespace with a veth pair to this host: 10.200.N.1 here, 10.200.N.2 inside."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"aic-{tag}", f"aich{tag}", f"aicn{tag}"
    n = 1 + int(tag, 16) % 250
    try:
        sh("ip", "netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"10.200.{n}.1/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.200.{n}.2/30", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield {"ns": ns, "link": host_if, "host": f"10.200.{n}.1"}
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def test_a_cut_node_keeps_serving_reboots_from_disk_and_resyncs_when_the_link_returns(
    cp: ServerProcess, model: dict[str, Any], nodes: Callable[..., Node], netns: dict[str, str]
) -> None:
    site = f"shop-{uuid.uuid4().hex[:6]}"
    node = nodes("cut", netns["ns"])
    state = node.join(f"http://{netns['host']}:{cp.port}", cp.token, site)
    node.start()
    keep, drop = f"{site}-keep", f"{site}-drop"
    with Client(url=cp.url, token=cp.token) as client:
        client.deployments.create(keep, model=model["v1"], placement={"edge": {"site": site}})
        gone = client.deployments.create(drop, model=model["v2"], placement={"edge": {"site": site}})
        until(lambda: node.serving(keep) and node.serving(drop), "both deployments served", log=node.log)
        dropped = node.placed(drop)
        assert dropped is not None
        bundle = node.edge / "bundles" / f"{dropped['version_id']}.bundle"

        sh("ip", "link", "set", netns["link"], "down")  # the cut
        until(
            lambda: "control plane unreachable" in node.log.read_text(), "the agent to notice", log=node.log
        )
        assert node.predict(keep, model["rows"]) == model["want"]
        assert node.predict(drop, model["rows"]) == model["want"]  # v2 holds v1's weights
        until(
            lambda: next(n for n in client.edge.nodes() if n.id == state["node_id"]).status == "offline",
            "the control plane to mark the node offline",
        )
        gone.delete()  # the node cannot hear of it

        node.kill()  # a reboot while offline: everything serving dies at once
        assert node.http("GET", dropped["port"], "/v2/health/live", None)[0] == 0
        node.start()
        until(
            lambda: node.serving(keep) and node.serving(drop),
            "serving from disk after the reboot",
            log=node.log,
        )
        assert node.predict(keep, model["rows"]) == model["want"]
        assert "serving 2 assignment(s) from disk" in node.log.read_text()
        said = lambda: node.log.read_text().count("control plane unreachable")  # noqa: E731
        until(lambda: said() == 2, "the new agent to find the control plane unreachable", log=node.log)

        sh("ip", "link", "set", netns["link"], "up")  # the link returns: report, then re-sync
        until(lambda: node.placed(drop) is None, "the deleted deployment to be stopped", log=node.log)
        until(
            lambda: not node.serving(drop) and not bundle.exists(), "its child and bundle gone", log=node.log
        )
        assert node.predict(keep, model["rows"]) == model["want"]
        assert "reachable again" in node.log.read_text()
        assert said() == 2  # one line per change of state, not one per retry
        until(
            lambda: next(n for n in client.edge.nodes() if n.id == state["node_id"]).status == "online",
            "the control plane to see the node online",
        )
        reps = client.deployments.get(keep).info.replicas
        assert any(r.node_id == state["node_id"] and r.state.value == "ready" for r in reps)
        assert len(node.children()) == 1
    assert node.agent is not None
    node.agent.send_signal(signal.SIGTERM)  # stops its children before it exits
    assert node.agent.wait(60) == 0 and node.children() == []

"""The Ray executor on a real two-node Ray cluster that this module starts itself.

The cluster: ``ray start --head`` plus a second ``ray start --address ...`` node, both on
this machine, each with its own node IP in the loopback range (127.0.0.2 and 127.0.0.3:
Ray turns 127.0.0.1 into the machine's outward address, and two node IPs make the two
nodes plainly two), its own CPU and a custom resource, and Ray's token authentication on
(``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``). It is stopped at the end by killing exactly
the processes it started (found by its temp folder and GCS address, plus their children).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import ray

from aicloud import Client
from aicloud.config import Settings
from aicloud.executors import LaunchError, LaunchRequest, make_executor
from aicloud.executors.base import ExitInfo
from aicloud.executors.ray import RayExecutor
from aicloud.testing.server import ServerProcess, sandbox_unavailable
from aicloud.wire.tcp import free_port

from helpers import alive, small_csv

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

PY = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


@dataclass(frozen=True)
class Cluster:
    address: str
    token: str
    head_node: str
    worker_node: str


# -- the cluster ---------------------------------------------------------------------------------


def _procs() -> dict[int, tuple[int, str, str]]:
    """pid → (ppid, command line, status) of every process."""
    out = {}
    for proc in psutil.process_iter(["ppid", "cmdline", "status"]):
        info = proc.info
        out[proc.pid] = (info["ppid"] or 0, " ".join(info["cmdline"] or []), info["status"] or "")
    return out


def _cluster_pids(marks: list[str]) -> set[int]:
    """The live processes whose command line holds one of ``marks``, and their descendants."""
    procs = _procs()
    found = {pid for pid, (_, cmd, _) in procs.items() if any(m in cmd for m in marks)}
    while grown := {pid for pid, (ppid, _, _) in procs.items() if ppid in found} - found:
        found |= grown
    return {p for p in found if procs[p][2] != psutil.STATUS_ZOMBIE and p not in (os.getpid(), os.getppid())}


def _stop_cluster(marks: list[str]) -> None:
    """SIGTERM the cluster's processes, SIGKILL what is left after 3 s."""
    pids = _cluster_pids(marks)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while (left := _cluster_pids(marks)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([RAY, "start", *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _node_ports() -> list[str]:
    return [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        "--object-store-memory=100000000",
        "--disable-usage-stats",
    ]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    token = os.urandom(16).hex()
    temp = tempfile.mkdtemp(prefix="aicloud-ray-", dir="/tmp")  # short: Ray's socket paths
    port = free_port()
    address = f"{HEAD_IP}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, HOME=temp)  # nothing in ~/.ray
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "PYTHONBREAKPOINT")}
    marks = [temp, f"--address={address}", f"--gcs-address={address}"]
    try:
        head = ["--head", f"--node-ip-address={HEAD_IP}", f"--port={port}", "--num-cpus=1"]
        head += ['--resources={"head": 1}', "--include-dashboard=false", f"--dashboard-port={free_port()}"]
        head += [f"--ray-client-server-port={free_port()}", f"--temp-dir={temp}"]
        _ray_start(head + _node_ports(), env)
        worker = [f"--address={address}", f"--node-ip-address={WORKER_IP}", "--num-cpus=1"]
        worker += ['--resources={"worker_node": 1}', f"--temp-dir={temp}"]
        _ray_start(worker + _node_ports(), env)
        RayExecutor(address, Path(temp) / "probe", token=token).connect()
        nodes = {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert set(nodes) == {HEAD_IP, WORKER_IP}, nodes
        yield Cluster(address, token, nodes[HEAD_IP], nodes[WORKER_IP])
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        _stop_cluster(marks)
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():  # leave no Ray token in this process's environment
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def ex(cluster: Cluster, tmp_path: Path) -> Iterator[RayExecutor]:
    executor = RayExecutor(
        cluster.address,
        tmp_path / "jobs",
        token=cluster.token,
        default_grace_s=2,
        start_timeout_s=30,
        placement_strategy="STRICT_SPREAD",
    )
    yield executor
    for path in (tmp_path / "jobs").glob("*/handle.json"):  # leave no actor holding the CPUs
        executor.cleanup(json.loads(path.read_text()))


def submit(ex: RayExecutor, job_id: str, argv: list[str], **kwargs: Any) -> dict[str, Any]:
    env = {"PATH": os.environ["PATH"], "GLOO_SOCKET_IFNAME": "lo", **kwargs.pop("env", {})}
    handle = ex.submit(LaunchRequest(job_id=job_id, argv=argv, env=env, **kwargs))
    (ex.job_dir(job_id) / "handle.json").write_text(json.dumps(handle))
    return handle


def wait_end(ex: RayExecutor, handle: dict[str, Any], timeout: float = 60.0) -> ExitInfo:
    deadline = time.monotonic() + timeout
    while (info := ex.poll(handle)).state == "running":
        assert time.monotonic() < deadline, f"job still running after {timeout}s"
        time.sleep(0.1)
    return info


def wait_for(cond: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


# -- the executor --------------------------------------------------------------------------------

HELLO = """
import os, sys, time
for i in range(3):
    print("hello", i, flush=True)
    time.sleep(0.2)
print("node", os.environ["AICLOUD_NODE_ID"], "threads", os.environ["OMP_NUM_THREADS"])
print("ray token in env:", any(k.startswith("RAY_AUTH") for k in os.environ))
print("no newline at the end", end="")
sys.exit(3)
"""


def test_a_job_runs_on_the_cluster_and_its_log_arrives(ex: RayExecutor, cluster: Cluster) -> None:
    handle = submit(ex, "hello", [PY, "-c", HELLO])
    assert handle["executor"] == "ray" and len(handle["actors"]) == 1
    info = wait_end(ex, handle)
    assert info.exit_code == 3
    assert info.cpu_seconds is not None and info.cpu_seconds > 0
    # the workload's own memory, not the Ray worker's it was started from
    assert info.peak_rss_bytes is not None and 0 < info.peak_rss_bytes < 100 * 1024 * 1024
    log = ex.log_path(handle).read_text()
    assert "hello 0\nhello 1\nhello 2\n" in log
    assert f"node {handle['nodes'][0]['node_id']} threads 1" in log
    assert handle["nodes"][0]["node_id"] in (cluster.head_node, cluster.worker_node)
    assert "ray token in env: False" in log and cluster.token not in log
    assert log.endswith("no newline at the end\n")
    assert ex.poll(handle) == info  # the end is recorded: polling again changes nothing
    ex.cleanup(handle)
    ex.cleanup(handle)  # idempotent
    with pytest.raises(ValueError):
        ray.get_actor(handle["actors"][0], namespace="aicloud")


FOREVER = "sleep 1000 &\necho child $!\necho me $$\nwhile true; do sleep 1; done\n"


def test_cancel_stops_the_workload_and_its_children(ex: RayExecutor) -> None:
    handle = submit(ex, "forever", ["/bin/sh", "-c", FOREVER])
    pids: dict[str, int] = {}

    def both() -> bool:
        ex.poll(handle)
        for line in ex.log_path(handle).read_text().splitlines():
            name, _, pid = line.partition(" ")
            if name in ("child", "me"):
                pids[name] = int(pid)
        return len(pids) == 2

    wait_for(both)
    assert all(alive(pid) for pid in pids.values())
    started = time.monotonic()
    ex.cancel(handle, grace_s=1.0)
    ex.cancel(handle, grace_s=1.0)  # idempotent
    assert time.monotonic() - started < 2, "cancel must return at once"
    info = wait_end(ex, handle, timeout=20)
    assert info.state == "exited" and info.exit_code == -signal.SIGTERM
    wait_for(lambda: not any(alive(pid) for pid in pids.values()), timeout=10)


ALL_REDUCE = """
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print(f"rank={rank} world={dist.get_world_size()} local_rank={os.environ['LOCAL_RANK']} "
      f"node={os.environ['AICLOUD_NODE_ID']} ip={os.environ['AICLOUD_NODE_IP']} "
      f"master={os.environ['MASTER_ADDR']} sum={t.item()}", flush=True)
dist.destroy_process_group()
"""


def test_two_workers_on_two_nodes_all_reduce(ex: RayExecutor, cluster: Cluster) -> None:
    handle = submit(ex, "ddp", [PY, "-c", ALL_REDUCE], workers=2)
    assert handle["placement_group"] and len(handle["actors"]) == 2
    info = wait_end(ex, handle, timeout=90)
    log = ex.log_path(handle).read_text()
    assert info.exit_code == 0, log
    lines = {}
    for line in log.splitlines():
        line = line.removeprefix("[rank 1] ")
        if line.startswith("rank="):
            fields = dict(f.split("=", 1) for f in line.split())
            lines[fields["rank"]] = fields
    assert set(lines) == {"0", "1"}, log
    assert {f["node"] for f in lines.values()} == {cluster.head_node, cluster.worker_node}
    assert {f["ip"] for f in lines.values()} == {HEAD_IP, WORKER_IP}
    assert all(f["sum"] == "3.0" and f["world"] == "2" and f["local_rank"] == "0" for f in lines.values())
    assert lines["0"]["master"] == lines["1"]["master"] == lines["0"]["ip"]
    assert "[rank 1] rank=1" in log  # rank r > 0's lines are marked, as on the local executor


def test_the_first_failure_ends_a_multi_worker_job(ex: RayExecutor) -> None:
    script = "import os, sys, time\nif os.environ['RANK'] == '1': sys.exit(5)\ntime.sleep(1000)\n"
    handle = submit(ex, "fails", [PY, "-c", script], workers=2)
    info = wait_end(ex, handle, timeout=30)
    assert info.exit_code == 5
    record = json.loads((ex.job_dir("fails") / "exit.json").read_text())
    assert sorted(w["exit_code"] for w in record["workers"]) == [-signal.SIGTERM, 5]


def test_a_job_no_node_can_hold_fails_at_once(ex: RayExecutor) -> None:
    started = time.monotonic()
    with pytest.raises(LaunchError, match="GPU"):
        submit(ex, "gpu", [PY, "-c", "pass"], gpus=1)
    with pytest.raises(LaunchError, match="needs 3"):
        submit(ex, "three", [PY, "-c", "pass"], workers=3)  # STRICT_SPREAD on two nodes
    assert time.monotonic() - started < 10


def test_a_dead_address_fails_fast_with_the_reason(tmp_path: Path) -> None:
    dead = RayExecutor(f"127.0.0.1:{free_port()}", tmp_path / "jobs", connect_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(LaunchError, match=r"does not answer.*AICLOUD_RAY_ADDRESS"):
        dead.submit(LaunchRequest(job_id="j", argv=[PY, "-c", "pass"]))
    assert time.monotonic() - started < 10
    with pytest.raises(ValueError, match="AICLOUD_RAY_ADDRESS"):
        make_executor(Settings(executor="ray", home=tmp_path))


def test_without_ray_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "aicloud.executors.ray")
    with pytest.raises(ValueError, match=r"pip install 'aicloud\[ray\]'"):
        make_executor(Settings(executor="ray", ray_address="127.0.0.1:1", home=tmp_path))


def test_replica_workers_stay_on_the_control_planes_node(cluster: Cluster, tmp_path: Path) -> None:
    here = ray.get_runtime_context().get_node_id()
    ex = RayExecutor(cluster.address, tmp_path / "jobs", token=cluster.token, local_node=True)
    for i in range(2):
        handle = submit(ex, f"replica{i}", [PY, "-c", "import os; print(os.environ['AICLOUD_NODE_ID'])"])
        try:
            assert wait_end(ex, handle).exit_code == 0
            assert ex.log_path(handle).read_text().strip() == here
        finally:
            ex.cleanup(handle)


SANDBOXED = """
import os, signal, sys, time
print("uid", os.getuid(), "pids", max(int(p) for p in os.listdir("/proc") if p.isdigit()), flush=True)
print("home visible:", os.path.exists(sys.argv[1]), "tmp:", os.listdir("/tmp"), flush=True)
signal.signal(signal.SIGTERM, lambda *a: (print("stopping gracefully", flush=True), sys.exit(5)))
t = 0
for i in range(3 * 10**6):
    t += i
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sandbox_unavailable() is not None, reason=f"no workload sandbox: {sandbox_unavailable()}")
def test_a_job_on_a_ray_node_runs_in_that_nodes_sandbox(cluster: Cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ex = RayExecutor(cluster.address, tmp_path / "jobs", token=cluster.token, sandbox_hidden=[str(home)])
    handle = submit(ex, "boxed", [PY, "-c", SANDBOXED, str(home)])
    try:
        wait_for(lambda: ex.poll(handle) and "ready" in ex.log_path(handle).read_text())
        log = ex.log_path(handle).read_text()
        uid, top_pid = (int(v) for v in log.split()[1:4:2])
        assert top_pid < 50  # its own PID namespace
        assert uid != 0 or os.geteuid() != 0  # an unprivileged uid when the node runs as root
        assert "home visible: False tmp: ['aicloud-job-boxed-" in log  # only its own working folder
        ex.cancel(handle, grace_s=5)
        info = wait_end(ex, handle, timeout=30)
        assert info.exit_code == 5 and "stopping gracefully" in ex.log_path(handle).read_text()
        assert info.cpu_seconds is not None and info.cpu_seconds > 0.1  # the sandbox's usage arrives
    finally:
        ex.cleanup(handle)


CONNECT = """
import sys
from aicloud.executors import LaunchError
from aicloud.executors.ray import RayExecutor
try:
    RayExecutor(sys.argv[1], "/tmp", token=sys.argv[2] or None).connect()
except LaunchError as exc:
    print("LaunchError:", exc)
"""


@pytest.mark.parametrize(("token", "says"), [("wrong-token", "is wrong"), ("", "is not set")])
def test_a_wrong_or_missing_token_is_a_clear_error(cluster: Cluster, token: str, says: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    started = time.monotonic()
    done = subprocess.run(
        [PY, "-c", CONNECT, cluster.address, token], env=env, capture_output=True, text=True, timeout=60
    )
    assert f"AICLOUD_RAY_TOKEN {says}" in done.stdout, done.stdout + done.stderr[-2000:]
    assert cluster.token not in done.stdout + done.stderr
    assert time.monotonic() - started < 30


SUBMIT_AND_LEAVE = """
import json, os, sys
from aicloud.executors import LaunchRequest
from aicloud.executors.ray import RayExecutor
ex = RayExecutor(sys.argv[1], sys.argv[2], token=sys.argv[3])
script = "import time\\nfor i in range(5):\\n    print('step', i, flush=True)\\n    time.sleep(0.5)\\n"
argv = [sys.executable, "-c", script]
handle = ex.submit(LaunchRequest(job_id="attach", argv=argv, env={"PATH": os.environ["PATH"]}))
print(json.dumps(handle))
"""


def test_a_new_control_plane_reattaches_to_a_running_job(ex: RayExecutor, cluster: Cluster) -> None:
    """A job started by another driver process, which then exits, is polled to its end here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [PY, "-c", SUBMIT_AND_LEAVE, cluster.address, str(ex.jobs_dir), cluster.token],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    handle = json.loads(done.stdout.strip().splitlines()[-1])
    (ex.job_dir("attach") / "handle.json").write_text(json.dumps(handle))
    assert ex.poll(handle).state == "running"  # its driver is gone; the detached actor is not
    info = wait_end(ex, handle, timeout=30)
    assert info.exit_code == 0
    assert [f"step {i}" for i in range(5)] == ex.log_path(handle).read_text().splitlines()


# -- through a real control plane ------------------------------------------------------------------


class RayServer(ServerProcess):
    """A control plane whose only Ray credentials are its AICLOUD_RAY_* settings."""

    def env(self) -> dict[str, str]:
        return {k: v for k, v in super().env().items() if not k.startswith("RAY_")}


FAST = {"epochs": 2, "batch_size": 16, "seed": 0}


def test_train_jobs_on_ray_through_the_server(cluster: Cluster, tmp_path: Path) -> None:
    env = {
        "AICLOUD_EXECUTOR": "ray",
        "AICLOUD_RAY_ADDRESS": cluster.address,
        "AICLOUD_RAY_TOKEN": cluster.token,
        "AICLOUD_RAY_START_TIMEOUT_SECONDS": "60",
        "GLOO_SOCKET_IFNAME": "lo",  # the workers' rendezvous stays on loopback
        "HOME": str(tmp_path),
    }
    with RayServer(tmp_path / "home", env=env) as server, Client(url=server.url, token=server.token) as c:
        train, test = c.datasets.create("ray-data", small_csv(tmp_path / "d.csv", rows=80)).split(
            train_size=0.75, seed=0
        )
        one = c.jobs.train(
            task="tabular-classification", dataset=train, eval_dataset=test, target="label", params=FAST
        )
        one.wait(timeout=180)
        assert one.status == "succeeded", one.logs()[-3000:]
        assert one.info.usage.get("cpu_seconds", 0) > 0
        two = c.jobs.train(
            task="tabular-classification",
            dataset=train,
            eval_dataset=test,
            target="label",
            params=FAST,
            workers=2,
        )
        two.wait(timeout=240)
        logs = two.logs()
        assert two.status == "succeeded", logs[-3000:]
        assert two.model_version is not None
        nodes = c.jobs.run(
            command="python -c \"import os; print('on', os.environ['AICLOUD_NODE_ID'])\"", workers=2
        )
        nodes.wait(timeout=120)
        seen = {line.split()[-1] for line in nodes.logs().splitlines() if " on " in f" {line}"}
        assert nodes.status == "succeeded" and seen == {cluster.head_node, cluster.worker_node}
        assert cluster.token not in (server.home / "server.out").read_text()


def test_a_dead_ray_address_fails_the_job_with_the_reason(tmp_path: Path) -> None:
    env = {"AICLOUD_EXECUTOR": "ray", "AICLOUD_RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    with RayServer(tmp_path / "home", env=env) as server, Client(url=server.url, token=server.token) as c:
        job = c.jobs.run(command="echo never").wait(timeout=60)
        assert job.status == "failed" and job.info.reason == "launch"
        assert "does not answer" in (job.info.message or "")
        assert "AICLOUD_RAY_ADDRESS" in (job.info.message or "")

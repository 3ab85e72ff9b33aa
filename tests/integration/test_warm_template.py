"""Replicas forked from the warm template (docs/serving.md, "Warm templates"), through the real server:
they serve (the MLP in numpy from the ``serving`` template, the built-in CNN in torch from
``serving-torch``), are confined exactly as a cold replica is (the security tests' probe), hold their
token while the template never did, start cold when the template is gone, and go on serving when it is
killed."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicloud import Client
from aicloud.executors.templates import template_root
from aicloud.testing.server import ServerProcess, sandbox_unavailable

from model_files import digits_cnn, digits_like, register

SANDBOX = sandbox_unavailable() is None
pytestmark = pytest.mark.skipif(
    SANDBOX and os.geteuid() != 0, reason="under the sandbox, warm templates need a root control plane"
)
WARM = "[aicloud: started from the warm template"

# A Service that keeps a secret in its own folder and says where that is (another replica's folder).
KEEPER = """
import os

from aicloud import Service, handler


class Keeper(Service):
    def setup(self):
        with open("secret.txt", "w") as f:
            f.write(os.environ["SECRET"])

    @handler
    def where(self, x: int) -> dict:
        return {"cwd": os.getcwd(), "uid": os.getuid()}
"""


def _proc_root() -> Path:
    return Path("/proc")


def template_pid(server: ServerProcess, flavour: str) -> int | None:
    """The pid of the template process (the Python, not its sandbox) of ``server``, if it runs."""
    sock = str(template_root(server.home / "jobs", sys.executable) / f"{flavour}.sock").encode()
    for entry in _proc_root().iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd[1:3] == [b"-m", b"aicloud.serving.template"] and sock in cmd:
                return int(entry.name)
    return None


def wait_for_template(server: ServerProcess, flavour: str, timeout: float = 120) -> int:
    """Wait until the template listens (it starts with the first replica that needs it)."""
    sock = template_root(server.home / "jobs", sys.executable) / f"{flavour}.sock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = template_pid(server, flavour)
        if pid is not None and sock.exists():
            return pid
        time.sleep(0.2)
    raise AssertionError(f"the {flavour} template did not start")


def logs(client: Client, name: str) -> str:
    return "\n".join(client.deployments.get(name).logs(lines=200).values())


def replica_pid(server: ServerProcess, name: str, timeout: float = 30) -> int:
    """The replica process of deployment ``name``: a warm one shows the cold one's command line and
    environment (which is how the tools that find replicas find it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in _proc_root().iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "cmdline").read_bytes().split(b"\0")[1:3] != [b"-m", b"aicloud.serving.replica"]:
                    continue
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                f"AICLOUD_URL={server.url}".encode() in env
                and f"AICLOUD_DEPLOYMENT_NAME={name}".encode() in env
            ):
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"no replica process of {name}")


def digits_row(names: list[str]) -> dict[str, float]:
    return {n: float(i % 5) for i, n in enumerate(names)}


@pytest.fixture(scope="module")
def models(client_module: Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("warm-models")
    mlp, names = digits_like(tmp / "mlp")
    return {
        "mlp": register(client_module, mlp, f"warm-mlp-{uuid.uuid4().hex[:6]}"),
        "cnn": register(client_module, digits_cnn(tmp / "cnn"), f"warm-cnn-{uuid.uuid4().hex[:6]}"),
        "names": names,
    }


@pytest.fixture(scope="module")
def client_module(server: ServerProcess) -> Iterator[Client]:
    with Client(url=server.url, token=server.token) as c:
        yield c


def deploy_warm(client: Client, server: ServerProcess, flavour: str, name: str, **spec: Any) -> Any:
    """Deploy ``name``; the first of a flavour starts its template (and itself cold): then deploy again."""
    dep = client.deployments.create(name, **spec).wait_ready(timeout=300)
    if WARM in logs(client, name):
        return dep
    wait_for_template(server, flavour)
    dep.delete()
    return client.deployments.create(name + "-w", **spec).wait_ready(timeout=300)


def test_the_mlp_and_the_cnn_start_from_their_templates_and_serve(
    client_module: Client, server: ServerProcess, models: dict[str, Any], unique: Callable[[str], str]
) -> None:
    client = client_module
    mlp = deploy_warm(client, server, "serving", unique("warm-mlp"), model=models["mlp"])
    cnn = deploy_warm(client, server, "serving-torch", unique("warm-cnn"), model=models["cnn"])
    try:
        for dep, flavour, needs_torch in ((mlp, "serving", False), (cnn, "serving-torch", True)):
            text = logs(client, dep.name)
            assert f"{WARM} {flavour}]" in text, text
            assert "ready (" in text, text
            rows = [digits_row(models["names"]), {n: 0.0 for n in models["names"]}]
            out = dep.predict(rows)
            assert len(out) == 2 and all(0 <= int(label) < 10 for label in out), out
            pid = replica_pid(server, dep.name)
            assert ("libtorch" in Path(f"/proc/{pid}/maps").read_text()) is needs_torch
            # what ps and the tools that look for replicas see: the cold replica's command line
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert cmd[1:3] == [b"-m", b"aicloud.serving.replica"], cmd
            assert f"AICLOUD_DEPLOYMENT_NAME={dep.name}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        mlp.delete()
        cnn.delete()


@pytest.mark.skipif(not SANDBOX, reason=f"the workload sandbox cannot run here: {sandbox_unavailable()}")
def test_a_warm_replica_is_confined_as_a_cold_one(
    client_module: Client,
    server: ServerProcess,
    http: httpx.Client,
    tmp_path: Path,
    unique: Callable[[str], str],
) -> None:
    from security.test_sandbox import PROBE, _assert_contained  # the security tests' probe and checks

    client = client_module
    secret = f"keeper-{uuid.uuid4().hex}"
    (tmp_path / "keeper").mkdir()
    (tmp_path / "keeper" / "keeper.py").write_text(KEEPER)
    keeper = deploy_warm(
        client,
        server,
        "serving",
        unique("warm-keeper"),
        service=tmp_path / "keeper",
        entrypoint="keeper.py:Keeper",
        env={"SECRET": secret},
    )
    # the probe runs as a member of another workspace
    ws = http.post("/api/v1/workspaces", json={"name": unique("warm-ws")}).json()
    admin_token = ws["admin_token"]["token"]
    created = httpx.post(
        f"{server.url}/api/v1/tokens",
        json={"name": "probe", "role": "member"},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert created.status_code == 201, created.text
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "probe.py").write_text(PROBE)
    with Client(url=server.url, token=created.json()["token"]) as member:
        probe = member.deployments.create(
            unique("warm-probe"), service=tmp_path / "svc", entrypoint="probe.py:Probe"
        )
        try:
            probe.wait_ready(timeout=300)
            assert WARM in logs(member, probe.name), logs(member, probe.name)
            keeper_dir = keeper.call("where", {"x": 1})["cwd"]
            root = str(template_root(server.home / "jobs", sys.executable))
            assert keeper_dir.startswith(root + "/")  # a sibling under the template's folder
            assert server.proc is not None
            targets = {
                "home": str(server.home),
                "server_pid": server.proc.pid,
                "victim_file": f"{keeper_dir}/secret.txt",
                "victim_tmp": f"{root}/serving.sock",
            }
            found = probe.call("probe", {"targets": targets})
            _assert_contained(found, secret)
            # its token is its own: in its environment, never in the template's (nor its memory)
            pid = replica_pid(server, probe.name)
            env = dict(
                item.split("=", 1)
                for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
                if "=" in item
            )
            token = env["AICLOUD_TOKEN"].encode()
            template = template_pid(server, "serving")
            assert template is not None
            assert token not in Path(f"/proc/{template}/environ").read_bytes()
            assert not memory_holds(template, token)
            assert memory_holds(pid, token)  # the search itself works
        finally:
            probe.delete()
            keeper.delete()


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether a writable private mapping of process ``pid`` holds ``needle``."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("rw"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if end - start > 1 << 30:
                continue
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except (OSError, ValueError, OverflowError):
                continue
    return False


def test_killing_the_template_leaves_its_replicas_serving_and_the_next_starts_anyway(
    client_module: Client, server: ServerProcess, models: dict[str, Any], unique: Callable[[str], str]
) -> None:
    client = client_module
    running = deploy_warm(client, server, "serving", unique("warm-run"), model=models["mlp"])
    try:
        pid = template_pid(server, "serving")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while template_pid(server, "serving") == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        row = [digits_row(models["names"])]
        assert len(running.predict(row)) == 1  # the replica forked before goes on
        # the next replica: the executor sees the template gone, starts it cold and a new template
        after = client.deployments.create(unique("warm-after"), model=models["mlp"]).wait_ready(timeout=300)
        try:
            assert WARM not in logs(client, after.name)
            assert len(after.predict(row)) == 1
            assert len(running.predict(row)) == 1
            new = wait_for_template(server, "serving")
            assert new != pid
        finally:
            after.delete()
        again = client.deployments.create(unique("warm-again"), model=models["mlp"]).wait_ready(timeout=300)
        try:
            assert WARM in logs(client, again.name)  # from the new template
            assert len(again.predict(row)) == 1
        finally:
            again.delete()
    finally:
        running.delete()


def test_a_replica_starts_cold_when_the_template_does_not_answer(
    client_module: Client, server: ServerProcess, models: dict[str, Any], unique: Callable[[str], str]
) -> None:
    """The supervisor falls back by itself: the template is there when the executor looks, gone when the
    replica connects (its process stopped, so nothing answers)."""
    client = client_module
    first = deploy_warm(client, server, "serving", unique("warm-stop"), model=models["mlp"])
    first.delete()
    pid = wait_for_template(server, "serving")
    os.kill(pid, signal.SIGSTOP)  # it accepts nothing, answers no ping
    try:
        dep = client.deployments.create(unique("warm-cold"), model=models["mlp"]).wait_ready(timeout=300)
        try:
            assert WARM not in logs(client, dep.name)
            assert len(dep.predict([digits_row(models["names"])])) == 1
        finally:
            dep.delete()
    finally:
        os.kill(pid, signal.SIGCONT)


def test_without_the_setting_replicas_start_cold(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = make_server(env={"AICLOUD_WARM_TEMPLATE": "false"})
    with Client(url=srv.url, token=srv.token) as c:
        mlp, names = digits_like(tmp_path / "mlp")
        ref = register(c, mlp, "cold-only")
        for i in range(2):
            dep = c.deployments.create(f"cold-{i}", model=ref).wait_ready(timeout=300)
            assert WARM not in logs(c, dep.name)
            assert len(dep.predict([digits_row(names)])) == 1
        assert template_pid(srv, "serving") is None


def test_a_warm_replica_outlives_a_killed_control_plane_and_is_adopted_then_stopped(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = make_server(home=tmp_path / "home")
    with Client(url=srv.url, token=srv.token) as c:
        mlp, names = digits_like(tmp_path / "mlp")
        ref = register(c, mlp, "adopted")
        dep = deploy_warm(c, srv, "serving", "adopt-me", model=ref)
        pid = replica_pid(srv, dep.name)
        template = template_pid(srv, "serving")
    srv.kill()  # kill -9: the template ends (its pipe closed), the replica does not
    deadline = time.monotonic() + 30
    while template_pid(srv, "serving") == template and time.monotonic() < deadline:
        time.sleep(0.1)
    assert template_pid(srv, "serving") != template
    assert Path(f"/proc/{pid}").exists()
    again = make_server(home=tmp_path / "home")
    # the restarted control plane starts the template its deployments fork from, before any launch
    assert wait_for_template(again, "serving") != template
    with Client(url=again.url, token=again.token) as c:
        adopted = c.deployments.get(dep.name).wait_ready(timeout=120)
        assert len(adopted.predict([digits_row(names)])) == 1
        assert (
            replica_pid(srv, dep.name) == pid
        )  # the same process (its AICLOUD_URL is the first port), adopted
        adopted.delete()  # SIGTERM through its supervisor: it drains and exits
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(f"/proc/{pid}").exists()


def test_unsandboxed_replicas_fork_from_the_template_too(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = make_server(env={"AICLOUD_ISOLATION": "none"})
    with Client(url=srv.url, token=srv.token) as c:
        mlp, names = digits_like(tmp_path / "mlp")
        dep = deploy_warm(c, srv, "serving", "unsandboxed", model=register(c, mlp, "unsandboxed"), cpus=2)
        assert WARM in logs(c, dep.name)
        assert len(dep.predict([digits_row(names)])) == 1
        pid = replica_pid(srv, dep.name)
        assert os.getsid(pid) != os.getsid(0)  # a session of its own, as a cold replica's
        dep.delete()


SITECUSTOMIZE = """
import threading

threading.Thread(target=threading.Event().wait, daemon=True).start()  # a thread before any import
"""


def test_a_template_with_a_second_thread_refuses_and_the_replica_starts_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every interpreter of this environment starts a thread (a ``sitecustomize``): the template refuses
    each fork (a fork copies one thread only), and the supervisor starts the replica the cold way."""
    from aicloud.executors.base import LaunchRequest
    from aicloud.executors.local import LocalExecutor
    from aicloud.wire.tcp import free_port

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))  # the template's, and the replica's
    mlp, names = digits_like(tmp_path / "mlp")
    ex = LocalExecutor(tmp_path / "jobs", warm_templates=True)  # unsandboxed: the model folder is visible
    handles: list[dict[str, Any]] = []
    try:
        port = free_port()
        env = {**os.environ, "AICLOUD_REPLICA_PORT": str(port), "AICLOUD_REPLICA_KEY": "k"}
        env["AICLOUD_REPLICA_MODEL_DIR"] = str(mlp)
        req = LaunchRequest(job_id="rep-threads", argv=[sys.executable, "-m", "aicloud.serving.replica"])
        req = LaunchRequest(**{**req.__dict__, "env": env, "template": "serving"})
        assert ex.templates is not None and ex.templates.usable(req)
        first_port = free_port()
        first_env = {**env, "AICLOUD_REPLICA_PORT": str(first_port)}
        handles.append(ex.submit(LaunchRequest(**{**req.__dict__, "job_id": "rep-first", "env": first_env})))
        deadline = time.monotonic() + 120
        while ex.templates.ready("serving") is None:
            assert time.monotonic() < deadline, "the template did not start"
            time.sleep(0.2)
        handle = ex.submit(req)
        handles.append(handle)
        deadline = time.monotonic() + 120
        while True:
            text = ex.log_path(handle).read_text()
            if "ready (" in text:
                break
            assert ex.poll(handle).state == "running", text
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        assert "[aicloud: started without the warm template: ValueError: 2 threads" in text, text
        assert WARM not in text
        body = {"inputs": [digits_row(names)]}
        deadline = time.monotonic() + 30
        while True:  # the ready line comes just before the replica binds its port
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/predict", json=body, headers={"Authorization": "Bearer k"}
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert answer.status_code == 200, answer.text
        template_log = (tmp_path / "jobs" / ".templates" / "serving.log").read_text()
        assert "refused a launch: 2 threads" in template_log
    finally:
        for started in handles:
            ex.cancel(started, 0)
        for started in handles:
            deadline = time.monotonic() + 30
            while ex.poll(started).state == "running" and time.monotonic() < deadline:
                time.sleep(0.1)
            ex.cleanup(started)
        ex.close()

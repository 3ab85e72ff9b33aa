"""Workloads run sandboxed: a job or a replica of another workspace cannot reach the control
plane's secrets, its environment, or another workload's files.

The probe of issue #17 read ``/proc/<server pid>/environ`` from a command job, found
``AICLOUD_HOME`` and printed the admin token, the master key and the database. Each attack here
runs as code of a second workspace's member (``member`` in conftest), through the real server.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicloud import Client
from aicloud.testing.server import ServerProcess, sandbox_unavailable

pytestmark = pytest.mark.skipif(
    sandbox_unavailable() is not None, reason=f"the workload sandbox cannot run here: {sandbox_unavailable()}"
)

# One file: run as a job it prints its findings; served as a Service it answers them.
PROBE = r'''
import json
import os
import sys

from aicloud import Service, handler


def attempt(action):
    try:
        result = action()
    except OSError as exc:
        return "denied: " + type(exc).__name__
    return "GOT: " + repr(result)[:200]


def read(path):
    with open(path, "rb") as f:
        return f.read(4096)


def write(path):
    with open(path, "wb") as f:
        f.write(b"pwned")
    return "written"


def environ_leaks():
    """Every process this workload can see whose environment names AICLOUD_HOME."""
    leaks = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                env = read(f"/proc/{pid}/environ")
            except OSError:
                continue
            if b"AICLOUD_HOME=" in env:
                leaks.append(pid)
    return leaks


def attempts(targets):
    home = targets["home"]
    found = {
        "uid": os.getuid(),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "environ_leaks": environ_leaks(),
        "env_home": os.environ.get("AICLOUD_HOME"),
        "signal_server": attempt(lambda: os.kill(targets["server_pid"], 0)),
        "tmp": sorted(os.listdir("/tmp")),
    }
    paths = {
        "credentials": f"{home}/credentials",
        "master_key": f"{home}/master.key",
        "database": f"{home}/aicloud.db",
        "proc_1_environ": "/proc/1/environ",
        "server_environ": f"/proc/{targets['server_pid']}/environ",
        "other_workdir": targets.get("victim_file", "/nonexistent"),
        "other_tmp": targets.get("victim_tmp", "/nonexistent"),
    }
    for name, path in paths.items():
        found["read_" + name] = attempt(lambda path=path: read(path))
    found["list_home"] = attempt(lambda: os.listdir(home))
    found["write_system"] = attempt(lambda: write("/usr/aicloud-pwned"))
    found["write_code"] = attempt(lambda: write(os.path.join(os.path.dirname(os.__file__), "pwned.py")))
    return found


class Probe(Service):
    @handler
    def probe(self, targets: dict) -> dict:
        return attempts(targets)


if __name__ == "__main__":
    print("RESULT " + json.dumps(attempts(json.loads(os.environ["TARGETS"]))), flush=True)
'''

VICTIM = r"""
import os, sys, time
secret = sys.argv[1]
with open("secret.txt", "w") as f:
    f.write(secret)
with open("/tmp/victim-secret", "w") as f:
    f.write(secret)
print("WORKDIR " + os.getcwd(), flush=True)
time.sleep(300)
"""


def _result(log: str) -> dict[str, Any]:
    lines = [line for line in log.splitlines() if line.startswith("RESULT ")]
    assert lines, log[-3000:]
    return dict(json.loads(lines[-1][len("RESULT ") :]))


def _assert_contained(found: dict[str, Any], secret: str) -> None:
    assert secret not in json.dumps(found)
    for key, value in found.items():
        if key.startswith(("read_", "write_", "list_", "signal_")):
            assert str(value).startswith("denied: "), f"{key}: {value}"
    assert found["environ_leaks"] == [], found  # no process it sees has the server's environment
    assert found["env_home"] is None
    assert "victim-secret" not in found["tmp"]
    assert max(found["pids"]) < 50, found["pids"]  # its own PID namespace: only its own processes
    if os.geteuid() == 0:
        assert found["uid"] != 0  # an unprivileged uid of its own


@pytest.fixture(scope="module")
def member_client(server: ServerProcess, member: httpx.Client) -> Any:
    token = member.headers["Authorization"].split()[1]
    with Client(url=server.url, token=token) as c:
        yield c


@pytest.fixture(scope="module")
def victim(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A job of workspace ``default`` that keeps a secret in its working folder and its /tmp."""
    secret = f"victim-{uuid.uuid4().hex}"
    code = tmp_path_factory.mktemp("victim") / "victim.py"
    code.write_text(VICTIM)
    with Client(url=server.url, token=server.token) as admin:
        job = admin.jobs.run(command=f"python victim.py {secret}", code=code)
        deadline = time.monotonic() + 120
        workdir = None
        while workdir is None and time.monotonic() < deadline:
            for line in job.logs().splitlines():
                if line.startswith("WORKDIR "):
                    workdir = line.split(" ", 1)[1]
            time.sleep(0.2)
        assert workdir, job.logs()
        yield {"secret": secret, "workdir": workdir}
        job.cancel()


def _targets(server: ServerProcess, victim: dict[str, str]) -> dict[str, Any]:
    assert server.proc is not None
    return {
        "home": str(server.home),
        "server_pid": server.proc.pid,
        "victim_file": f"{victim['workdir']}/secret.txt",
        "victim_tmp": "/tmp/victim-secret",
    }


def test_a_job_cannot_reach_the_control_plane_or_another_job(
    server: ServerProcess, member_client: Client, victim: dict[str, str], tmp_path: Path
) -> None:
    assert (server.home / "credentials").exists() and Path(victim["workdir"], "secret.txt").exists()
    (tmp_path / "probe.py").write_text(PROBE)
    env = {"TARGETS": json.dumps(_targets(server, victim))}
    job = member_client.jobs.run(command="python probe.py", code=tmp_path / "probe.py", env=env)
    job.wait(timeout=180)
    assert job.status == "succeeded", job.logs()
    _assert_contained(_result(job.logs()), victim["secret"])


def test_a_replica_cannot_reach_the_control_plane_or_a_job(
    server: ServerProcess, member_client: Client, victim: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "probe.py").write_text(PROBE)
    name = f"probe-{uuid.uuid4().hex[:8]}"
    dep = member_client.deployments.create(name, service=tmp_path / "svc", entrypoint="probe.py:Probe")
    try:
        dep.wait_ready()
        found = dep.call("probe", {"targets": _targets(server, victim)})
        _assert_contained(found, victim["secret"])
    finally:
        dep.delete()


def test_limits_from_the_spec_bound_the_job(member_client: Client, tmp_path: Path) -> None:
    script = tmp_path / "hog.py"
    script.write_text(
        "import sys, threading\n"
        "try:\n"
        "    hog = bytearray(2 << 30)\n"
        "    print('allocated 2 GiB')\n"
        "except MemoryError:\n"
        "    print('memory capped')\n"
        "started = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
        "        started += 1\n"
        "except RuntimeError:\n"
        "    print('threads capped at', started)\n"
        "if sys.argv[1:] == ['spin']:\n"
        "    while True:\n"
        "        pass\n"
    )
    limits = {"memory_mb": 1024, "processes": 64}
    job = member_client.jobs.run(command="python hog.py", code=script, limits=limits).wait(timeout=120)
    log = job.logs()
    assert job.status == "succeeded", log
    assert "memory capped" in log and "allocated" not in log
    capped = [line for line in log.splitlines() if line.startswith("threads capped at")]
    assert capped and int(capped[0].split()[-1]) < 64, log

    spin = member_client.jobs.run(command="python hog.py spin", code=script, limits={"cpu_seconds": 2})
    spin.wait(timeout=120)
    assert spin.status == "failed"
    assert spin.info.usage.get("exit_code") == -24  # SIGXCPU: its CPU time ran out


def test_a_bad_limit_is_a_422(member: httpx.Client) -> None:
    body = {"kind": "command", "spec": {"command": "true", "limits": {"memory_mb": 1}}}
    r = member.post("/api/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    r = member.post("/api/v1/jobs", json={"kind": "command", "spec": {"command": "true", "limits": {"x": 1}}})
    assert r.status_code == 422, r.text

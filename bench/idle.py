"""Idle cost: the CPU the control plane, a replica and its supervisor use while nothing is asked
of them, with no deployment and with one ready deployment that gets no traffic.

    python bench/idle.py [--seconds 30]

Starts its own control plane (SQLite, local blobs, the workload sandbox where it runs), registers
a small MLP without training, measures each process's CPU time (user + system, psutil) over
``--seconds`` of idleness (after a few seconds of settling), first with no deployment, then with
one ready replica after 20 requests (forked from the warm template: the template and the replica's
monitor and init are measured too). Prints a table and writes bench/results/idle.json. The
numbers are shares of one core; on a busy machine they read a little high (wake-ups come late and
are merged less), never lower.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from aicloud import Client
from aicloud.artifacts.architectures import MLP
from aicloud.artifacts.format import save_builtin
from aicloud.testing.server import ServerProcess

RESULTS = Path(__file__).parent / "results"
SIG = {"inputs": [{"name": n, "dtype": "float64"} for n in "ab"], "outputs": [{"name": "label"}]}


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def serving_processes(deployment_home: Path, server_pid: int) -> dict[str, psutil.Process]:
    """The replica's processes: its supervisor (whose argv names the server's home), the replica and,
    for one forked from the warm template, the replica's monitor and init; the warm template and its
    sandbox's init (the control plane's children)."""
    out: dict[str, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "supervise.py" in cmd and str(deployment_home) in cmd:
            out["replica supervisor"] = p
        elif cmd.endswith("-m aicloud.serving.replica"):
            out["replica"] = p
        elif cmd in ("aicloud-warm-monitor", "aicloud-warm-init"):
            out[f"replica {cmd.rsplit('-', 1)[1]} (warm)"] = p
    for p in psutil.Process(server_pid).children(recursive=True):
        cmd = " ".join(p.cmdline())
        if "-m aicloud.serving.template" in cmd and "bwrap" not in cmd:
            out["template " + ("init" if "sandbox_init.py" in cmd else "(serving)")] = p
    return out


def measure(processes: dict[str, psutil.Process], seconds: float) -> dict[str, float]:
    before = {k: cpu_seconds(p) for k, p in processes.items()}
    time.sleep(seconds)
    return {k: 100 * (cpu_seconds(p) - before[k]) / seconds for k, p in processes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="aicloud-idle-"))
    rows: list[dict[str, Any]] = []
    with ServerProcess(home / "home") as server:
        assert server.proc is not None
        control = {"control plane": psutil.Process(server.proc.pid)}
        time.sleep(5)
        for name, pct in measure(control, args.seconds).items():
            rows.append({"case": "no deployment", "process": name, "cpu_percent": round(pct, 3)})
        with Client(url=server.url, token=server.token) as c:
            config = {"task": "tabular-classification", "signature": SIG, "labels": [0, 1]}
            folder = save_builtin(home / "mlp", MLP(2, [16], 2, dropout=0.0), config)
            files = {p.name: c.blobs.upload(p.read_bytes()) for p in sorted(Path(folder).iterdir())}
            saved = json.loads((Path(folder) / "config.json").read_text())
            c.models.register_version("idle-mlp", files, signature=SIG, config=saved, metrics={})
            # the first replica starts cold and starts the warm template; the second is forked from it
            c.deployments.create("idle-first", model="idle-mlp:1").wait_ready(timeout=120).delete()
            time.sleep(10)
            dep = c.deployments.create("idle-mlp", model="idle-mlp:1").wait_ready(timeout=120)
            for _ in range(20):
                dep.predict([[0.1, 0.2]])
            time.sleep(5)
            processes = {**control, **serving_processes(home / "home", server.proc.pid)}
            for name, pct in measure(processes, args.seconds).items():
                rows.append({"case": "one idle deployment", "process": name, "cpu_percent": round(pct, 3)})
            dep.delete()
    table = Table(title=f"idle CPU, % of one core over {args.seconds:g} s")
    for column in ("case", "process", "cpu %"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["case"], r["process"], f"{r['cpu_percent']:.2f}")
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": platform.platform(), "cpus": psutil.cpu_count(), "seconds": args.seconds, "rows": rows}
    (RESULTS / "idle.json").write_text(json.dumps(out, indent=2) + "\n")
    Console().print(f"wrote {RESULTS / 'idle.json'}")


if __name__ == "__main__":
    main()

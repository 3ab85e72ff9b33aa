"""Cold start from zero, per model and runtime: the first request through the gateway to a deployment
scaled to zero, until its answer (issue #21, item 5; docs/serving.md, "Cold start").

    python bench/cold_start.py [--repeats 3] [--cases mlp:unset,cnn:auto,...]

Starts its own control plane (SQLite) in a temporary AICLOUD_HOME and registers, without training
(cold start does not depend on the weights' values): the digits MLP (64 → 256 → 256 → 10, built-in,
safetensors), the digits CNN (8x8 images, built-in) and the CNN's ONNX export as a version of its
own. For each case (model, the deployment's ``runtime``) it deploys, waits until ready, scales to
zero (``min_replicas: 0``, ``idle_timeout_s: 1``) and waits until the replica process is gone, then
times one request through the gateway (the gateway holds it, the controller starts a replica, it
answers), ``--repeats`` times. It reports the median and the range, and what the replica's log
says of the last start: its runtime line and its timeline (``start-up and imports``, ``fetch and
build``, ``load and warm-up``). Prints a table and writes bench/results/cold_start.json. No
targets are asserted: the machine is shared, and the numbers are what they are.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from replica_procs import delete_deployment, kill_stray_replicas, replica_pids
from rich.console import Console
from rich.table import Table

from aicloud import Client
from aicloud.artifacts.architectures import CNN, MLP
from aicloud.artifacts.format import save_builtin, save_onnx
from aicloud.testing.server import ServerProcess

RESULTS = Path(__file__).parent / "results"
CASES = (
    "mlp:unset",
    "mlp:numpy",
    "mlp:onnxruntime",
    "mlp:torch",
    "mlp:auto",
    "cnn:unset",
    "cnn:onnxruntime",
    "cnn:auto",
    "cnn-onnx:unset",
)
READY_RE = re.compile(r"ready \((?P<engine>[^;]+); (?P<phases>[^)]*)\)")


def models(folder: Path) -> dict[str, Path]:
    """The model folders: digits-shaped (64 pixels, 10 labels), random weights."""
    names = [f"pixel_{i}" for i in range(64)]
    config = {
        "task": "tabular-classification",
        "signature": {"inputs": [{"name": n, "dtype": "float64"} for n in names]},
        "labels": list(range(10)),
    }
    torch.manual_seed(0)
    mlp = save_builtin(folder / "mlp", MLP(64, [256, 256], 10).eval(), config)
    cnn_module = CNN([8, 8], 10, hidden=[32]).eval()
    cnn = save_builtin(folder / "cnn", cnn_module, {**config, "task": "image-classification"})
    onnx = save_onnx(
        folder / "cnn-onnx", cnn_module, torch.zeros(2, 64), {**config, "task": "image-classification"}
    )
    return {"mlp": mlp, "cnn": cnn, "cnn-onnx": onnx}


def register(c: Client, folder: Path, name: str) -> str:
    files = {p.name: c.blobs.upload(p.read_bytes()) for p in sorted(folder.iterdir())}
    config = json.loads((folder / "config.json").read_text())
    out = c.models.register_version(
        name, files, signature=config.get("signature") or {}, config=config, metrics={}
    )
    return f"{name}:{out['version']}"


def wait_scaled_to_zero(c: Client, srv: ServerProcess, name: str) -> None:
    deadline = time.monotonic() + 120
    while c.deployments.get(name).status != "scaled_to_zero" or any(
        True for _ in replica_pids(srv.url, name)
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not scale to zero in 120 s")
        time.sleep(0.2)
    time.sleep(0.5)


def last_start(c: Client, name: str) -> dict[str, Any]:
    """What the new replica says of its start: the runtime serving the model (the API's
    ``replicas[].runtime``) and the timeline of its ``ready`` log line."""
    deadline = time.monotonic() + 10
    runtime, text = None, ""
    while time.monotonic() < deadline:
        d = c.deployments.get(name)
        runtime = next((r.runtime for r in d.info.replicas if r.runtime), None)
        text = "\n".join(d.logs(lines=200).values())
        if runtime and READY_RE.search(text):
            break
        time.sleep(0.2)
    match = READY_RE.search(text)
    return {"runtime": runtime, "timeline": match["phases"] if match else None}


def one_case(
    console: Console, c: Client, srv: ServerProcess, ref: str, case: str, repeats: int
) -> dict[str, Any]:
    runtime = case.split(":")[1]
    name = "cold-" + case.replace(":", "-")
    spec: dict[str, Any] = {"min_replicas": 1, "max_replicas": 1, "downscale_delay_s": 0}
    if runtime != "unset":
        spec["runtime"] = runtime
    d = c.deployments.create(name, model=ref, **spec).wait_ready(timeout=300)
    body = {"inputs": [[float(i % 7) for i in range(64)]]}
    url, headers = f"{srv.url}/v1/endpoints/{name}/predict", {"Authorization": f"Bearer {srv.token}"}
    firsts: list[float] = []
    info: dict[str, Any] = {}
    try:
        d.update(min_replicas=0, idle_timeout_s=1)
        for _ in range(repeats):
            wait_scaled_to_zero(c, srv, name)
            t = time.perf_counter()
            r = httpx.post(url, json=body, headers=headers, timeout=300)
            firsts.append(time.perf_counter() - t)
            r.raise_for_status()
            info = last_start(c, name)
    finally:
        delete_deployment(c, srv.url, name)
    row = {
        "case": case,
        "first_request_s": round(statistics.median(firsts), 3),
        "min_s": round(min(firsts), 3),
        "max_s": round(max(firsts), 3),
        "runs": [round(x, 3) for x in firsts],
        **info,
    }
    console.print(f"  {case}: {row['first_request_s']:.2f} s (runs {row['runs']}); {info.get('runtime')}")
    return row


def compact(timeline: str | None) -> str:
    """``start-up and imports 0.14s, fetch and build 0.55s, load and warm-up 0.01s`` → ``0.14 + 0.55
    + 0.01 s`` (the column's header names the phases)."""
    if not timeline:
        return "-"
    return " + ".join(re.findall(r"([0-9.]+)s", timeline)) + " s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES), help="model:runtime pairs, comma-separated")
    args = parser.parse_args()
    console = Console()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aicloud-bench-cold-") as tmp:
        work = Path(tmp)
        folders = models(work / "models")
        srv = ServerProcess(work / "home")
        try:
            srv.start()
            with Client(url=srv.url, token=srv.token) as c:
                refs = {kind: register(c, folder, f"cold-{kind}") for kind, folder in folders.items()}
                for case in cases:
                    rows.append(one_case(console, c, srv, refs[case.split(":")[0]], case, args.repeats))
        finally:
            srv.stop()
            kill_stray_replicas(srv.url)
    table = Table(title=f"cold start from zero: first request through the gateway (median of {args.repeats})")
    for col in (
        "model:runtime",
        "first request",
        "range",
        "served by",
        "replica: imports + fetch and build + load and warm-up",
    ):
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(
            row["case"],
            f"{row['first_request_s']:.2f} s",
            f"{row['min_s']:.2f} to {row['max_s']:.2f} s",
            (row.get("runtime") or "-").split(" (", 1)[0],
            compact(row.get("timeline")),
        )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    out = {
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "rows": rows,
    }
    (RESULTS / "cold_start.json").write_text(json.dumps(out, indent=1) + "\n")
    console.print(f"wrote {RESULTS / 'cold_start.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

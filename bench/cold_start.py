"""Cold start from zero, per model and runtime: the first request through the gateway to a deployment
scaled to zero, until its answer (issue #21, item 5; docs/serving.md, "Cold start").

    python bench/cold_start.py [--repeats 3] [--cases mlp:unset,cnn:auto,...] [--starts warm,cold]

Starts its own control plane (SQLite) in a temporary AICLOUD_HOME and registers, without training
(cold start does not depend on the weights' values): the digits MLP (64 → 256 → 256 → 10, built-in,
safetensors), the digits CNN (8x8 images, built-in) and the CNN's ONNX export as a version of its
own. For each case (model, the deployment's ``runtime``) it deploys, waits until ready, scales to
zero (``min_replicas: 0``, ``idle_timeout_s: 1``) and waits until the replica process is gone, then
times one request through the gateway (the gateway holds it, the controller starts a replica, it
answers), ``--repeats`` times. ``--starts warm,cold`` (the default) runs two control planes side by
side, one forking replicas from the warm templates and one with ``AICLOUD_WARM_TEMPLATE=false``, and
interleaves their rounds. It reports the median and the range, and what the replica's log
says of the last start: its runtime line and its timeline (``start-up and imports``, ``fetch and
build``, ``load and warm-up``; for a warm start the first is the time since the fork). Prints a table
and writes bench/results/cold_start.json. No targets are asserted: the machine is shared, and the
numbers are what they are.
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


class Plane:
    """One control plane of the benchmark: ``warm`` (replicas fork from the warm templates) or ``cold``
    (``AICLOUD_WARM_TEMPLATE=false``: each replica starts a new interpreter)."""

    def __init__(self, mode: str, home: Path) -> None:
        self.mode = mode
        self.srv = ServerProcess(home, env={"AICLOUD_WARM_TEMPLATE": str(mode == "warm").lower()})
        self.client: Client | None = None
        self.refs: dict[str, str] = {}

    def start(self, folders: dict[str, Path]) -> None:
        self.srv.start()
        self.client = Client(url=self.srv.url, token=self.srv.token)
        self.refs = {kind: register(self.client, folder, f"cold-{kind}") for kind, folder in folders.items()}

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        self.srv.stop()
        kill_stray_replicas(self.srv.url)


def first_request(plane: Plane, name: str) -> tuple[float, dict[str, Any]]:
    """Scale ``name`` to zero, then time one request through the gateway; and what the replica said."""
    c, srv = plane.client, plane.srv
    assert c is not None
    wait_scaled_to_zero(c, srv, name)
    body = {"inputs": [[float(i % 7) for i in range(64)]]}
    url, headers = f"{srv.url}/v1/endpoints/{name}/predict", {"Authorization": f"Bearer {srv.token}"}
    t = time.perf_counter()
    r = httpx.post(url, json=body, headers=headers, timeout=300)
    took = time.perf_counter() - t
    r.raise_for_status()
    return took, last_start(c, name)


def one_case(console: Console, planes: list[Plane], case: str, repeats: int) -> list[dict[str, Any]]:
    """The case on every plane, interleaved: each round times one first request on each plane in turn
    (the order alternates), so a busy moment of the machine falls on both alike."""
    kind, runtime = case.split(":")
    name = "cold-" + case.replace(":", "-")
    spec: dict[str, Any] = {"min_replicas": 1, "max_replicas": 1, "downscale_delay_s": 0}
    if runtime != "unset":
        spec["runtime"] = runtime
    firsts: dict[str, list[float]] = {p.mode: [] for p in planes}
    info: dict[str, dict[str, Any]] = {p.mode: {} for p in planes}
    try:
        for plane in planes:
            assert plane.client is not None
            d = plane.client.deployments.create(name, model=plane.refs[kind], **spec).wait_ready(timeout=300)
            # The first start of a flavour starts its template: a warm start is measured from then on.
            d.update(min_replicas=0, idle_timeout_s=1)
        for round_ in range(repeats):
            for plane in planes if round_ % 2 == 0 else planes[::-1]:
                took, said = first_request(plane, name)
                firsts[plane.mode].append(took)
                info[plane.mode] = said
    finally:
        for plane in planes:
            assert plane.client is not None
            delete_deployment(plane.client, plane.srv.url, name)
    rows = []
    for plane in planes:
        runs = firsts[plane.mode]
        row = {
            "case": case,
            "start": plane.mode,
            "first_request_s": round(statistics.median(runs), 3),
            "min_s": round(min(runs), 3),
            "max_s": round(max(runs), 3),
            "runs": [round(x, 3) for x in runs],
            **info[plane.mode],
        }
        median = row["first_request_s"]
        console.print(f"  {case} {plane.mode}: {median:.2f} s (runs {row['runs']}); {row.get('runtime')}")
        rows.append(row)
    return rows


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
    parser.add_argument(
        "--starts",
        default="warm,cold",
        help="warm (forked from the warm template), cold (AICLOUD_WARM_TEMPLATE=false), or both, interleaved",
    )
    args = parser.parse_args()
    console = Console(width=max(160, Console().width))
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    modes = [m.strip() for m in args.starts.split(",") if m.strip() in ("warm", "cold")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aicloud-bench-cold-") as tmp:
        work = Path(tmp)
        folders = models(work / "models")
        planes = [Plane(mode, work / f"home-{mode}") for mode in modes]
        try:
            for plane in planes:
                plane.start(folders)
            for case in cases:
                rows += one_case(console, planes, case, args.repeats)
        finally:
            for plane in planes:
                plane.stop()
    table = Table(title=f"cold start from zero: first request through the gateway (median of {args.repeats})")
    for col in (
        "model:runtime",
        "start",
        "first request",
        "range",
        "served by",
        "replica: imports + fetch and build + load and warm-up",
    ):
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(
            row["case"],
            row["start"],
            f"{row['first_request_s']:.2f} s",
            f"{row['min_s']:.2f} to {row['max_s']:.2f} s",
            (row.get("runtime") or "-").split(" (", 1)[0],
            compact(row.get("timeline")),
        )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    out = {
        "repeats": args.repeats,
        "starts": modes,
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

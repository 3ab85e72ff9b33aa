"""Peer servers for bench/serving.py: LitServe, Ray Serve and BentoML, each in its own virtual
environment (``bench/.venv-<peer>``, made by ``bench/peers/setup.sh``), one at a time.

    with PeerServer("litserve", "minilm", threads=2, workdir=tmp) as peer:
        body = peer.body_for({"text": "a sentence"})
        peer.wait_ready(body)
        row = run_load(peer.url, "", body, 32, 8)

A peer runs as a subprocess of its venv's python in a new session (its own process group), on a free
port, with the same thread variables aicloud's local executor sets for ``cpus`` and a marker
variable; stopping it sends SIGTERM to the group, then SIGKILL, then kills any process still
carrying the marker (Ray's raylet and workers, BentoML's and LitServe's workers).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from aicloud.wire.tcp import free_port

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
PEERS = ("litserve", "rayserve", "bentoml")
VERSION_MODULE = {"litserve": "litserve", "rayserve": "ray", "bentoml": "bentoml"}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
MARKER = "BENCH_PEER_RUN"


def venv_python(peer: str) -> Path:
    return BENCH / f".venv-{peer}" / "bin" / "python"


def available() -> list[str]:
    """The peers whose venv ``setup.sh`` finished (``bench/.venv-<peer>/.installed``)."""
    return [p for p in PEERS if (BENCH / f".venv-{p}" / ".installed").exists()]


def version(peer: str) -> str:
    code = f"import {VERSION_MODULE[peer]} as m, torch; print(m.__version__, torch.__version__)"
    out = subprocess.run([str(venv_python(peer)), "-c", code], capture_output=True, text=True, timeout=120)
    return out.stdout.strip() or f"? ({out.stderr.strip()[-200:]})"


def _marked_pids(marker: str) -> list[int]:
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    return pids


class PeerServer:
    """One peer serving one workload (``mlp`` or ``minilm``); a context manager that stops it."""

    def __init__(
        self,
        peer: str,
        workload: str,
        threads: int,
        workdir: Path,
        model_dir: Path | None = None,
        workers: int = 1,
    ) -> None:
        """``threads``: cpus in all; ``workers`` inference workers (processes or replicas) get
        ``threads // workers`` torch threads each."""
        if peer not in PEERS:
            raise ValueError(f"unknown peer {peer!r}; choose from {', '.join(PEERS)}")
        if not venv_python(peer).exists():
            raise FileNotFoundError(f"{venv_python(peer)} is missing: run bash bench/peers/setup.sh {peer}")
        self.peer, self.workload, self.workers = peer, workload, workers
        self.threads = max(1, threads // workers)
        threads = self.threads
        self.port = free_port()
        self.route = "/predict" if workload == "mlp" else "/embed"
        self.url = f"http://127.0.0.1:{self.port}{self.route}"
        self.marker = uuid.uuid4().hex
        self.log_path = workdir / f"{peer}-{workload}-{workers}w.log"
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="bray-", dir="/tmp")) if peer == "rayserve" else None
        self.env = {
            **os.environ,
            **dict.fromkeys(THREAD_VARS, str(threads)),
            MARKER: self.marker,
            "PYTHONPATH": str(HERE),
            "PYTHONUNBUFFERED": "1",
            "BENCH_PEER_WORKLOAD": workload,
            "BENCH_PEER_PORT": str(self.port),
            "BENCH_PEER_THREADS": str(threads),
            "BENCH_PEER_WORKERS": str(workers),
            "BENCH_PEER_MODEL_DIR": str(model_dir or ""),
            "BENCH_PEER_RAY_TMP": str(self.ray_tmp or ""),
            "BENTOML_HOME": str(workdir / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ADDRESS": "",
        }
        self.env.pop("VIRTUAL_ENV", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def body_for(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request aicloud gets, as this peer takes it: BentoML's batchable API takes a list."""
        if self.peer == "bentoml" and self.workload == "minilm":
            return {"text": [body["text"]]}
        return body

    def command(self) -> list[str]:
        py = str(venv_python(self.peer))
        if self.peer == "litserve":
            return [py, str(HERE / "litserve_server.py")]
        if self.peer == "rayserve":
            return [py, str(HERE / "rayserve_app.py")]
        target = "bentoml_service:" + ("MLPService" if self.workload == "mlp" else "MiniLMService")
        return [py, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(self.port)]

    def __enter__(self) -> PeerServer:
        self.started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=HERE,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def check(self, response: httpx.Response) -> None:
        """The answer is one label (mlp) or one 384-float embedding (minilm)."""
        response.raise_for_status()
        doc = response.json()
        if self.workload == "mlp":
            ok = isinstance(doc, dict) and len(doc.get("outputs", [])) == 1
        else:
            vec = doc[0] if self.peer == "bentoml" else doc
            ok = isinstance(vec, list) and len(vec) == 384
        if not ok:
            raise RuntimeError(f"{self.peer}: unexpected answer {response.text[:300]}")

    def wait_ready(self, body: dict[str, Any], timeout: float = 300) -> float:
        """Seconds from start until the first correct answer; raises with the log tail on failure."""
        assert self.proc is not None
        deadline = self.started + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.peer} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.post(self.url, json=body, timeout=30)
                if r.status_code == 200:
                    self.check(r)
                    return time.monotonic() - self.started
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise RuntimeError(f"{self.peer} not ready in {timeout:.0f} s ({last}):\n{self.log_tail()}")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Every process of the peer stopped (SIGSTOP) for the block, then continued: an idle peer
        can still use the cores (LitServe's workers poll their queues: about 0.3 of the 2 cores,
        which slowed a ceiling measured beside it by 18%), and the ceiling must not pay for that."""
        pids = _marked_pids(self.marker)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)

    def stop(self, grace: float = 20) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of the group is left
            self.proc.wait()
        deadline = time.monotonic() + 10
        while (pids := _marked_pids(self.marker)) and time.monotonic() < deadline:
            for pid in pids:  # children outside the group (Ray's raylet and workers)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        if self.ray_tmp is not None:
            shutil.rmtree(self.ray_tmp, ignore_errors=True)


def peer_rows(
    console: Any,
    workload: str,
    peers: list[str],
    body: dict[str, Any],
    threads: int,
    workdir: Path,
    args: Any,
    run_load: Any,
    model_dir: Path | None = None,
    workers: int = 1,
    target: Callable[[PeerServer, str, dict[str, Any]], list[dict[str, Any]]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each peer in turn: start, wait ready, the same load at each of ``args.concurrency`` for
    ``args.duration`` s, then ``target(server, label, body)`` (bench/serving.py's interleaved
    slices, whose rows it adds) while the peer is still up, then stop. Returns the rows
    (``system``: the peer) and per peer ``{version, ready_s}`` (seconds from start to the first
    answer) or ``{version, error}``."""
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    for peer in peers:
        info[peer] = {"version": version(peer)}
        server = PeerServer(peer, workload, threads, workdir, model_dir, workers)
        label = peer if workers == 1 else f"{peer}, {workers} workers"
        peer_body = server.body_for(body)
        try:
            with server:
                ready = server.wait_ready(peer_body)
                info[peer]["ready_s"] = round(ready, 2)
                console.print(f"  {peer} ({info[peer]['version']}) ready in {ready:.1f} s")
                for c in args.concurrency:
                    r = run_load(server.url, "", peer_body, c, args.duration)
                    errors = f"  errors {json.dumps(r['errors'])}" if r["errors"] else ""
                    console.print(
                        f"  {label:<18} c={c:<3} {r['req_s']:>8} req/s  "
                        f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms{errors}"
                    )
                    rows.append({"system": peer, "path": label, "concurrency": c, "workers": workers, **r})
                if target is not None:
                    rows += target(server, label, peer_body)
        except Exception as exc:  # one broken peer does not lose the others' rows
            console.print(f"  [red]{peer} failed: {exc}[/red]")
            info[peer]["error"] = str(exc)[-2000:]
    return rows, info

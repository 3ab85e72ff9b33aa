"""OpenAI embeddings: MiniLM through aicloud's gateway against LitServe's OpenAI embedding spec (issue #22).

    .venv/bin/python bench/openai_embeddings.py                       # 2 cycles of 8 s slices
    .venv/bin/python bench/openai_embeddings.py --duration 3 --cycles 1   # a smoke run

* aicloud: a control plane (aicloud.testing.server), the zoo's MiniLM version built as ``aicloud zoo
  pull`` builds it (:func:`aicloud.zoo.minilm.build`: ONNX with pooling and normalization inside,
  the tokenizer, ``text`` block; the torch weights for fine-tuning are left out of the upload),
  deployed with ``runtime: auto`` (ONNX Runtime), ``max_batch_size=32``, ``max_wait_ms=5``, 2 cpus;
  load on ``POST /openai/v1/embeddings`` with ``{"model": <deployment>, "input": "<sentence>",
  "encoding_format": "float"}`` and an aicloud token.
* LitServe 0.2.19 (bench/.venv-litserve, ``bash bench/peers/setup.sh litserve``):
  ``ls.OpenAIEmbeddingSpec()`` serving the same MiniLM weights in torch (bench/peers/litserve_openai.py;
  LitServe's batcher ``max_batch_size=32, batch_timeout=0.005``; 2 torch threads), load on its
  ``POST /v1/embeddings`` with the same body.
* The same closed-loop load generator (bench/loadgen.py) at concurrency 1 and 32; each cycle runs
  every (system, concurrency) slice, the order reversed every other cycle (bench/interleave.py's
  ``order_of``), so both systems see the same drift of a shared machine. Both servers stay up for
  the whole run; the one not measured is idle (LitServe's workers poll their queues: a little CPU).

Prints a table (req/s, p50, p99 per system and concurrency: the mean over cycles, each cycle's
rows in the JSON) and writes bench/results/openai_embeddings.json. Engines differ (ONNX Runtime
against torch): the rows compare what a user deploys with each, not the serving layers alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from loadgen import run_load
from peers import harness

from aicloud import Client
from aicloud.testing.server import ServerProcess

RESULTS = Path(__file__).resolve().parent / "results"
SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays on the river bank."
NAME = "minilm-openai"
CPUS = 2


class LitServeOpenAI(harness.PeerServer):
    """The LitServe peer, serving OpenAI's embeddings route (bench/peers/litserve_openai.py)."""

    def __init__(self, workdir: Path, threads: int) -> None:
        super().__init__("litserve", "minilm", threads, workdir)
        self.route = "/v1/embeddings"
        self.url = f"http://127.0.0.1:{self.port}{self.route}"

    def command(self) -> list[str]:
        return [str(harness.venv_python("litserve")), str(harness.HERE / "litserve_openai.py")]

    def check(self, response: httpx.Response) -> None:
        response.raise_for_status()
        vec = response.json()["data"][0]["embedding"]
        if not (isinstance(vec, list) and len(vec) == 384):
            raise RuntimeError(f"litserve: unexpected answer {response.text[:300]}")


def minilm_folder(work: Path) -> Path:
    """The zoo's MiniLM text-embedding version, without the fine-tuning weights."""
    from aicloud.zoo import minilm

    folder = work / "minilm"
    check = minilm.build(folder, {"name": "minilm", "version": "bench"})
    for extra in (minilm.ENCODER_WEIGHTS, minilm.ENCODER_CONFIG):
        (folder / extra).unlink(missing_ok=True)
    print(f"built MiniLM: ONNX against torch within {check['max_abs_diff']:.2g}")
    return folder


def deploy(client: Client, folder: Path) -> str:
    files = {p.name: client.blobs.upload(p.read_bytes()) for p in sorted(folder.iterdir())}
    config = json.loads((folder / "config.json").read_text())
    out = client.models.register_version(
        NAME, files, signature=config.get("signature") or {}, config=config, metrics={}
    )
    ref = f"{NAME}:{out['version']}"
    t0 = time.monotonic()
    dep = client.deployments.create(
        NAME, model=ref, runtime="auto", max_batch_size=32, max_wait_ms=5, cpus=CPUS, min_replicas=1
    )
    dep.wait_ready(timeout=600)
    print(f"aicloud deployment ready in {time.monotonic() - t0:.1f} s")
    return ref


def check_same(aicloud: tuple[str, str], peer: str) -> float:
    """The largest difference between the two systems' vectors for the sentence."""
    body = {"model": NAME, "input": SENTENCE, "encoding_format": "float"}
    a = httpx.post(aicloud[0], json=body, headers={"Authorization": f"Bearer {aicloud[1]}"}, timeout=60)
    b = httpx.post(peer, json=body, timeout=60)
    a.raise_for_status()
    b.raise_for_status()
    va, vb = np.array(a.json()["data"][0]["embedding"]), np.array(b.json()["data"][0]["embedding"])
    return float(np.abs(va - vb).max())


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for system in dict.fromkeys(r["system"] for r in rows):
        for c in dict.fromkeys(r["concurrency"] for r in rows):
            mine = [r for r in rows if r["system"] == system and r["concurrency"] == c]
            if mine:
                table.append(
                    {
                        "system": system,
                        "concurrency": c,
                        "req_s": round(float(np.mean([r["req_s"] for r in mine])), 1),
                        "p50_ms": round(float(np.mean([r["p50_ms"] or 0 for r in mine])), 2),
                        "p99_ms": round(float(np.mean([r["p99_ms"] or 0 for r in mine])), 2),
                        "errors": sum(sum(r["errors"].values()) for r in mine),
                        "cycles": len(mine),
                    }
                )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per slice (after a 1 s warm-up)")
    ap.add_argument("--cycles", type=int, default=2, help="interleaved cycles (even: drift cancels)")
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--out", type=Path, default=RESULTS / "openai_embeddings.json")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    if "litserve" not in harness.available():
        sys.exit("bench/.venv-litserve is missing: bash bench/peers/setup.sh litserve")
    work = Path(tempfile.mkdtemp(prefix="bench-openai-"))
    rows: list[dict[str, Any]] = []
    srv = ServerProcess(work / "home").start()
    try:
        with Client(url=srv.url, token=srv.token) as client, LitServeOpenAI(work, CPUS) as peer:
            folder = minilm_folder(work)
            deploy(client, folder)
            replicas = client.deployments.get(NAME).info.replicas
            runtime_line = next((r.runtime for r in replicas if r.runtime), None)
            peer_body = {"model": NAME, "input": SENTENCE}
            print(f"litserve ready in {peer.wait_ready(peer_body):.1f} s")
            targets = {
                "aicloud": (f"{srv.url}/openai/v1/embeddings", srv.token),
                "litserve": (peer.url, ""),
            }
            diff = check_same(targets["aicloud"], peer.url)
            print(f"the two systems' vectors differ by up to {diff:.2g}")
            body = {"model": NAME, "input": SENTENCE, "encoding_format": "float"}
            slices = [(s, c) for s in targets for c in levels]
            for cycle in range(1, args.cycles + 1):
                for system, c in slices if cycle % 2 else slices[::-1]:  # interleave.order_of
                    url, token = targets[system]
                    row = run_load(url, token, body, c, args.duration)
                    rows.append({"system": system, "concurrency": c, "cycle": cycle, **row})
                    line = f"{row['req_s']:7.1f} req/s  p99 {row['p99_ms']} ms"
                    print(f"  cycle {cycle} {system:9s} c={c:<3d} {line}")
            client.deployments.get(NAME).delete()
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    table = summarize(rows)
    print()
    print(f"{'system':10s} {'conc':>4s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>6s}")
    for r in table:
        print(
            f"{r['system']:10s} {r['concurrency']:4d} {r['req_s']:8.1f} {r['p50_ms']:8.2f} "
            f"{r['p99_ms']:8.2f} {r['errors']:6d}"
        )
    result = {
        "what": "OpenAI POST /v1/embeddings, MiniLM, one sentence per request: aicloud /openai/v1 "
        "(runtime auto, ONNX Runtime) vs LitServe OpenAIEmbeddingSpec (torch), 2 cpus each, interleaved",
        "args": {k: str(v) for k, v in vars(args).items()},
        "max_abs_diff_between_systems": diff,
        "aicloud_runtime": str(runtime_line),
        "litserve": harness.version("litserve"),
        "table": table,
        "rows": rows,
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

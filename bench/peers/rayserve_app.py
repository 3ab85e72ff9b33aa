"""Ray Serve 2.60 serving one workload of bench/serving.py (run with bench/.venv-rayserve/bin/python).

Starts a local Ray instance confined to this process (``num_cpus=2``, no dashboard, its own temp
folder ``BENCH_PEER_RAY_TMP``), one replica behind Serve's HTTP proxy on ``BENCH_PEER_PORT``, and
shuts Serve and Ray down on SIGTERM/SIGINT. Environment as in litserve_server.py. MiniLM batches
with ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)``; ``max_ongoing_requests=64`` so
that a batch of 32 can form (Serve's default is 5 per replica).

    POST /predict {"inputs": [[64 numbers]]} → {"outputs": [label]}
    POST /embed   {"text": "..."}            → [384 floats]
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import ray
from ray import serve
from starlette.requests import Request

WORKLOAD = os.environ["BENCH_PEER_WORKLOAD"]
THREADS = int(os.environ.get("BENCH_PEER_THREADS", "1"))
WORKERS = int(os.environ.get("BENCH_PEER_WORKERS", "1"))  # MiniLM replicas, THREADS cpus each
LOGGING = {"enable_access_log": False, "log_level": "WARNING"}


@serve.deployment(num_replicas=1, max_ongoing_requests=64, ray_actor_options={"num_cpus": THREADS})
class MLP:
    def __init__(self, model_dir: str, threads: int) -> None:
        import torch
        from benchmodels import DigitsMLP

        torch.set_num_threads(threads)
        self.model = DigitsMLP.load(model_dir)

    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        return {"outputs": self.model.predict(body["inputs"])}


@serve.deployment(num_replicas=WORKERS, max_ongoing_requests=64, ray_actor_options={"num_cpus": THREADS})
class MiniLM:
    def __init__(self, threads: int) -> None:
        import torch
        from benchmodels import Encoder

        torch.set_num_threads(threads)
        self.encoder = Encoder()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.encode(texts)

    async def __call__(self, request: Request) -> list[float]:
        body = await request.json()
        return await self.embed(body["text"])


def main() -> int:
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=os.environ.get("BENCH_PEER_RAY_TMP"),
    )
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": int(os.environ["BENCH_PEER_PORT"])},
            logging_config=LOGGING,
        )
        if WORKLOAD == "mlp":
            app = MLP.bind(os.environ["BENCH_PEER_MODEL_DIR"], THREADS)
            route = "/predict"
        else:
            app = MiniLM.bind(THREADS)
            route = "/embed"
        serve.run(app, name=WORKLOAD, route_prefix=route, logging_config=LOGGING)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own
            signal.signal(sig, lambda *_: stop.set())
        print(f"ray serve: {WORKLOAD} ready on {route}", flush=True)
        stop.wait()
        print("ray serve: stopping", flush=True)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

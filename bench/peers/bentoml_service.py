"""BentoML 1.4.39 services for bench/serving.py, run with bench/.venv-bentoml/bin/python as

    python -m bentoml serve bentoml_service:MLPService    --host 127.0.0.1 --port PORT   # (a)
    python -m bentoml serve bentoml_service:MiniLMService --host 127.0.0.1 --port PORT   # (b)

from bench/peers (environment as in litserve_server.py). One worker each (MiniLM:
``BENCH_PEER_WORKERS``), access log off as for the other systems. MiniLM is a batchable API: BentoML's
adaptive batcher, ``max_batch_size=32``. It has no fixed wait, only a latency budget, ``max_latency_ms``
(``BENCH_BENTOML_MAX_LATENCY_MS``, default 1000): requests that would exceed it are refused with 503
(counted as errors). BentoML's default of 60 s trains its wait model on multi-second waits and then
serves ~40 req/s at c=32 here, so 1000 is the fairer setting. A batchable API takes a list per request:
the load generator sends ``{"text": ["..."]}`` and gets ``[[384 floats]]``.

    POST /predict {"inputs": [[64 numbers]]} → {"outputs": [label]}
    POST /embed   {"text": ["..."]}          → [[384 floats]]
"""

from __future__ import annotations

import os

import bentoml
import torch
from benchmodels import DigitsMLP, Encoder

THREADS = int(os.environ.get("BENCH_PEER_THREADS", "1"))
WORKERS = int(os.environ.get("BENCH_PEER_WORKERS", "1"))
MAX_LATENCY_MS = int(os.environ.get("BENCH_BENTOML_MAX_LATENCY_MS", "1000"))
NO_ACCESS_LOG = {"access": {"enabled": False}}


@bentoml.service(workers=1, resources={"cpu": "1"}, traffic={"timeout": 60}, logging=NO_ACCESS_LOG)
class MLPService:
    def __init__(self) -> None:
        torch.set_num_threads(THREADS)
        self.model = DigitsMLP.load(os.environ["BENCH_PEER_MODEL_DIR"])

    @bentoml.api(route="/predict")
    def predict(self, inputs: list[list[float]]) -> dict:
        return {"outputs": self.model.predict(inputs)}


@bentoml.service(workers=WORKERS, resources={"cpu": "2"}, traffic={"timeout": 60}, logging=NO_ACCESS_LOG)
class MiniLMService:
    def __init__(self) -> None:
        torch.set_num_threads(THREADS)
        self.encoder = Encoder()

    @bentoml.api(route="/embed", batchable=True, max_batch_size=32, max_latency_ms=MAX_LATENCY_MS)
    def embed(self, text: list[str]) -> list[list[float]]:
        return self.encoder.encode(text)

"""LitServe 0.2.19 serving one workload of bench/serving.py (run with bench/.venv-litserve/bin/python).

Environment (set by bench/peers/harness.py): ``BENCH_PEER_WORKLOAD`` (``mlp`` or ``minilm``),
``BENCH_PEER_PORT``, ``BENCH_PEER_THREADS`` (torch threads per worker), ``BENCH_PEER_WORKERS``
(inference workers on the CPU, ``workers_per_device``; 1 by default), ``BENCH_PEER_MODEL_DIR`` (mlp: the
folder :func:`benchmodels.export_mlp` wrote). MiniLM batches with LitServe's own batcher
(``max_batch_size=32, batch_timeout=0.005``), the MLP answers one request at a time.

    POST /predict {"inputs": [[64 numbers]]} → {"outputs": [label]}
    POST /embed   {"text": "..."}            → [384 floats]
"""

from __future__ import annotations

import os

import litserve as ls
import torch
from benchmodels import DigitsMLP, Encoder

WORKLOAD = os.environ["BENCH_PEER_WORKLOAD"]
THREADS = int(os.environ.get("BENCH_PEER_THREADS", "1"))
WORKERS = int(os.environ.get("BENCH_PEER_WORKERS", "1"))


class MLPAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        torch.set_num_threads(THREADS)
        self.model = DigitsMLP.load(os.environ["BENCH_PEER_MODEL_DIR"])

    def decode_request(self, request: dict) -> list:
        return request["inputs"]

    def predict(self, rows: list) -> list:
        return self.model.predict(rows)

    def encode_response(self, output: list) -> dict:
        return {"outputs": output}


class MiniLMAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        torch.set_num_threads(THREADS)
        self.encoder = Encoder()

    def decode_request(self, request: dict) -> str:
        return request["text"]

    def predict(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.encode(list(texts))

    def encode_response(self, output: list[float]) -> list[float]:
        return output


def main() -> None:
    if WORKLOAD == "mlp":
        api: ls.LitAPI = MLPAPI(api_path="/predict")
    else:
        api = MiniLMAPI(api_path="/embed", max_batch_size=32, batch_timeout=0.005)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=WORKERS, timeout=60)
    server.run(
        host="127.0.0.1",
        port=int(os.environ["BENCH_PEER_PORT"]),
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
        access_log=False,
    )


if __name__ == "__main__":
    main()

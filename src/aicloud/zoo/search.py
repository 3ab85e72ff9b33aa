"""Semantic search over a text column (docs/zoo.md#semantic-search): the index and its queries.

Runs in the compression worker (ops ``embed_index`` and ``embed_search``), never in the control plane:
it loads the encoder (a text-embedding ONNX version, e.g. ``zoo/minilm``) with ONNX Runtime and the
``tokenizers`` package. An index is a folder kept as a model version (task ``vector-index``):

* ``vectors.npy``: float32 ``[rows, D]``, L2-normalized (the encoder normalizes), read with
  ``allow_pickle=False``; row ``i`` is the dataset's row ``i``;
* ``texts.json``: the column's values (what a hit shows);
* ``index.faiss``: a faiss HNSW graph over the vectors, only above :data:`BRUTE_FORCE_MAX_ROWS` rows
  (faiss-cpu installed); below that a query is one matrix-vector product in numpy, exact;
* ``config.json``: ``aicloud.model/v1``, task ``vector-index``, the ``index`` block (dataset, column,
  encoder, rows, dimensions, backend).

The crossover is measured by ``bench/semantic_search.py`` (bench/results/semantic_search.json).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from aicloud.errors import ValidationError

VECTORS = "vectors.npy"
TEXTS = "texts.json"
FAISS_INDEX = "index.faiss"
TASK = "vector-index"
#: numpy brute force (exact) up to this many rows; an HNSW graph (faiss) above, when faiss is
#: installed. bench/semantic_search.py (384 dimensions, one thread, the 2-core machine): HNSW's query
#: beats numpy's from ~10k rows, but both are milliseconds against a search's ~1.2 s in the worker
#: until ~50k (numpy 4.7 ms p50, HNSW 0.18 ms, its build 12 s); at 100k numpy takes 16 ms (docs/zoo.md).
BRUTE_FORCE_MAX_ROWS = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
#: texts embedded per ONNX Runtime call
BATCH = 64
MAX_K = 1000


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def embed_texts(encoder: Path, texts: list[str], threads: int | None = None) -> np.ndarray:
    """float32 ``[len(texts), D]`` unit vectors from the text-embedding model in ``encoder``."""
    from aicloud.artifacts.format import read_config
    from aicloud.artifacts.onnxrt import onnx_runner
    from aicloud.artifacts.text import TextTokenizer

    config = read_config(encoder)
    if config.get("task") != "text-embedding":
        raise ValidationError.field(
            "model", f"the encoder must be a text-embedding model, not {config.get('task')!r}"
        )
    tokenizer = TextTokenizer.load(encoder, config)
    run = onnx_runner(encoder / "model.onnx", threads)
    out = np.zeros((len(texts), int(config.get("dimensions") or 0)), dtype=np.float32)
    chunks, _ = tokenizer.encode_chunks(texts, BATCH)
    for members, arrays in chunks:
        vectors = np.asarray(run(arrays), dtype=np.float32)
        if out.shape[1] != vectors.shape[1]:
            out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        out[members] = vectors
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)  # the graph normalizes; this keeps it exact in float32


def build_index(req: dict[str, Any]) -> dict[str, Any]:
    """Embed the request's column into ``out`` (vectors, texts, the HNSW graph above the crossover)."""
    from aicloud.training.datasets import read_dataset

    frame, _ = read_dataset(req["dataset"]["path"], req["dataset"].get("format"))
    column = str(req["column"])
    if column not in frame.columns:
        raise ValidationError.field("column", f"the dataset has no column {column!r}")
    values = frame[column]
    texts = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values]
    out = Path(req["out"])
    out.mkdir(parents=True, exist_ok=True)
    vectors = embed_texts(Path(req["encoder"]), texts)
    np.save(out / VECTORS, vectors, allow_pickle=False)
    (out / TEXTS).write_text(json.dumps(texts))
    backend = "numpy"
    if len(texts) > BRUTE_FORCE_MAX_ROWS and faiss_available():
        import faiss

        graph = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        graph.add(vectors)
        faiss.write_index(graph, str(out / FAISS_INDEX))
        backend = "faiss-hnsw"
    index = {
        **dict(req["index"]),
        "rows": len(texts),
        "dimensions": int(vectors.shape[1]),
        "backend": backend,
    }
    config = {"format": "aicloud.model/v1", "task": TASK, "architecture": {"type": TASK}, "index": index}
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return {"rows": len(texts), "dimensions": int(vectors.shape[1]), "backend": backend}


def top_k(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact: the ``k`` rows of highest cosine (inner product of unit vectors), best first."""
    scores = vectors @ query
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.argsort(-scores[part], kind="stable")]
    return order, scores[order]


def search(req: dict[str, Any]) -> dict[str, Any]:
    """The ``k`` rows nearest to the request's query text: ``{"hits": [{"row", "score", "text"}]}``."""
    folder = Path(req["index"])
    k = int(req["k"])
    query = embed_texts(Path(req["encoder"]), [str(req["query"])], threads=1)[0]
    texts = json.loads((folder / TEXTS).read_text())
    if (folder / FAISS_INDEX).exists():
        import faiss

        graph = faiss.read_index(str(folder / FAISS_INDEX))
        graph.hnsw.efSearch = max(HNSW_EF_SEARCH, k)  # type: ignore[attr-defined]
        scores, rows = graph.search(query.reshape(1, -1), min(k, len(texts)))
        pairs = [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]
        backend = "faiss-hnsw"
    else:
        vectors = np.load(folder / VECTORS, allow_pickle=False)
        rows_, scores_ = top_k(vectors, query, k)
        pairs = [(int(r), float(s)) for r, s in zip(rows_, scores_, strict=True)]
        backend = "numpy"
    return {"hits": [{"row": r, "score": s, "text": texts[r]} for r, s in pairs], "backend": backend}

"""Semantic search (docs/zoo.md#semantic-search): a vector index over a dataset version's text column,
kept as a model version (task ``vector-index``) with lineage to the dataset version and the encoder.

The control plane never embeds or loads a model: building an index and answering a query run in the
sandboxed compression worker (:mod:`aicloud.zoo.search`), which gets the dataset's and the encoder's
files (decrypted) in a private working folder. Bad input (a dataset of another workspace, a column
that is not there, an encoder that is not a text-embedding model) is a 4xx before any work, and a
failed build registers nothing.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from aicloud.artifacts.format import CONFIG, read_config
from aicloud.auth import Principal
from aicloud.compression.runner import run_worker
from aicloud.entities import ModelVersion
from aicloud.errors import ConflictError, NotFoundError, ValidationError
from aicloud.schemas.embeddings import IndexCreate, IndexOut, SearchHit, SearchOut, SearchRequest
from aicloud.schemas.jobs import ModelVersionOut
from aicloud.server.services.models import resolve_model_ref
from aicloud.server.services.names import check_name, parse_version
from aicloud.server.state import AppState
from aicloud.zoo.search import TASK, TEXTS, VECTORS

__all__ = ["build_index", "search_index"]

ENCODER_FILES = ("config.json", "model.onnx", "tokenizer.json")
INDEX_FILES = (CONFIG, VECTORS, TEXTS, "index.faiss")
INDEX_TIMEOUT_S = 1800.0


def _copy(state: AppState, digest: str, path: Path) -> None:
    with state.blobs.open(digest) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _encoder(state: AppState, workspace_id: str, ref: str, folder: Path) -> ModelVersion:
    try:
        version = resolve_model_ref(state, workspace_id, ref)
    except NotFoundError as exc:
        raise ValidationError.field("model", exc.message) from None
    if version.config.get("task") != "text-embedding" or not all(f in version.files for f in ENCODER_FILES):
        raise ValidationError.field(
            "model",
            f"{ref} is not a text-embedding model (task {version.config.get('task')!r}); try zoo/minilm",
        )
    folder.mkdir(parents=True)
    for name in ENCODER_FILES:
        _copy(state, version.files[name], folder / name)
    return version


def build_index(state: AppState, principal: Principal, body: IndexCreate) -> IndexOut:
    ws = principal.workspace.id
    name, _, number = body.dataset.partition(":")
    ds = state.store.datasets.get_version(ws, check_name(name, "dataset"), parse_version(number or "latest"))
    columns = {str(c.get("name")): c for c in ds.schema}
    if body.column not in columns:
        shown = ", ".join(list(columns)[:20])
        raise ValidationError.field(
            "column", f"dataset {ds.name}:{ds.version} has no column {body.column!r} (it has: {shown})"
        )
    index_name = check_name(body.name or f"{ds.name}-{body.column}-index"[:100], "name")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="aicloud-index-"))
    try:
        encoder = _encoder(state, ws, body.model, workdir / "encoder")
        data = workdir / f"dataset.{ds.format}"
        _copy(state, ds.blob_digest, data)
        ref = {"id": ds.id, "name": ds.name, "version": ds.version}
        request = {
            "op": "embed_index",
            "dataset": {"path": str(data), "format": ds.format},
            "column": body.column,
            "encoder": str(workdir / "encoder"),
            "out": str(workdir / "out"),
            "index": {
                "dataset": ref,
                "column": body.column,
                "encoder": {
                    "ref": body.model,
                    "id": encoder.id,
                    "name": encoder.name,
                    "version": encoder.version,
                },
                "metric": "cosine",
            },
        }
        report = run_worker(request, workdir, state.compress_confine, timeout_s=INDEX_TIMEOUT_S)
        out = workdir / "out"
        config = read_config(out)
        files = {
            f: state.blobs.put_bytes((out / f).read_bytes()).digest
            for f in INDEX_FILES
            if (out / f).is_file()
        }
        lineage: dict[str, Any] = {
            "job_id": None,
            "run_id": None,
            "datasets": [{"role": "indexed", **ref}],
            "code_digest": None,
            "task": TASK,
            "parent_version": encoder.id,
            "derived": {"from": body.model, "method": "embedding-index", "column": body.column},
        }
        with state.blob_lock:
            if not all(state.blobs.exists(d) for d in files.values()):
                raise ConflictError("a stored file was removed by a concurrent delete; try again")
            version = state.store.models.create_version(
                workspace_id=ws,
                name=index_name,
                files=files,
                signature={"inputs": [{"name": "query", "dtype": "string"}], "outputs": [{"name": "hits"}]},
                config=config,
                metrics={"rows": float(report["rows"])},
                lineage=lineage,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.monotonic() - started
    return IndexOut(
        index=ModelVersionOut.model_validate(version),
        rows=int(report["rows"]),
        dimensions=int(report["dimensions"]),
        backend=str(report["backend"]),
        seconds=round(seconds, 3) if math.isfinite(seconds) else 0.0,
    )


def search_index(state: AppState, principal: Principal, ref: str, body: SearchRequest) -> SearchOut:
    version = resolve_model_ref(state, principal.workspace.id, ref)
    if version.config.get("task") != TASK:
        raise ValidationError.field(
            "index", f"{ref} is not a vector index (task {version.config.get('task')!r})"
        )
    encoder_id = ((version.config.get("index") or {}).get("encoder") or {}).get("id")
    workdir = Path(tempfile.mkdtemp(prefix="aicloud-search-"))
    try:
        try:
            encoder = state.store.models.get_version_by_id(principal.workspace.id, str(encoder_id))
        except NotFoundError:
            raise ConflictError(f"the encoder {encoder_id} of index {ref} no longer exists") from None
        (workdir / "encoder").mkdir()
        for name in ENCODER_FILES:
            _copy(state, encoder.files[name], workdir / "encoder" / name)
        (workdir / "index").mkdir()
        for name, digest in version.files.items():
            _copy(state, digest, workdir / "index" / Path(name).name)
        request = {
            "op": "embed_search",
            "index": str(workdir / "index"),
            "encoder": str(workdir / "encoder"),
            "query": body.query,
            "k": body.k,
        }
        result = run_worker(request, workdir, state.compress_confine)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return SearchOut(
        index=f"{version.name}:{version.version}",
        hits=[SearchHit.model_validate(h) for h in result["hits"]],
        backend=str(result["backend"]),
    )

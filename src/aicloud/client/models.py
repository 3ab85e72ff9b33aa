"""The model registry in the SDK: versions, aliases, lineage, loading a model for local use, and
registering a new version from uploaded files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aicloud.client.extras import MissingExtraError
from aicloud.errors import DataCorruptedError
from aicloud.schemas.compression import CompareOut
from aicloud.schemas.jobs import ModelOut, ModelVersionOut

if TYPE_CHECKING:
    from aicloud.client import Client

RegisteredModel = ModelVersionOut
MODELS = "/api/v1/models"


def _versions(name: str) -> str:
    return f"{MODELS}/{name}/versions"


def _alias(name: str, alias: str) -> str:
    return f"{MODELS}/{name}/aliases/{alias}"


def parse_ref(ref: str) -> tuple[str, str]:
    """``name`` → latest, ``name:3`` → version 3, ``name@production`` → an alias. Returns (name, path)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, _alias(name, alias)
    name, _, version = ref.partition(":")
    return name, f"{_versions(name)}/{version or 'latest'}"


#: compression runs a worker that imports torch and measures; it may take minutes on a busy machine
COMPRESSION_TIMEOUT_S = 660.0


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aicloud" / "models"


class ModelsAPI:
    """``client.models``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, ref: str) -> ModelVersionOut:
        """A version by ``name``, ``name:version`` or ``name@alias``."""
        _, path = parse_ref(ref)
        return ModelVersionOut.model_validate(self._client._transport.json("GET", path))

    def get_by_id(self, version_id: str) -> ModelVersionOut:
        return ModelVersionOut.model_validate(
            self._client._transport.json("GET", f"/api/v1/model-versions/{version_id}")
        )

    def versions(self, name: str, *, offset: int = 0, limit: int = 1000) -> list[ModelVersionOut]:
        """A model's versions, oldest first: ``limit`` (up to 1,000) after ``offset``."""
        params = {"offset": offset, "limit": limit}
        items = self._client._transport.json("GET", _versions(name), params=params)
        return [ModelVersionOut.model_validate(v) for v in items]

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersionOut:
        """Point ``alias`` at ``version``; it moves atomically from wherever it pointed."""
        out = self._client._transport.json("PUT", _alias(name, alias), json={"version": version})
        return ModelVersionOut.model_validate(out)

    def delete_alias(self, name: str, alias: str) -> None:
        self._client._transport.request("DELETE", _alias(name, alias))

    def lineage(self, ref: str) -> dict[str, Any]:
        """Where a version came from: job, run (with its final metrics), datasets with their lineage, code."""
        version = self.get(ref)
        lineage = dict(version.lineage)
        datasets = []
        for d in lineage.get("datasets", []):
            entry = dict(d)
            try:
                ds = self._client.datasets.get(d["name"], d["version"])
                entry.update(sha256=ds.sha256, num_rows=ds.num_rows, parent=ds.lineage.get("parent"))
            except Exception:
                entry["missing"] = True
            datasets.append(entry)
        lineage["datasets"] = datasets
        if lineage.get("run_id"):
            lineage["run"] = self._client.runs.get(lineage["run_id"]).model_dump(mode="json")
        return {
            "model": version.name,
            "version": version.version,
            "aliases": version.aliases,
            "metrics": version.metrics,
            **lineage,
        }

    def download(self, ref: str, folder: str | os.PathLike[str] | None = None) -> Path:
        """The version's files in ``folder`` (default: a cache keyed by version id), sha256-checked."""
        version = self.get(ref)
        target = Path(folder) if folder is not None else cache_dir() / version.id
        target.mkdir(parents=True, exist_ok=True)
        for filename, digest in version.files.items():
            path = target / Path(filename).name
            if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                continue
            data = self._client.blobs.read(digest)
            if hashlib.sha256(data).hexdigest() != digest:
                raise DataCorruptedError(f"file {filename} of {ref} does not match its sha256")
            tmp = path.with_name(f".{path.name}.part{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return target

    def load(self, ref: str) -> Any:
        """A callable model for local use: rows in, predictions out (``aicloud.artifacts.loader``).
        Loading reads safetensors/ONNX and JSON only; nothing is unpickled. Needs ``aicloud[train]``
        (PyTorch, ONNX Runtime): the model runs in this process."""
        try:
            from aicloud.artifacts.loader import load_model
        except ModuleNotFoundError as exc:
            raise MissingExtraError("Client.models.load", "train", [exc.name or str(exc)]) from exc

        return load_model(self.download(ref))

    def list(self, *, offset: int = 0, limit: int = 100) -> list[ModelOut]:
        """Registered models, newest first: ``limit`` (up to 1,000) after ``offset``."""
        items = self._client._transport.json("GET", MODELS, params={"offset": offset, "limit": limit})
        return [ModelOut.model_validate(m) for m in items]

    def register_version(
        self,
        name: str,
        files: Mapping[str, str],
        *,
        signature: Mapping[str, Any],
        config: Mapping[str, Any],
        metrics: Mapping[str, float],
        run_id: str | None = None,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        """Register a new version of model ``name`` from files already uploaded as blobs
        (``{"config.json": digest, "model.safetensors": digest}``, see :meth:`BlobsAPI.upload`);
        the server fills the lineage from ``job_id``. Returns the version as the server sent it."""
        body = {
            "files": dict(files),
            "signature": dict(signature),
            "config": dict(config),
            "metrics": dict(metrics),
            "run_id": run_id,
            "job_id": job_id,
        }
        version: dict[str, Any] = self._client._transport.json(
            "POST", _versions(quote(name, safe="")), json=body
        )
        return version

    # --- evaluation and batch prediction (docs/evaluation.md)

    def record_metrics(self, name: str, version: int, metrics: Mapping[str, float]) -> ModelVersionOut:
        """Merge evaluation metrics (``eval:<dataset>:<version>:<metric>``) into version ``name:version``;
        what an ``evaluate`` job calls with its token."""
        path = f"{_versions(quote(name, safe=''))}/{version}/metrics"
        out = self._client._transport.json("POST", path, json={"metrics": dict(metrics)})
        return ModelVersionOut.model_validate(out)

    def evaluate(
        self,
        ref: str,
        dataset: Any,
        *,
        target: str | None = None,
        text: str | None = None,
        chunk_rows: int | None = None,
        wait: bool = True,
        progress: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Score version ``ref`` (``name``, ``name:3``, ``name@alias``) on a dataset version (``name``,
        ``name:version`` or a :class:`DatasetVersion`) in an ``evaluate`` job; the metrics are recorded
        on the version as ``eval:<dataset>:<version>:<metric>``. A classifier gets ``accuracy``,
        ``f1_macro``, ``roc_auc``; a regressor ``rmse``, ``mae``, ``r2``. ``target``: the label column
        (default: the model's own); ``text``: a text classifier's text column (``text``). Returns the
        metrics (``{"accuracy": 0.97, ...}``), or the :class:`~aicloud.client.jobs.Job` with
        ``wait=False``. A failed job raises
        :class:`~aicloud.errors.AicloudError` with its message."""
        from aicloud.client._specs import dataset_ref
        from aicloud.client.evaluation import job_failed, wait_rows

        spec: dict[str, Any] = {"model": ref, "datasets": {"data": dataset_ref(dataset)}, "target": target}
        if chunk_rows is not None:
            spec["chunk_rows"] = chunk_rows
        if text is not None:
            spec["text"] = text
        job = self._client.jobs._submit({"kind": "evaluate", "spec": spec})
        if not wait:
            return job
        wait_rows(self._client, job, progress, timeout)
        if job.status != "succeeded":
            raise job_failed(job)
        resolved = job.info.spec["resolved_model"]
        data = job.info.spec["resolved_datasets"]["data"]
        prefix = f"eval:{data['name']}:{data['version']}:"
        version = self.get_by_id(resolved["id"])
        return {k[len(prefix) :]: v for k, v in version.metrics.items() if k.startswith(prefix)}

    def batch_predict(
        self,
        ref: str,
        dataset: Any,
        *,
        output: str | None = None,
        text: str | None = None,
        chunk_rows: int | None = None,
        wait: bool = True,
        progress: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Predict every row of a dataset version with version ``ref`` in a ``batch_predict`` job, in
        chunks of ``chunk_rows`` (10,000) rows; the input columns plus ``prediction`` (classifiers:
        the label, and ``proba_<label>`` per class) become the next version of dataset ``output``
        (default ``<dataset>-predictions``) with lineage to the model and dataset versions; ``text``: a text
        classifier's text column (``text``). Returns that
        :class:`DatasetVersion`, or the :class:`~aicloud.client.jobs.Job` with ``wait=False``."""
        from aicloud.client._specs import dataset_ref
        from aicloud.client.evaluation import job_failed, predictions_of, wait_rows

        spec: dict[str, Any] = {"model": ref, "datasets": {"data": dataset_ref(dataset)}, "output": output}
        if chunk_rows is not None:
            spec["chunk_rows"] = chunk_rows
        if text is not None:
            spec["text"] = text
        job = self._client.jobs._submit({"kind": "batch_predict", "spec": spec})
        if not wait:
            return job
        wait_rows(self._client, job, progress, timeout)
        if job.status != "succeeded":
            raise job_failed(job)
        return predictions_of(self._client, job)

    # --- compression (docs/compression.md)

    def _derive(self, ref: str, action: str, body: dict[str, Any]) -> ModelVersionOut:
        version = self.get(ref)
        path = f"{_versions(quote(version.name, safe=''))}/{version.version}/{action}"
        out = self._client._transport.json(
            "POST", path, json=body, timeout=COMPRESSION_TIMEOUT_S, retry=False
        )
        return ModelVersionOut.model_validate(out)

    def export(self, ref: str, format: str = "onnx", *, tolerance: float | None = None) -> ModelVersionOut:
        """Export version ``ref`` to ONNX as the model's next version, with lineage to it. The server
        checks the export against ``ref`` on examples built from the signature: a largest absolute
        output difference over ``tolerance`` (1e-4; only stricter values are accepted) is a
        :class:`~aicloud.errors.ValidationError` naming it, and no version is made. A version that is
        ONNX already is a :class:`~aicloud.errors.ConflictError`."""
        body: dict[str, Any] = {"format": format}
        if tolerance is not None:
            body["tolerance"] = tolerance
        return self._derive(ref, "export", body)

    def quantize(
        self, ref: str, method: str = "dynamic-int8", *, calibration: str | None = None
    ) -> ModelVersionOut:
        """An int8 variant of ``ref`` as the model's next version (ONNX Runtime; a built-in model is
        exported to ONNX first): ``dynamic-int8``, or ``static-int8`` with ``calibration``, a dataset
        version (``name`` or ``name:version``) that has the model's input columns."""
        return self._derive(ref, "quantize", {"method": method, "calibration": calibration})

    def prune(
        self,
        ref: str,
        amount: float = 0.5,
        *,
        structured: bool = True,
        finetune_epochs: int = 3,
        dataset: str | None = None,
    ) -> ModelVersionOut:
        """A smaller built-in model as the model's next version: ``amount`` of each hidden layer's
        units (and the CNN's channels) removed, the weakest by L2 norm, then ``finetune_epochs`` of
        training on ``dataset`` (default: the version's training dataset). Only ``structured=True``."""
        body = {
            "amount": amount,
            "structured": structured,
            "finetune_epochs": finetune_epochs,
            "dataset": dataset,
        }
        return self._derive(ref, "prune", body)

    def bundle(self, ref: str, path: str | os.PathLike[str]) -> Path:
        """Write version ``ref`` as a signed edge bundle to ``path`` (docs/edge.md): its ONNX model
        (a built-in version is exported on the server first, checked as :meth:`export` is), config,
        signature and a manifest of sha256 digests signed with the workspace's Ed25519 key."""
        version = self.get(ref)
        url = f"{_versions(quote(version.name, safe=''))}/{version.version}/bundle"
        dest = Path(path)
        tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
        try:
            with (
                self._client._transport.stream("POST", url, timeout=COMPRESSION_TIMEOUT_S) as response,
                open(tmp, "wb") as f,
            ):
                for chunk in response.iter_bytes(1 << 20):
                    f.write(chunk)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def compare(
        self,
        name: str,
        *,
        dataset: str | None = None,
        versions: Sequence[int] | None = None,
        threads: int = 1,
    ) -> CompareOut:
        """Size, median latency at batch 1 and 32 (measured on the server, one model call on prepared
        inputs) and accuracy on ``dataset`` (or cosine to the first version compared) of the model's
        versions (default: all, at most the newest 8), each runtime on ``threads`` threads."""
        out = self._client._transport.json(
            "POST",
            f"{MODELS}/{quote(name, safe='')}/compare",
            json={
                "dataset": dataset,
                "versions": list(versions) if versions is not None else None,
                "threads": threads,
            },
            timeout=COMPRESSION_TIMEOUT_S,
            retry=False,
        )
        return CompareOut.model_validate(out)

"""The model registry in the SDK: versions, aliases, lineage, and loading a model for local use."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aicloud.errors import DataCorruptedError
from aicloud.schemas.jobs import ModelOut, ModelVersionOut

if TYPE_CHECKING:
    from aicloud.client import Client

RegisteredModel = ModelVersionOut


def parse_ref(ref: str) -> tuple[str, str]:
    """``name`` → latest, ``name:3`` → version 3, ``name@production`` → an alias. Returns (name, path)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, f"/api/v1/models/{name}/aliases/{alias}"
    name, _, version = ref.partition(":")
    return name, f"/api/v1/models/{name}/versions/{version or 'latest'}"


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

    def versions(self, name: str) -> list[ModelVersionOut]:
        items = self._client._transport.json("GET", f"/api/v1/models/{name}/versions")
        return [ModelVersionOut.model_validate(v) for v in items]

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersionOut:
        """Point ``alias`` at ``version``; it moves atomically from wherever it pointed."""
        out = self._client._transport.json(
            "PUT", f"/api/v1/models/{name}/aliases/{alias}", json={"version": version}
        )
        return ModelVersionOut.model_validate(out)

    def delete_alias(self, name: str, alias: str) -> None:
        self._client._transport.request("DELETE", f"/api/v1/models/{name}/aliases/{alias}")

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
            data = self._client._transport.request("GET", f"/api/v1/blobs/{digest}").content
            if hashlib.sha256(data).hexdigest() != digest:
                raise DataCorruptedError(f"file {filename} of {ref} does not match its sha256")
            tmp = path.with_name(f".{path.name}.part{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return target

    def load(self, ref: str) -> Any:
        """A callable model for local use: rows in, predictions out (``aicloud.training.artifacts``).
        Loading reads safetensors/ONNX and JSON only; nothing is unpickled."""
        from aicloud.training.artifacts import load_model

        return load_model(self.download(ref))

    def list(self) -> list[ModelOut]:
        return [ModelOut.model_validate(m) for m in self._client._transport.json("GET", "/api/v1/models")]

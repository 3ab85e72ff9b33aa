"""Model compression behind the models routes: ONNX export, int8 quantization, comparison.

The control plane never loads a model: each request copies the version's files (decrypted) into a
private working folder and runs :mod:`aicloud.compression.worker` there, in the workload sandbox
(:mod:`aicloud.compression.runner`). A new version is registered only after the worker answered,
from the files it wrote, with lineage to its parent: the parent's datasets and code, and
``parent_version`` (the parent's id) and ``derived`` (``{"from": "name:version", "method"}``). A failed
request registers nothing (its folder is removed; the worker's files are stored only once it answered).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aicloud.artifacts.format import CONFIG, ONNX, WEIGHTS, read_config
from aicloud.auth import Principal
from aicloud.compression.runner import run_worker
from aicloud.entities import DatasetVersion, ModelVersion
from aicloud.errors import ConflictError, NotFoundError, ValidationError
from aicloud.schemas.compression import (
    CompareOut,
    CompareRequest,
    ExportRequest,
    PruneRequest,
    QuantizeRequest,
    VariantOut,
)
from aicloud.server.services.names import check_name, parse_version
from aicloud.server.state import AppState

__all__ = ["compare_versions", "export_files", "export_version", "prune_version", "quantize_version"]

MAX_COMPARED = 8


def _copy_blob(state: AppState, digest: str, path: Path) -> None:
    with state.blobs.open(digest) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _model_folder(state: AppState, version: ModelVersion, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for filename, digest in version.files.items():
        _copy_blob(state, digest, folder / Path(filename).name)
    return folder


def _dataset(state: AppState, workspace_id: str, ref: str, field: str) -> DatasetVersion:
    name, _, version = ref.partition(":")
    try:
        return state.store.datasets.get_version(
            workspace_id, check_name(name, field), parse_version(version or "latest")
        )
    except (NotFoundError, ValidationError) as exc:
        raise ValidationError.field(field, f"dataset {ref!r}: {exc.message}") from None


def _dataset_file(state: AppState, ds: DatasetVersion, workdir: Path) -> dict[str, str]:
    path = workdir / f"dataset.{ds.format}"
    _copy_blob(state, ds.blob_digest, path)
    return {"path": str(path), "format": ds.format}


def input_columns(version: ModelVersion) -> list[str] | None:
    """The columns a row of the model's input has (its preprocessing's features, else its signature's
    inputs); None for a model of tensor inputs."""
    pre = version.config.get("preprocessing")
    if isinstance(pre, dict) and pre.get("features"):
        return [str(f) for f in pre["features"]]
    inputs = [i for i in (version.signature.get("inputs") or []) if isinstance(i, dict)]
    if not inputs or any(i.get("shape") for i in inputs):
        return None
    return [str(i.get("name")) for i in inputs]


def _check_columns(ds: DatasetVersion, version: ModelVersion, field: str) -> None:
    wanted = input_columns(version)
    if wanted is None:
        raise ValidationError.field(
            field, "the model takes tensors, not table rows: it cannot be calibrated on a dataset"
        )
    have = {str(c.get("name")) for c in ds.schema}
    missing = [c for c in wanted if c not in have]
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise ValidationError(
            f"{field}: dataset {ds.name}:{ds.version} lacks the model's input column(s) {shown}",
            details=[{"field": field, "message": "missing columns", "missing": missing}],
        )


def _derived(version: ModelVersion, method: str, **more: Any) -> dict[str, Any]:
    return {"from": f"{version.name}:{version.version}", "method": method, **more}


def _register(
    state: AppState,
    version: ModelVersion,
    out: Path,
    derived: dict[str, Any],
    metrics: dict[str, float],
    weights: str = ONNX,
) -> ModelVersion:
    """Store the worker's files (``config.json`` and ``weights``) and register them as the next
    version of the parent's model."""
    config = read_config(out)
    files = {name: state.blobs.put_bytes((out / name).read_bytes()).digest for name in (CONFIG, weights)}
    lineage = {
        "job_id": None,
        "run_id": None,
        "datasets": list(version.lineage.get("datasets") or []),
        "code_digest": version.lineage.get("code_digest"),
        "parent_version": version.id,
        "derived": derived,
    }
    if version.lineage.get("task"):
        lineage["task"] = version.lineage["task"]
    with state.blob_lock:  # as AppState.keep_blob, for both files
        if not all(state.blobs.exists(d) for d in files.values()):
            raise ConflictError("a stored file was removed by a concurrent delete; try again")
        return state.store.models.create_version(
            workspace_id=version.workspace_id,
            name=version.name,
            files=files,
            signature=version.signature,
            config=config,
            metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
            lineage=lineage,
        )


def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="aicloud-compress-"))


def export_version(
    state: AppState, principal: Principal, version: ModelVersion, body: ExportRequest
) -> ModelVersion:
    """The ONNX export of ``version`` as a new version (409 when it is ONNX already; 422 when the
    outputs differ by more than the tolerance)."""
    if ONNX in version.files:
        raise ConflictError(
            f"{version.name}:{version.version} is ONNX already (model.onnx); there is nothing to export",
            details={"version": version.version, "format": "onnx"},
        )
    workdir = _workdir()
    try:
        out, derived = export_files(state, version, workdir, body.tolerance)
        return _register(state, version, out, derived, dict(version.metrics))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def export_files(
    state: AppState, version: ModelVersion, workdir: Path, tolerance: float
) -> tuple[Path, dict[str, Any]]:
    """Export the built-in ``version`` to ONNX in the worker, checked against it; returns the folder
    the worker wrote (``config.json``, ``model.onnx``) under ``workdir`` and the lineage's ``derived``.
    Registers nothing: :func:`export_version` does, an edge bundle (services/bundles.py) does not."""
    derived = _derived(version, "onnx")
    request = {
        "op": "export",
        "parent": str(_model_folder(state, version, workdir / "parent")),
        "out": str(workdir / "out"),
        "tolerance": tolerance,
        "derived": derived,
    }
    report = run_worker(request, workdir, state.compress_confine)
    derived["max_abs_diff"] = report["max_abs_diff"]
    derived["tolerance"] = report["tolerance"]
    return workdir / "out", derived


def quantize_version(
    state: AppState, principal: Principal, version: ModelVersion, body: QuantizeRequest
) -> ModelVersion:
    """An int8 variant of ``version`` as a new version (a built-in model is exported to ONNX first)."""
    ds = None
    if body.method == "static-int8":
        if not body.calibration:
            raise ValidationError.field("calibration", "static-int8 needs a calibration dataset version")
        ds = _dataset(state, principal.workspace.id, body.calibration, "calibration")
        _check_columns(ds, version, "calibration")
    elif body.calibration:
        raise ValidationError.field("calibration", "dynamic-int8 uses no calibration data; leave it out")
    workdir = _workdir()
    try:
        derived = _derived(version, body.method)
        if ds is not None:
            derived["calibration"] = {"id": ds.id, "name": ds.name, "version": ds.version}
        request: dict[str, Any] = {
            "op": "quantize",
            "parent": str(_model_folder(state, version, workdir / "parent")),
            "out": str(workdir / "out"),
            "method": body.method,
            "derived": derived,
            "calibration": _dataset_file(state, ds, workdir) if ds is not None else None,
        }
        report = run_worker(request, workdir, state.compress_confine)
        check = report.get("check") or {}
        metrics = {f"parent_{k}": float(v) for k, v in check.items() if v is not None}
        return _register(state, version, workdir / "out", derived, metrics)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _training_data(state: AppState, version: ModelVersion, body: PruneRequest) -> DatasetVersion:
    """The fine-tuning data: the request's dataset, else the version's training dataset (lineage)."""
    ws = version.workspace_id
    if body.dataset:
        ds = _dataset(state, ws, body.dataset, "dataset")
    else:
        train = [d for d in version.lineage.get("datasets") or [] if d.get("role") == "train"]
        if not train:
            raise ValidationError.field(
                "dataset",
                f"{version.name}:{version.version} names no training dataset in its lineage (it was not "
                "made by a train job): pass dataset=, or finetune_epochs=0",
            )
        ds = _dataset(state, ws, f"{train[0]['name']}:{train[0]['version']}", "dataset")
    _check_columns(ds, version, "dataset")
    target = version.config.get("target")
    if not target or target not in {str(c.get("name")) for c in ds.schema}:
        raise ValidationError.field(
            "dataset", f"dataset {ds.name}:{ds.version} has no target column {target!r} to fine-tune on"
        )
    return ds


def prune_version(
    state: AppState, principal: Principal, version: ModelVersion, body: PruneRequest
) -> ModelVersion:
    """A structurally pruned (smaller) built-in model, fine-tuned on the training data, as a new version."""
    if ONNX in version.files:
        raise ValidationError.field(
            "model", f"{version.name}:{version.version} is ONNX; prune the built-in version it came from"
        )
    ds = _training_data(state, version, body) if body.finetune_epochs > 0 else None
    workdir = _workdir()
    try:
        derived = _derived(
            version, "prune-structured", amount=body.amount, finetune_epochs=body.finetune_epochs
        )
        if ds is not None:
            derived["finetune_dataset"] = {"id": ds.id, "name": ds.name, "version": ds.version}
        request: dict[str, Any] = {
            "op": "prune",
            "parent": str(_model_folder(state, version, workdir / "parent")),
            "out": str(workdir / "out"),
            "amount": body.amount,
            "finetune_epochs": body.finetune_epochs,
            "derived": derived,
            "data": _dataset_file(state, ds, workdir) if ds is not None else None,
        }
        report = run_worker(request, workdir, state.compress_confine)
        metrics = {f"parent_{k}": float(v) for k, v in (report.get("check") or {}).items() if v is not None}
        metrics["parameters"] = float(report["parameters_after"])
        metrics["parent_parameters"] = float(report["parameters_before"])
        if report.get("finetune_losses"):
            metrics["finetune_loss"] = float(report["finetune_losses"][-1])
        return _register(state, version, workdir / "out", derived, metrics, weights=WEIGHTS)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def compare_versions(state: AppState, principal: Principal, name: str, body: CompareRequest) -> CompareOut:
    """Size, p50 latency at batch 1 and 32, accuracy or cosine of each variant, measured in a worker."""
    ws = principal.workspace.id
    versions = state.store.models.list_versions(ws, check_name(name))
    if body.versions:
        by_number = {v.version: v for v in versions}
        unknown = [n for n in body.versions if n not in by_number]
        if unknown:
            raise NotFoundError(
                f"model {name!r} has no version(s) {unknown}", details={"kind": "model_version"}
            )
        chosen = [by_number[n] for n in dict.fromkeys(body.versions)]
    else:
        chosen = sorted(versions, key=lambda v: v.version)[-MAX_COMPARED:]
    if not chosen:
        raise NotFoundError.of("model", name)
    if len(chosen) > MAX_COMPARED:
        raise ValidationError.field("versions", f"compare at most {MAX_COMPARED} versions at once")
    ds = _dataset(state, ws, body.dataset, "dataset") if body.dataset else None
    if ds is not None:
        for v in chosen:
            _check_columns(ds, v, "dataset")
    workdir = _workdir()
    try:
        variants = [
            {
                "label": f"{v.name}:{v.version}",
                "folder": str(_model_folder(state, v, workdir / f"v{v.version}")),
            }
            for v in chosen
        ]
        request = {
            "op": "compare",
            "variants": variants,
            "dataset": _dataset_file(state, ds, workdir) if ds is not None else None,
            "threads": body.threads,
        }
        rows = run_worker(request, workdir, state.compress_confine)["variants"]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ids = {v.id: v.version for v in versions}
    out = []
    for v, row in zip(chosen, rows, strict=True):
        derived = v.lineage.get("derived") or {}
        out.append(
            VariantOut(
                version=v.version,
                label=row["label"],
                method=str(derived.get("method") or ""),
                parent_version=ids.get(str(v.lineage.get("parent_version"))),
                runtime=row["runtime"],
                size_bytes=int(row["size_bytes"]),
                p50_ms_b1=float(row["p50_ms_b1"]),
                p50_ms_b32=float(row["p50_ms_b32"]),
                accuracy=_finite(row.get("accuracy")),
                cosine_to_first=_finite(row.get("cosine_to_parent")),
            )
        )
    dataset = f"{ds.name}:{ds.version}" if ds else None
    return CompareOut(model=name, dataset=dataset, threads=body.threads, variants=out)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None

"""A ``finetune`` job's checks at submission: its base model and its datasets' columns (422 naming them).

* the base (``zoo/minilm``, ``name:3``, ``name@alias``) resolves to a version of this workspace or of
  the zoo; ``text-classification`` needs a text encoder (a ``text`` block and task ``text-embedding``;
  ``full`` and ``lora`` also its torch weights ``encoder.safetensors`` + ``encoder_config.json``),
  ``image-classification`` a built-in CNN;
* the train and eval datasets have the text column (or the CNN's pixel columns) and the label column.
"""

from __future__ import annotations

from typing import Any

from aicloud.entities import ModelVersion
from aicloud.errors import NotFoundError, PermissionDeniedError, ValidationError
from aicloud.schemas.finetune import FinetuneSpec, text_block
from aicloud.server.services.models import resolve_model_ref
from aicloud.server.state import AppState

__all__ = ["check_finetune", "pinned_ref"]

ENCODER_FILES = ("encoder.safetensors", "encoder_config.json")


def pinned_ref(base: str, version: ModelVersion) -> str:
    """The base ref pinned to its version: ``zoo/minilm`` → ``zoo/minilm:1``, ``enc@prod`` → ``enc:3``."""
    name = version.name
    if base.startswith("zoo/") and not name.startswith("zoo/"):
        name = f"zoo/{name}"
    return f"{name}:{version.version}"


def _base(state: AppState, workspace_id: str, spec: FinetuneSpec) -> ModelVersion:
    try:
        return resolve_model_ref(state, workspace_id, spec.base)
    except (NotFoundError, ValidationError, PermissionDeniedError) as exc:
        raise ValidationError.field("spec.base", f"model {spec.base!r}: {exc.message}") from None


def _check_base(spec: FinetuneSpec, version: ModelVersion) -> None:
    config = version.config or {}
    if spec.task == "text-classification":
        block = text_block(config)
        if block is None or config.get("task") != "text-embedding" or "model.onnx" not in version.files:
            raise ValidationError.field(
                "spec.base",
                f"{spec.base!r} is not a text encoder (a text-embedding model with a `text` block and "
                "model.onnx, e.g. zoo/minilm); text-classification fine-tunes one",
            )
        if block.get("tokenizer", "tokenizer.json") not in version.files:
            raise ValidationError.field("spec.base", f"{spec.base!r} has no tokenizer file")
        missing = [f for f in ENCODER_FILES if f not in version.files]
        if spec.method != "head" and missing:
            raise ValidationError.field(
                "spec.base",
                f"method {spec.method} trains the encoder, and {spec.base!r} lacks its torch weights "
                f"{missing}; use method head, or a base that ships them (zoo/minilm)",
            )
        return
    arch = config.get("architecture") or {}
    if not isinstance(arch, dict) or arch.get("type") != "cnn" or "model.safetensors" not in version.files:
        raise ValidationError.field(
            "spec.base",
            f"{spec.base!r} is not a built-in CNN (e.g. zoo/digits-cnn); image-classification fine-tunes one",
        )


def _columns(state: AppState, workspace_id: str, dataset_id: str) -> list[str]:
    row = state.store.datasets.get_version_by_id(workspace_id, dataset_id)
    return [str(c.get("name")) for c in (row.schema or []) if isinstance(c, dict)]


def _check_columns(
    spec: FinetuneSpec, version: ModelVersion, field: str, columns: list[str], name: str
) -> None:
    if spec.task == "text-classification":
        wanted = [spec.text, spec.target]
    else:
        inputs = ((version.config or {}).get("signature") or {}).get("inputs") or []
        wanted = [str(t.get("name")) for t in inputs if isinstance(t, dict)] + [spec.target]
    missing = [c for c in wanted if c not in columns]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValidationError.field(
            field,
            f"dataset {name!r} has no column {shown} (its columns: {', '.join(columns[:12])}); "
            + (
                "set `text` and `target` to its columns"
                if spec.task == "text-classification"
                else "it needs the base CNN's input columns and the label column"
            ),
        )


def check_finetune(
    state: AppState, workspace_id: str, spec: FinetuneSpec, resolved: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The stored spec of a valid ``finetune`` job (with ``resolved_datasets`` and ``resolved_base``)."""
    version = _base(state, workspace_id, spec)
    _check_base(spec, version)
    for role, field in (("train", "spec.dataset"), ("eval", "spec.eval_dataset")):
        info = resolved[role]
        columns = _columns(state, workspace_id, info["id"])
        _check_columns(spec, version, field, columns, f"{info['name']}:{info['version']}")
    out = spec.model_dump(mode="json")
    out["epochs"], out["lr"] = spec.epochs_and_lr()  # the defaults by method, recorded
    out["resolved_datasets"] = resolved
    out["resolved_base"] = {
        "id": version.id,
        "ref": pinned_ref(spec.base, version),
        "name": version.name,
        "version": version.version,
    }
    return out

"""The ``keras`` job at submission (docs/keras.md, "The remote API").

Checks (422 naming the field): ``spec.model_config`` is a JSON object with a ``class_name`` (bounded
by the schema's size cap); ``spec.datasets`` has the roles of the action (``train`` and optionally
``validation`` for ``fit``; ``data`` for ``evaluate`` and ``predict``), each resolved to an exact
version (``resolved_datasets``); ``spec.target`` (needed by fit and evaluate) and ``spec.features``
are columns of every dataset that needs them; evaluate and predict need trained ``spec.weights``.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic

from aicloud.auth import Principal
from aicloud.errors import ValidationError
from aicloud.schemas.jobs import JobCreate
from aicloud.schemas.keras_job import KerasSpec
from aicloud.server.services.evaluation_specs import _columns
from aicloud.server.services.names import check_name
from aicloud.server.services.specs import _pydantic_error, _resolve_dataset
from aicloud.server.state import AppState

__all__ = ["validate_keras"]

_ROLES = {"fit": ({"train"}, {"validation"}), "evaluate": ({"data"}, set()), "predict": ({"data"}, set())}


def _check_config(text: str) -> str:
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ValidationError.field("spec.model_config", f"not JSON (model.to_json()): {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValidationError.field(
            "spec.model_config", 'a Keras model config is a JSON object with a "class_name" (model.to_json())'
        )
    return str(config["class_name"])


def _shown(columns: list[str]) -> str:
    return ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")


def validate_keras(state: AppState, principal: Principal, body: JobCreate) -> tuple[str, dict[str, Any]]:
    """A ``keras`` job: fit, evaluate or predict with a model rebuilt from its JSON config."""
    try:
        spec = KerasSpec.model_validate(body.spec)
    except pydantic.ValidationError as exc:
        raise _pydantic_error(exc, "spec") from None
    class_name = _check_config(spec.model_config_json)
    required, optional = _ROLES[spec.action]
    roles = set(spec.datasets)
    if not required <= roles or roles - required - optional:
        extra = f" (and optionally {', '.join(optional)})" if optional else ""
        wanted = ", ".join(sorted(required)) + extra
        raise ValidationError.field("spec.datasets", f"a {spec.action} takes the dataset role(s) {wanted}")
    if spec.action != "fit" and spec.weights is None:
        raise ValidationError.field("spec.weights", f"{spec.action} needs trained weights: fit first")
    ws = principal.workspace.id
    resolved: dict[str, dict[str, Any]] = {}
    for role in sorted(roles):
        info = _resolve_dataset(state, ws, spec.datasets[role], f"spec.datasets.{role}")
        resolved[role] = info
        columns = _columns(state.store.datasets.get_version_by_id(ws, info["id"]).schema)
        ref = f"{info['name']}:{info['version']}"
        if spec.action != "predict" and not spec.target:
            raise ValidationError.field("spec.target", f"a {spec.action} needs the label column: set target")
        if spec.target and spec.action != "predict" and spec.target not in columns:
            raise ValidationError.field(
                "spec.target", f"dataset {ref} has no column {spec.target!r} (its columns: {_shown(columns)})"
            )
        missing = [f for f in spec.features or [] if f not in columns]
        if missing:
            raise ValidationError.field(
                "spec.features",
                f"dataset {ref} lacks column(s) {', '.join(map(repr, missing[:5]))} "
                f"(its columns: {_shown(columns)})",
            )
    out = spec.model_dump(mode="json", by_alias=True)
    out["resolved_datasets"] = resolved
    first = resolved[sorted(required)[0]]["name"]
    name = check_name(body.name or f"keras-{spec.action}-{class_name.lower()}-{first}"[:100], "name")
    if spec.action == "fit":
        out["model_name"] = spec.model_name or name
    return name, out

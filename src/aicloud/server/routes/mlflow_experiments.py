"""MLflow tracking API: experiments (``/mlflow/api/2.0/mlflow/experiments/...``, docs/mlflow.md)."""

from __future__ import annotations

import functools
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from aicloud.errors import BadRequestError
from aicloud.server.deps import Member, State, Viewer
from aicloud.server.routes._mlflow import Body, integer, items, json_body, mlflow_router, strings, text
from aicloud.server.services import mlflow as tracking
from aicloud.server.services.mlflow_search import compare, page_offset, page_token, parse_filter, parse_order

router = mlflow_router()
BASE = "/api/2.0/mlflow/experiments"
MAX_EXPERIMENTS_PAGE = 50_000


@router.post(f"{BASE}/create")
def mlflow_experiments_create(body: Body, principal: Member, state: State) -> dict[str, Any]:
    name = text(body, "name")
    if not name:
        raise BadRequestError("name is required")
    if body.get("artifact_location"):
        raise BadRequestError("aicloud keeps artifacts itself: leave artifact_location out")
    experiment = tracking.create_experiment(state, principal.workspace.id, name, items(body, "tags"))
    return {"experiment_id": experiment.id}


@router.get(f"{BASE}/get")
def mlflow_experiments_get(request: Request, principal: Viewer, state: State) -> dict[str, Any]:
    experiment_id = request.query_params.get("experiment_id")
    experiment = tracking.get_experiment(state, principal.workspace.id, experiment_id)
    return {"experiment": tracking.experiment_json(experiment)}


@router.get(f"{BASE}/get-by-name")
def mlflow_experiments_get_by_name(request: Request, principal: Viewer, state: State) -> dict[str, Any]:
    name = request.query_params.get("experiment_name")
    experiment = tracking.experiment_by_name(state, principal.workspace.id, name)
    return {"experiment": tracking.experiment_json(experiment)}


_EXPERIMENT_ORDER = {"name", "experiment_id", "creation_time", "last_update_time"}


@router.post(f"{BASE}/search")
@router.get(f"{BASE}/search")
async def mlflow_experiments_search(request: Request, principal: Viewer, state: State) -> dict[str, Any]:
    """Experiments by name, tags and times (``name LIKE 'x%'``, ``tags.team = 'a'``), paged."""
    body: dict[str, Any]
    if request.method == "POST":
        body = await json_body(request)
    else:
        body = {**request.query_params, "order_by": request.query_params.getlist("order_by")}
    experiments = await run_in_threadpool(tracking.all_experiments, state, principal.workspace.id)
    return _search(experiments, body)


def _field(experiment: Any, prefix: str, key: str) -> Any:
    if prefix.startswith("tag"):
        return experiment.tags.get(key)
    values = {
        "name": experiment.name,
        "experiment_id": experiment.id,
        "creation_time": float(tracking.experiment_json(experiment)["creation_time"]),
        "last_update_time": float(tracking.experiment_json(experiment)["last_update_time"]),
    }
    if prefix not in ("attribute", "attributes", "attr") or key not in values:
        raise BadRequestError(
            f"cannot search experiments by {prefix}.{key}: use name, tags.<key> or the times"
        )
    return values[key]


def _sort_key(experiment: Any, *, prefix: str, key: str) -> Any:
    return _field(experiment, prefix, key)


def _search(experiments: list[Any], body: dict[str, Any]) -> dict[str, Any]:
    view = text(body, "view_type") or "ACTIVE_ONLY"
    wanted = {"ACTIVE_ONLY": (False,), "DELETED_ONLY": (True,), "ALL": (False, True)}.get(view)
    if wanted is None:
        raise BadRequestError(f"unknown view_type {view!r}: ACTIVE_ONLY, DELETED_ONLY or ALL")
    found = [e for e in experiments if e.deleted in wanted]
    for prefix, key, op, value in parse_filter(text(body, "filter")):
        numeric = key in ("creation_time", "last_update_time") and not prefix.startswith("tag")
        if numeric != isinstance(value, float):
            kind = "a number of milliseconds" if numeric else "a quoted string"
            raise BadRequestError(f"{prefix}.{key} compares with {kind}")
        found = [e for e in found if compare(_field(e, prefix, key), op, value)]
    order = parse_order(strings(body, "order_by")) or [("attributes", "creation_time", False)]
    for prefix, key, ascending in reversed(order):
        if key not in _EXPERIMENT_ORDER:
            raise BadRequestError(f"cannot order experiments by {key!r}: one of {sorted(_EXPERIMENT_ORDER)}")
        found.sort(key=functools.partial(_sort_key, prefix=prefix, key=key), reverse=not ascending)
    limit = integer(body, "max_results") or 1000
    if not 0 < limit <= MAX_EXPERIMENTS_PAGE:
        raise BadRequestError(f"max_results must be between 1 and {MAX_EXPERIMENTS_PAGE}")
    offset = page_offset(text(body, "page_token"))
    page = found[offset : offset + limit]
    out: dict[str, Any] = {"experiments": [tracking.experiment_json(e) for e in page]}
    if offset + limit < len(found):
        out["next_page_token"] = page_token(offset + limit)
    return out


@router.post(f"{BASE}/update")
def mlflow_experiments_update(body: Body, principal: Member, state: State) -> dict[str, Any]:
    name = text(body, "new_name")
    tracking.update_experiment(state, principal.workspace.id, text(body, "experiment_id"), name=name)
    return {}


@router.post(f"{BASE}/delete")
def mlflow_experiments_delete(body: Body, principal: Member, state: State) -> dict[str, Any]:
    tracking.update_experiment(state, principal.workspace.id, text(body, "experiment_id"), deleted=True)
    return {}


@router.post(f"{BASE}/restore")
def mlflow_experiments_restore(body: Body, principal: Member, state: State) -> dict[str, Any]:
    tracking.update_experiment(state, principal.workspace.id, text(body, "experiment_id"), deleted=False)
    return {}


@router.post(f"{BASE}/set-experiment-tag")
def mlflow_experiments_set_tag(body: Body, principal: Member, state: State) -> dict[str, Any]:
    tags = tracking.tag_pairs([{"key": body.get("key"), "value": body.get("value")}])
    tracking.update_experiment(state, principal.workspace.id, text(body, "experiment_id"), tags=tags)
    return {}


@router.post(f"{BASE}/delete-experiment-tag")
def mlflow_experiments_delete_tag(body: Body, principal: Member, state: State) -> dict[str, Any]:
    key = tracking.check_key(body.get("key"), "tag")
    tracking.update_experiment(state, principal.workspace.id, text(body, "experiment_id"), drop_tag=key)
    return {}

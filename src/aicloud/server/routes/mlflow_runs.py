"""MLflow tracking API: runs, params, metrics and tags (``/mlflow/api/2.0/mlflow/runs/...``,
``metrics/get-history``; docs/mlflow.md). An MLflow run is an aicloud run."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from aicloud.server.deps import Member, State, Viewer
from aicloud.server.routes._mlflow import Body, integer, items, mlflow_router, strings, text
from aicloud.server.services import mlflow as tracking

router = mlflow_router()
BASE = "/api/2.0/mlflow"


def _run_id(body: dict[str, Any]) -> str | None:
    return text(body, "run_id") or text(body, "run_uuid")


@router.post(f"{BASE}/runs/create")
def mlflow_runs_create(body: Body, principal: Member, state: State) -> dict[str, Any]:
    run = tracking.create_run(
        state, principal, text(body, "experiment_id"), text(body, "run_name"), items(body, "tags")
    )
    return {"run": tracking.RunViews(state, principal.workspace.id).run(run)}


@router.get(f"{BASE}/runs/get")
def mlflow_runs_get(request: Request, principal: Viewer, state: State) -> dict[str, Any]:
    query = dict(request.query_params)
    run = tracking.get_run(state, principal, _run_id(query))
    return {"run": tracking.RunViews(state, principal.workspace.id).run(run)}


@router.post(f"{BASE}/runs/update")
def mlflow_runs_update(body: Body, principal: Member, state: State) -> dict[str, Any]:
    run = tracking.update_run(
        state, principal, _run_id(body), text(body, "status"), body.get("end_time"), text(body, "run_name")
    )
    return {"run_info": tracking.RunViews(state, principal.workspace.id).info(run)}


@router.post(f"{BASE}/runs/delete")
def mlflow_runs_delete(body: Body, principal: Member, state: State) -> dict[str, Any]:
    run = tracking.writable_run(state, principal, _run_id(body))
    state.store.tracking.update_run(principal.workspace.id, run.id, deleted=True)
    return {}


@router.post(f"{BASE}/runs/restore")
def mlflow_runs_restore(body: Body, principal: Member, state: State) -> dict[str, Any]:
    run = tracking.writable_run(state, principal, _run_id(body))
    state.store.tracking.update_run(principal.workspace.id, run.id, deleted=False)
    return {}


@router.post(f"{BASE}/runs/log-metric")
def mlflow_runs_log_metric(body: Body, principal: Member, state: State) -> dict[str, Any]:
    metric = {k: body.get(k) for k in ("key", "value", "timestamp", "step")}
    tracking.log_batch(state, principal, _run_id(body), metrics=[metric])
    return {}


@router.post(f"{BASE}/runs/log-parameter")
def mlflow_runs_log_param(body: Body, principal: Member, state: State) -> dict[str, Any]:
    param = {"key": body.get("key"), "value": body.get("value")}
    tracking.log_batch(state, principal, _run_id(body), params=[param])
    return {}


@router.post(f"{BASE}/runs/set-tag")
def mlflow_runs_set_tag(body: Body, principal: Member, state: State) -> dict[str, Any]:
    tag = {"key": body.get("key"), "value": body.get("value")}
    if tag["key"] == "mlflow.runName":  # MLflow renames the run through this tag
        tracking.update_run(state, principal, _run_id(body), None, None, text(body, "value"))
    tracking.log_batch(state, principal, _run_id(body), tags=[tag])
    return {}


@router.post(f"{BASE}/runs/delete-tag")
def mlflow_runs_delete_tag(body: Body, principal: Member, state: State) -> dict[str, Any]:
    run = tracking.writable_run(state, principal, _run_id(body))
    key = tracking.check_key(body.get("key"), "tag")
    state.store.tracking.delete_tag(principal.workspace.id, run.id, key)
    return {}


@router.post(f"{BASE}/runs/log-batch")
def mlflow_runs_log_batch(body: Body, principal: Member, state: State) -> dict[str, Any]:
    tracking.log_batch(
        state,
        principal,
        _run_id(body),
        metrics=items(body, "metrics"),
        params=items(body, "params"),
        tags=items(body, "tags"),
    )
    return {}


@router.post(f"{BASE}/runs/search")
def mlflow_runs_search(body: Body, principal: Viewer, state: State) -> dict[str, Any]:
    runs, token = tracking.search_runs(
        state,
        principal.workspace.id,
        strings(body, "experiment_ids"),
        text(body, "filter"),
        text(body, "run_view_type"),
        integer(body, "max_results"),
        strings(body, "order_by"),
        text(body, "page_token"),
    )
    out: dict[str, Any] = {"runs": tracking.RunViews(state, principal.workspace.id).runs(runs)}
    if token:
        out["next_page_token"] = token
    return out


@router.get(f"{BASE}/metrics/get-history")
def mlflow_metrics_history(request: Request, principal: Viewer, state: State) -> dict[str, Any]:
    query = dict(request.query_params)
    metrics, token = tracking.metric_history(
        state,
        principal,
        _run_id(query),
        query.get("metric_key"),
        query.get("max_results"),
        query.get("page_token"),
    )
    out: dict[str, Any] = {"metrics": metrics}
    if token:
        out["next_page_token"] = token
    return out


@router.post(f"{BASE}/logged-models/search")
def mlflow_logged_models_search(principal: Viewer) -> dict[str, Any]:
    """MLflow 3's logged models are not kept (models go to aicloud's registry): none match. The
    client searches them when it lists a run's artifacts."""
    return {"models": []}

"""The MLflow tracking API's rules (``docs/mlflow.md``): experiments, runs, params, metrics and
tags over aicloud's runs, in MLflow's wire shapes.

An MLflow experiment is an aicloud experiment (``store.tracking``); MLflow's experiment ``0`` is
the workspace's ``Default`` experiment, which has no row and holds every run that names no
experiment (aicloud's own runs included). An MLflow run *is* an aicloud run: its params are the
run's params, its metrics the run's metric series, its tags and artifacts the run's.

Errors leave as MLflow's ``{"error_code": ..., "message": ...}`` (``error_response``); the mlflow
client relies on the code (``RESOURCE_DOES_NOT_EXIST`` for a missing experiment by name).
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Any

from aicloud.auth import Principal
from aicloud.entities import Experiment, MetricPoint, Run
from aicloud.errors import AicloudError, BadRequestError, NotFoundError
from aicloud.server.services.mlflow_search import (
    STATUS_FROM_AICLOUD,
    STATUS_TO_AICLOUD,
    page_offset,
    page_token,
    run_filter,
    run_order,
)
from aicloud.server.state import AppState
from aicloud.store.tracking import DEFAULT_EXPERIMENT, RunQuery, param_text

DEFAULT_EXPERIMENT_ID = "0"
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_KEY_CHARS = 250
MAX_PARAM_VALUE_CHARS = 6000
MAX_TAG_VALUE_CHARS = 8000
MAX_NAME_CHARS = 255
MAX_SEARCH_RESULTS = 50_000

_KEY = re.compile(r"[\w./ :-]+")
_ID = re.compile(r"[A-Za-z0-9][\w-]{0,63}")

_HTTP_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_ALREADY_EXISTS",
    413: "RESOURCE_LIMIT_EXCEEDED",
    422: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
}


class MlflowError(AicloudError):
    """An error with MLflow's own code (``FEATURE_DISABLED``, ``ENDPOINT_NOT_FOUND``)."""

    def __init__(self, error_code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.http_status = status


def error_response(exc: AicloudError) -> tuple[int, dict[str, str]]:
    """(HTTP status, body) of an error in MLflow's shape. MLflow answers an existing name with
    400 RESOURCE_ALREADY_EXISTS and a bad value with 400 INVALID_PARAMETER_VALUE."""
    if isinstance(exc, MlflowError):
        return exc.http_status, {"error_code": exc.error_code, "message": exc.message}
    status = exc.status_code
    code = _HTTP_CODES.get(status, "INTERNAL_ERROR")
    if status in (409, 422):
        status = 400
    return status, {"error_code": code, "message": exc.message}


def registry_refused() -> MlflowError:
    return MlflowError(
        "FEATURE_DISABLED",
        "aicloud keeps its own model registry: register models with aicloud.training.save_model in a "
        "job, or the models API (POST /api/v1/models, aicloud.Client().models); see docs/mlflow.md",
    )


# --- small checks -------------------------------------------------------------------------------


def check_id(value: str | None, field: str) -> str:
    if not value or not _ID.fullmatch(value):
        raise BadRequestError(f"{field} must be an id of letters, digits, _ and - (got {value!r})")
    return value


def check_key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS or not _KEY.fullmatch(key):
        raise BadRequestError(
            f"invalid {what} name {key!r}: 1 to {MAX_KEY_CHARS} letters, digits, spaces and _ - . / :"
        )
    if key.startswith("/") or ".." in key.split("/"):
        raise BadRequestError(f"invalid {what} name {key!r}: it may not start with / or contain ..")
    return key


def check_name(name: str, what: str) -> str:
    if not name or not name.strip() or len(name) > MAX_NAME_CHARS or "\x00" in name:
        raise BadRequestError(f"{what} must be 1 to {MAX_NAME_CHARS} characters")
    return name


def _text(value: Any, limit: int, what: str) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        value = str(value)
    if len(value) > limit or "\x00" in value:
        raise BadRequestError(f"{what} is longer than {limit} characters or holds a NUL")
    return value


def _moment(millis: Any, field: str) -> datetime:
    """Unix milliseconds as a datetime; anything else (or out of range) is a 400 naming the field."""
    try:
        return datetime.fromtimestamp(float(millis) / 1000.0, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise BadRequestError(f"{field} must be unix milliseconds (got {millis!r})") from None


def _count(value: Any, field: str) -> int | None:
    if value in (None, "", 0, "0"):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequestError(f"{field} must be an integer (got {value!r})") from None


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _number(value: float | None) -> float | str:
    """A metric value for MLflow's JSON: numbers, or the strings protobuf's JSON uses for the rest."""
    if value is None or math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


# --- experiments ------------------------------------------------------------------------------


def _default_experiment(state: AppState, workspace_id: str) -> Experiment:
    created = state.store.workspaces.get(workspace_id).created_at
    return Experiment(DEFAULT_EXPERIMENT_ID, workspace_id, DEFAULT_EXPERIMENT, False, created, created)


def experiment_json(experiment: Experiment) -> dict[str, Any]:
    return {
        "experiment_id": experiment.id,
        "name": experiment.name,
        "artifact_location": f"mlflow-artifacts:/{experiment.id}",
        "lifecycle_stage": "deleted" if experiment.deleted else "active",
        "creation_time": _ms(experiment.created_at),
        "last_update_time": _ms(experiment.updated_at),
        "tags": [{"key": k, "value": v} for k, v in sorted(experiment.tags.items())],
    }


def get_experiment(state: AppState, workspace_id: str, experiment_id: str | None) -> Experiment:
    experiment_id = check_id(experiment_id, "experiment_id")
    if experiment_id == DEFAULT_EXPERIMENT_ID:
        return _default_experiment(state, workspace_id)
    return state.store.tracking.get_experiment(workspace_id, experiment_id)


def experiment_by_name(state: AppState, workspace_id: str, name: str | None) -> Experiment:
    if not name:
        raise BadRequestError("experiment_name is required")
    if name == DEFAULT_EXPERIMENT:
        return _default_experiment(state, workspace_id)
    found = state.store.tracking.experiment_by_name(workspace_id, name)
    if found is None:
        raise NotFoundError(f"experiment {name!r} does not exist", details={"kind": "experiment"})
    return found


def all_experiments(state: AppState, workspace_id: str) -> list[Experiment]:
    return [_default_experiment(state, workspace_id), *state.store.tracking.list_experiments(workspace_id)]


def create_experiment(
    state: AppState, workspace_id: str, name: str, tags: list[dict[str, Any]]
) -> Experiment:
    check_name(name, "the experiment name")
    if name == DEFAULT_EXPERIMENT:
        raise MlflowError("RESOURCE_ALREADY_EXISTS", f"experiment {name!r} already exists")
    pairs = tag_pairs(tags)
    return state.store.tracking.create_experiment(workspace_id, name, pairs)


def update_experiment(
    state: AppState, workspace_id: str, experiment_id: str | None, **changes: Any
) -> Experiment:
    experiment = get_experiment(state, workspace_id, experiment_id)
    if experiment.id == DEFAULT_EXPERIMENT_ID:
        raise BadRequestError("the Default experiment (0) cannot be renamed, deleted or tagged")
    if changes.get("name") is not None:
        check_name(changes["name"], "the experiment name")
        if changes["name"] == DEFAULT_EXPERIMENT:
            raise MlflowError("RESOURCE_ALREADY_EXISTS", f"experiment {DEFAULT_EXPERIMENT!r} already exists")
    return state.store.tracking.update_experiment(workspace_id, experiment.id, **changes)


# --- runs ---------------------------------------------------------------------------------------


class RunViews:
    """Turns runs into MLflow's JSON; knows the workspace's experiment ids by name."""

    def __init__(self, state: AppState, workspace_id: str) -> None:
        self.state = state
        self.workspace_id = workspace_id
        self._ids: dict[str, str] | None = None

    def experiment_id(self, run: Run) -> str:
        if run.experiment is None or run.experiment == DEFAULT_EXPERIMENT:
            return DEFAULT_EXPERIMENT_ID
        if self._ids is None:
            experiments = self.state.store.tracking.list_experiments(self.workspace_id)
            self._ids = {e.name: e.id for e in experiments}
        return self._ids.get(run.experiment, DEFAULT_EXPERIMENT_ID)

    def info(self, run: Run) -> dict[str, Any]:
        experiment_id = self.experiment_id(run)
        info: dict[str, Any] = {
            "run_id": run.id,
            "run_uuid": run.id,
            "run_name": run.name,
            "experiment_id": experiment_id,
            "user_id": run.tags.get("mlflow.user", ""),
            "status": STATUS_FROM_AICLOUD.get(run.status.value, "RUNNING"),
            "start_time": _ms(run.created_at),
            "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{run.id}/artifacts",
            "lifecycle_stage": "deleted" if run.deleted else "active",
        }
        if run.finished_at is not None:
            info["end_time"] = _ms(run.finished_at)
        return info

    def runs(self, runs: list[Run]) -> list[dict[str, Any]]:
        points = self.state.store.tracking.latest_points(self.workspace_id, [r.id for r in runs])
        out = []
        for run in runs:
            metrics = [
                {"key": name, "value": _number(value), "timestamp": int(ts * 1000), "step": step}
                for name, (step, ts, value) in sorted(points.get(run.id, {}).items())
            ]
            tags = {**run.tags, "mlflow.runName": run.name}
            if run.job_id is not None:
                tags.setdefault("aicloud.job_id", run.job_id)
            data = {
                "metrics": metrics,
                "params": [{"key": k, "value": param_text(v)} for k, v in sorted(run.params.items())],
                "tags": [{"key": k, "value": v} for k, v in sorted(tags.items())],
            }
            out.append({"info": self.info(run), "data": data, "inputs": {}})
        return out

    def run(self, run: Run) -> dict[str, Any]:
        return self.runs([run])[0]


def tag_pairs(tags: list[dict[str, Any]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in tags or []:
        key = check_key(tag.get("key"), "tag")
        out[key] = _text(tag.get("value"), MAX_TAG_VALUE_CHARS, f"tag {key!r}'s value")
    return out


def get_run(state: AppState, principal: Principal, run_id: str | None) -> Run:
    return state.store.runs.get(principal.workspace.id, check_id(run_id, "run_id"))


def writable_run(state: AppState, principal: Principal, run_id: str | None) -> Run:
    """The run, when the caller may write to it: a job's token only to its own job's runs."""
    run = get_run(state, principal, run_id)
    principal.require_job(run.job_id)
    return run


def create_run(
    state: AppState,
    principal: Principal,
    experiment_id: str | None,
    name: str | None,
    tags: list[dict[str, Any]] | None,
) -> Run:
    """A new run in the experiment. Called with a job's token, the run belongs to that job, and
    the first run the job creates is the job's own run (it is adopted: docs/mlflow.md)."""
    workspace_id = principal.workspace.id
    experiment = get_experiment(state, workspace_id, experiment_id or DEFAULT_EXPERIMENT_ID)
    if experiment.deleted:
        raise BadRequestError(f"experiment {experiment.id} is deleted: restore it or use another")
    pairs = tag_pairs(tags)
    name = name or pairs.get("mlflow.runName") or None
    if name is not None:
        check_name(name, "the run name")
    adopt = None
    job_id = principal.job_id
    if job_id is not None and "mlflow.parentRunId" not in pairs:
        adopt = state.store.jobs.get(workspace_id, job_id).run_id
    return state.store.tracking.create_run(
        workspace_id, job_id=job_id, name=name, experiment=experiment.name, tags=pairs, adopt=adopt
    )


def update_run(
    state: AppState,
    principal: Principal,
    run_id: str | None,
    status: str | None,
    end_time: Any,
    name: str | None,
) -> Run:
    run = writable_run(state, principal, run_id)
    mapped = None
    if status:
        if status == "SCHEDULED":
            status = "RUNNING"
        if status not in STATUS_TO_AICLOUD:
            raise BadRequestError(f"unknown run status {status!r}: RUNNING, FINISHED, FAILED or KILLED")
        mapped = STATUS_TO_AICLOUD[status]
    finished = None
    if end_time not in (None, ""):
        finished = _moment(end_time, "end_time")
    if name:
        check_name(name, "the run name")
    return state.store.tracking.update_run(
        principal.workspace.id, run.id, status=mapped, finished_at=finished, name=name or None
    )


def _metric_points(metrics: list[dict[str, Any]]) -> list[MetricPoint]:
    now = time.time()
    points = []
    for metric in metrics:
        key = check_key(metric.get("key"), "metric")
        try:
            value = float(metric.get("value"))  # type: ignore[arg-type]
            stamp = metric.get("timestamp")
            seconds = now if stamp in (None, "") else float(stamp) / 1000.0
            step = int(metric.get("step") or 0)
        except (TypeError, ValueError):
            raise BadRequestError(f"metric {key!r} needs a numeric value, timestamp and step") from None
        if not math.isfinite(seconds) or abs(seconds) > 2**63 / 1000 or abs(step) > 2**63 - 1:
            raise BadRequestError(f"metric {key!r} has an out-of-range timestamp or step")
        points.append(MetricPoint(key, step, value, seconds))
    return points


def log_batch(
    state: AppState,
    principal: Principal,
    run_id: str | None,
    metrics: list[dict[str, Any]] | None = None,
    params: list[dict[str, Any]] | None = None,
    tags: list[dict[str, Any]] | None = None,
) -> None:
    """MLflow's log-batch (and log-metric, log-parameter, set-tag): checked whole first, then params
    and tags in one transaction (a param changing value refuses the batch), then the metrics."""
    metrics, params, tags = metrics or [], params or [], tags or []
    limits = (
        (metrics, MAX_METRICS_PER_BATCH, "metrics"),
        (params, MAX_PARAMS_PER_BATCH, "params"),
        (tags, MAX_TAGS_PER_BATCH, "tags"),
    )
    for items, limit, what in limits:
        if len(items) > limit:
            raise BadRequestError(f"a batch holds at most {limit} {what} (got {len(items)})")
    if len(metrics) + len(params) + len(tags) > MAX_ENTITIES_PER_BATCH:
        raise BadRequestError(
            f"a batch holds at most {MAX_ENTITIES_PER_BATCH} metrics, params and tags together"
        )
    pairs: dict[str, str] = {}
    for param in params:
        key = check_key(param.get("key"), "param")
        value = _text(param.get("value"), MAX_PARAM_VALUE_CHARS, f"param {key!r}'s value")
        if pairs.get(key, value) != value:
            raise BadRequestError(f"param {key!r} appears twice in the batch with different values")
        pairs[key] = value
    tag_map = tag_pairs(tags)
    points = _metric_points(metrics)
    run = writable_run(state, principal, run_id)
    if run.deleted:
        raise BadRequestError(f"run {run.id} is deleted: restore it before logging to it")
    workspace_id = principal.workspace.id
    if pairs or tag_map:
        state.store.tracking.log_params_and_tags(workspace_id, run.id, pairs, tag_map)
    if points:
        state.store.runs.log_metrics(workspace_id, run.id, points)


def search_runs(
    state: AppState,
    workspace_id: str,
    experiment_ids: list[str],
    filter_text: str | None,
    view: str | None,
    max_results: int | None,
    order_by: list[str] | None,
    token: str | None,
) -> tuple[list[Run], str | None]:
    """One page of runs and the next page's token (None on the last page)."""
    limit = 1000 if max_results in (None, 0) else int(max_results)
    if not 0 < limit <= MAX_SEARCH_RESULTS:
        raise BadRequestError(f"max_results must be between 1 and {MAX_SEARCH_RESULTS}")
    names = []
    for experiment_id in experiment_ids:
        names.append(get_experiment(state, workspace_id, experiment_id).name)
    deleted = {"ACTIVE_ONLY": False, "DELETED_ONLY": True, "ALL": None}.get(view or "ACTIVE_ONLY", False)
    offset = page_offset(token)
    query = RunQuery(
        experiments=tuple(names),
        clauses=run_filter(filter_text),
        order=run_order(order_by),
        deleted=deleted,
        offset=offset,
        limit=limit + 1,
    )
    runs = state.store.tracking.search_runs(workspace_id, query) if names else []
    more = len(runs) > limit
    return runs[:limit], page_token(offset + limit) if more else None


def metric_history(
    state: AppState,
    principal: Principal,
    run_id: str | None,
    key: str | None,
    max_results: Any,
    token: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a metric's points, in step order."""
    run = get_run(state, principal, run_id)
    key = check_key(key, "metric")
    points = state.store.runs.metric_history(principal.workspace.id, run.id, key)
    offset = page_offset(token)
    limit = _count(max_results, "max_results") or max(len(points), 1)
    if limit < 1:
        raise BadRequestError("max_results must be at least 1")
    page = points[offset : offset + limit]
    out = [
        {"key": p.name, "value": _number(p.value), "timestamp": int(p.timestamp * 1000), "step": p.step}
        for p in page
    ]
    more = offset + limit < len(points)
    return out, page_token(offset + limit) if more else None

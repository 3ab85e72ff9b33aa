"""The SQL of a runs table: ``RunFilter`` as joins, conditions and an order.

A condition or an order on a metric joins that metric's ``run_metrics`` row (primary key
``(run_id, name)``: one index lookup per run), so sorting 10,000 runs by a metric never reads
a metric point. Params live in the run's JSON ``params``: SQLite reads one with
``json_extract``, PostgreSQL with ``CAST(params -> name AS JSONB)``, whose equality and order
are those of JSON values (the number 0.01 equals 0.010).
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, cast, func, literal, not_, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import aliased

from aicloud.store.sql.tables import JobRow, ModelRow, ModelVersionRow, RunMetricRow, RunRow
from aicloud.store.tracking import DEFAULT_EXPERIMENT
from aicloud.store.training import MetricCondition, ParamCondition, RunFilter

_OPS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
}


def param_value(dialect: str, name: str) -> ColumnElement[Any]:
    """The run's param ``name`` as a SQL value (NULL when the run does not have it)."""
    if dialect == "postgresql":
        # Extract from the json text, then make the one value jsonb (for JSON equality and order):
        # casting each whole params document to jsonb first takes 2-3 times as long.
        return cast(RunRow.params[name], JSONB)
    # Param names are checked ([A-Za-z0-9_./:-]) before they get here: the path needs no escaping.
    return func.json_extract(RunRow.params, f'$."{name}"')


def _param_matches(dialect: str, condition: ParamCondition) -> ColumnElement[bool]:
    value = param_value(dialect, condition.name)
    # One comparison per value, each bound with its own type (an IN list binds all as the first).
    typed = [literal(v, JSONB) if dialect == "postgresql" else literal(v) for v in condition.values]
    matches = or_(*(value == v for v in typed))
    # A run without the param matches neither "=" nor "!=".
    return and_(value.is_not(None), not_(matches)) if condition.negate else matches


def _alias(metric: str) -> str:
    """The SQL alias of the ``run_metrics`` row a condition on ``metric`` joins (one per name)."""
    return f"m_{hashlib.sha1(metric.encode()).hexdigest()[:12]}"


def _metric_conditions(query: Select[Any], conditions: tuple[MetricCondition, ...]) -> Select[Any]:
    """Join each metric the conditions name once, and keep the runs whose last value meets them."""
    for name in dict.fromkeys(c.name for c in conditions):
        metric = aliased(RunMetricRow, name=_alias(name))
        query = query.join(metric, and_(metric.run_id == RunRow.id, metric.name == name))
        for condition in conditions:
            if condition.name == name:
                query = query.where(_OPS[condition.op](metric.last_value, condition.value))
    return query


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filtered(
    query: Select[Any], dialect: str, workspace_id: str, job_id: str | None, where: RunFilter
) -> Select[Any]:
    """``query`` over the workspace's runs narrowed by ``where`` (its order and offset aside)."""
    query = query.where(RunRow.workspace_id == workspace_id)
    if job_id is not None:
        query = query.where(RunRow.job_id == job_id)
    if where.status is not None:
        query = query.where(RunRow.status == where.status.value)
    if where.ids is not None:
        query = query.where(RunRow.id.in_(where.ids))
    if where.experiment is not None:
        in_it = RunRow.experiment == where.experiment
        default = where.experiment == DEFAULT_EXPERIMENT
        query = query.where(or_(in_it, RunRow.experiment.is_(None)) if default else in_it)
    if where.name:
        query = query.where(RunRow.name.ilike(f"%{_escape_like(where.name)}%", escape="\\"))
    if where.job is not None:
        named = select(JobRow.id).where(JobRow.workspace_id == workspace_id, JobRow.name == where.job)
        query = query.where(or_(RunRow.job_id == where.job, RunRow.job_id.in_(named)))
    if where.model is not None:
        trains = select(JobRow.id).where(
            JobRow.workspace_id == workspace_id, JobRow.spec["model_name"].as_string() == where.model
        )
        registered = (
            select(ModelVersionRow.id)
            .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
            .where(
                ModelRow.workspace_id == workspace_id,
                ModelRow.name == where.model,
                ModelVersionRow.lineage["run_id"].as_string() == RunRow.id,
            )
        )
        query = query.where(or_(RunRow.job_id.in_(trains), registered.exists()))
    query = _metric_conditions(query, where.metrics)
    for param_condition in where.params:
        query = query.where(_param_matches(dialect, param_condition))
    return query


def ordered(query: Select[Any], dialect: str, where: RunFilter) -> Select[Any]:
    """``query`` in ``where``'s order: by a metric or a param (missing last, newest first among
    equals), else by age; then ``where.offset``."""
    order: list[Any] = []
    key: ColumnElement[Any] | None = None
    if where.metric is not None and any(c.name == where.metric for c in where.metrics):
        # A condition on the sort's metric joined its row already (every run left has one).
        joined = aliased(RunMetricRow, name=_alias(where.metric))
        key = joined.last_value.expression
    elif where.metric is not None:
        metric = aliased(RunMetricRow)
        query = query.outerjoin(metric, and_(metric.run_id == RunRow.id, metric.name == where.metric))
        key = metric.last_value.expression
    elif where.param is not None:
        key = param_value(dialect, where.param)
    if key is not None:
        order += [key.is_(None), key.desc() if where.descending else key.asc()]
    if where.oldest_first and key is None:
        order += [RunRow.created_at.asc(), RunRow.id.asc()]
    else:
        order += [RunRow.created_at.desc(), RunRow.id.desc()]
    return query.order_by(*order).offset(where.offset)

"""A run search (``store.tracking.RunQuery``) as SQLAlchemy conditions and order terms.

Metrics compare their last value (the run's ``summary``: ``[step, timestamp, value]``), params
and tags their text, attributes their columns. Keys reach SQL only as bound JSON paths or
parameters, never as SQL text. ``LIKE`` is case-sensitive on every backend (SQLite's own LIKE is
not, so there it becomes GLOB); ``ILIKE`` is not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, String, and_, cast, func, or_

from aicloud.store.sql.tables import RunRow
from aicloud.store.tracking import DEFAULT_EXPERIMENT, Clause, OrderKey, RunQuery

_TIME_COLUMNS = {"start_time": RunRow.created_at, "end_time": RunRow.finished_at}
_TEXT_COLUMNS = {"status": RunRow.status, "run_name": RunRow.name, "run_id": RunRow.id}


def _glob(pattern: str) -> str:
    """A LIKE pattern (``%``, ``_``) as a GLOB pattern (``*``, ``?``), GLOB's own wildcards escaped."""
    out = []
    for ch in pattern:
        if ch in "*?[":
            out.append(f"[{ch}]")
        elif ch == "%":
            out.append("*")
        elif ch == "_":
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def _operand(kind: str, key: str) -> Any:
    if kind == "metric":
        return RunRow.summary[(key, 2)].as_float()
    if kind == "param":
        # aicloud's own params may be numbers: compare their text (0.1 → '0.1')
        return cast(RunRow.params[key].as_string(), String)
    if kind == "tag":
        return RunRow.tags[key].as_string()
    if key in _TIME_COLUMNS:
        return _TIME_COLUMNS[key]
    return _TEXT_COLUMNS[key]


def _compare(left: Any, op: str, value: Any, dialect: str) -> ColumnElement[bool]:
    if op in ("IN", "NOT IN"):
        values = list(value) if isinstance(value, tuple) else [value]
        return left.in_(values) if op == "IN" else left.not_in(values)
    if op == "LIKE":
        return func.glob(_glob(str(value)), left) if dialect == "sqlite" else left.like(str(value))
    if op == "ILIKE":
        return func.lower(left).like(func.lower(str(value)))
    comparisons: dict[str, Any] = {
        "=": left.__eq__,
        "!=": left.__ne__,
        "<": left.__lt__,
        "<=": left.__le__,
        ">": left.__gt__,
        ">=": left.__ge__,
    }
    result: ColumnElement[bool] = comparisons[op](value)
    return result


def _condition(clause: Clause, dialect: str) -> ColumnElement[bool]:
    left = _operand(clause.kind, clause.key)
    value: Any = clause.value
    if clause.kind == "attribute" and clause.key in _TIME_COLUMNS:
        value = datetime.fromtimestamp(float(value) / 1000.0, UTC)
    elif clause.kind == "metric":
        value = float(value)
    return and_(left.is_not(None), _compare(left, clause.op, value, dialect))


def conditions(workspace_id: str, query: RunQuery, dialect: str) -> list[ColumnElement[bool]]:
    """The WHERE terms of ``query`` over ``runs``."""
    names = list(query.experiments)
    in_experiments: ColumnElement[bool] = RunRow.experiment.in_(names)
    if DEFAULT_EXPERIMENT in names:
        in_experiments = or_(in_experiments, RunRow.experiment.is_(None))
    where = [RunRow.workspace_id == workspace_id, in_experiments]
    if query.deleted is not None:
        where.append(RunRow.deleted_at.is_not(None) if query.deleted else RunRow.deleted_at.is_(None))
    where += [_condition(clause, dialect) for clause in query.clauses]
    return where


def order_terms(order: tuple[OrderKey, ...]) -> list[Any]:
    """ORDER BY terms: each key with runs lacking it last, then newest first, then by id."""
    terms: list[Any] = []
    for key in order:
        expr = _operand(key.kind, key.key)
        terms += [expr.is_(None), expr.asc() if key.ascending else expr.desc()]
    return [*terms, RunRow.created_at.desc(), RunRow.id.asc()]

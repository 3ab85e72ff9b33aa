"""The runs table's query language: which columns, which runs, in which order.

- ``columns``: comma-separated ``params.<name>`` and ``metrics.<name>`` (a metric column is its
  last value), e.g. ``params.lr,metrics.val_loss``.
- ``filter``: comparisons joined by ``and``: ``metrics.<name> <op> <number>`` with ``op`` one of
  ``< <= > >= = !=``, and ``params.<name> = <value>`` or ``!= <value>``, where a value is a
  number, ``true``/``false``, a bare word or a quoted string (``'adam'``). An unquoted number
  matches a param logged as that number or as that text (``params.lr = 0.01`` matches ``0.01``
  and ``"0.01"``); a quoted one only the text.
- ``sort``: ``metrics.<name>`` (its last value), ``params.<name>`` or ``created_at``; runs
  without the metric or param come last.

Names are letters, digits and ``_ . / : -``; anything else is a 422 naming the field
(``columns``, ``filter`` or ``sort``) and what is wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, cast

from aicloud.errors import ValidationError
from aicloud.store.training import MetricCondition, MetricOp, ParamCondition

NAME = r"[A-Za-z0-9_./:-]{1,200}"
_NAME = re.compile(NAME)
_COLUMN = re.compile(rf"(metrics|params)\.({NAME})")
_CLAUSE = re.compile(rf"\s*(metrics|params)\.({NAME})\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*", re.DOTALL)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
MAX_COLUMNS = 50
MAX_CLAUSES = 20


def check_metric_name(value: str, field: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValidationError.field(
            field, f"{value[:80]!r} is not a metric name: letters, digits and _ . / : -"
        )
    return value


@dataclass(frozen=True)
class Columns:
    """The param and metric columns picked for a runs table, in the order given."""

    params: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Columns:
        params: list[str] = []
        metrics: list[str] = []
        keys = [key.strip() for key in text.split(",") if key.strip()]
        if len(keys) > MAX_COLUMNS:
            raise ValidationError.field("columns", f"at most {MAX_COLUMNS} columns, not {len(keys)}")
        for key in keys:
            match = _COLUMN.fullmatch(key)
            if match is None:
                raise ValidationError.field(
                    "columns",
                    f"{key[:80]!r} is not a column: use params.<name> or metrics.<name> "
                    "(names of letters, digits and _ . / : -), separated by commas",
                )
            picked = params if match[1] == "params" else metrics
            if match[2] not in picked:
                picked.append(match[2])
        return cls(tuple(params), tuple(metrics))


def _literal(text: str) -> tuple[Any, bool]:
    """A filter's value and whether it was quoted."""
    quoted = _QUOTED.fullmatch(text)
    if quoted:
        return (quoted[1] if quoted[1] is not None else quoted[2]), True
    return text, False


def _clause_error(clause: str, problem: str) -> ValidationError:
    return ValidationError.field("filter", f"{clause.strip()[:120]!r}: {problem}")


def parse_filter(text: str) -> tuple[tuple[MetricCondition, ...], tuple[ParamCondition, ...]]:
    """The metric and param conditions of a ``filter`` expression (see the module docstring)."""
    metrics: list[MetricCondition] = []
    params: list[ParamCondition] = []
    clauses = [c for c in _AND.split(text.strip()) if c.strip()] if text.strip() else []
    if len(clauses) > MAX_CLAUSES:
        raise ValidationError.field("filter", f"at most {MAX_CLAUSES} comparisons, not {len(clauses)}")
    for clause in clauses:
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            raise _clause_error(
                clause,
                "not a comparison: use metrics.<name> <op> <number> or params.<name> = <value>, "
                "joined by 'and'",
            )
        kind, name, op, raw = match.groups()
        op = "=" if op == "==" else op
        value, quoted = _literal(raw)
        if not raw:
            raise _clause_error(clause, "a value is missing after the operator")
        if kind == "metrics":
            if quoted or not _NUMBER.fullmatch(value):
                raise _clause_error(clause, f"a metric compares to a number, not {raw[:40]!r}")
            number = float(value)
            if not math.isfinite(number):
                raise _clause_error(clause, "a metric compares to a finite number")
            metrics.append(MetricCondition(name, cast(MetricOp, op), number))
            continue
        if op not in ("=", "!="):
            raise _clause_error(clause, "a param compares with = or != only")
        if not quoted and any(ch in value for ch in "'\" "):
            raise _clause_error(clause, "quote a value with spaces or quotes in it: 'like this'")
        params.append(ParamCondition(name, _param_values(value, quoted), negate=op == "!="))
    return tuple(metrics), tuple(params)


def _param_values(value: str, quoted: bool) -> tuple[Any, ...]:
    """The JSON values a param may hold to equal a filter's ``value``."""
    if quoted:
        return (value,)
    if value in ("true", "false"):
        return (value == "true", value)
    if _NUMBER.fullmatch(value):
        number = float(value)
        as_int = int(number) if number.is_integer() and abs(number) < 2**53 else None
        return (number, value) if as_int is None else (as_int, value)
    return (value,)


@dataclass(frozen=True)
class Sort:
    """What a runs table is sorted by: a metric's last value, a param, or the creation time."""

    kind: Literal["metric", "param", "created_at"]
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> Sort:
        text = text.strip()
        if text == "created_at":
            return cls("created_at")
        match = _COLUMN.fullmatch(text)
        if match is None:
            raise ValidationError.field(
                "sort", f"{text[:80]!r}: sort by metrics.<name>, params.<name> or created_at"
            )
        return cls("metric" if match[1] == "metrics" else "param", match[2])

"""The first rows of a dataset file, for people to look at (the console's dataset page).

Read in the parser worker like a profile (:mod:`aicloud.data.isolation`), never stored: the
metadata database keeps no cell of an upload. Values come back JSON-safe: numbers (NaN and
infinities as None), text cut to :data:`MAX_CELL` characters, dates and times as ISO text, bytes
and nested values as a short description.
"""

from __future__ import annotations

import math
from typing import Any, BinaryIO

import pyarrow as pa

from aicloud.data.formats import normalize_format, translate_errors
from aicloud.data.limits import DEFAULT_LIMITS, ParseLimits
from aicloud.data.profile import table_items
from aicloud.errors import UnsupportedFormatError

MAX_ROWS = 50
MAX_CELL = 200


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value if len(value) <= MAX_CELL else value[:MAX_CELL] + "…"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, list | dict):
        text = repr(value)
        return text if len(text) <= MAX_CELL else text[:MAX_CELL] + "…"
    return str(value)[:MAX_CELL]


def preview(fmt: str, f: BinaryIO, rows: int = 20, limits: ParseLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """``{"columns": [...], "rows": [[...], ...]}``: the first ``rows`` rows (at most MAX_ROWS) of a
    CSV, JSON Lines or Parquet file. NPZ arrays have no rows to show (UnsupportedFormatError)."""
    fmt = normalize_format(fmt)
    rows = max(1, min(rows, MAX_ROWS))
    if fmt == "npz":
        raise UnsupportedFormatError("an NPZ file's arrays have no rows to preview")
    items, what = table_items(fmt, f, limits)
    columns: list[str] = []
    out: list[list[Any]] = []
    for item in items:
        if isinstance(item, pa.Schema):
            columns = list(item.names)
            continue
        with translate_errors(what):
            for row in item.slice(0, rows - len(out)).to_pylist():
                out.append([_cell(row.get(name)) for name in columns])
        if len(out) >= rows:
            break
    return {"columns": columns, "rows": out}

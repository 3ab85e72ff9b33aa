"""Profiling a dataset file: validate it, and compute its schema and per-column statistics.

The file is streamed (CSV and JSON Lines in 32 MB blocks, Parquet in batches of 256k rows, NPZ one
array at a time), so memory stays bounded by a block plus the distinct-value sets (see
:mod:`aicloud.data.stats`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from aicloud.data.csvfile import csv_batches
from aicloud.data.formats import guarded, normalize_format, translate_errors
from aicloud.data.jsonlfile import jsonl_batches
from aicloud.data.limits import DEFAULT_LIMITS, ParseLimits
from aicloud.data.npzfile import NpzArchive
from aicloud.data.parquetfile import open_parquet, parquet_batches
from aicloud.data.stats import ColumnStats, TableStats, distinct_cap
from aicloud.errors import InvalidDataError

NPZ_CHUNK = 1 << 22  # elements per chunk when computing an NPZ array's statistics


@dataclass(frozen=True)
class Profile:
    """What profiling a dataset file found.

    Attributes:
        num_rows: the number of rows (for NPZ: the shared first dimension of the arrays).
        schema: one entry per column, in file order: ``{"name", "dtype"}``; NPZ entries also carry
            ``"shape"``, the per-row shape (``[]`` for a 1-D array, ``[28, 28]`` for images).
        stats: column name → ``{"min", "max", "mean", "nulls", "distinct", "distinct_approx"}``,
            JSON-safe (see :mod:`aicloud.data.stats` for the rules). For NPZ arrays with more than one
            dimension the statistics are over all elements.
    """

    num_rows: int
    schema: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the profile."""
        return {"num_rows": self.num_rows, "schema": self.schema, "stats": self.stats}


def profile(fmt: str, f: BinaryIO, limits: ParseLimits = DEFAULT_LIMITS) -> Profile:
    """Read a whole dataset file, validate it and compute its schema and statistics.

    Args:
        fmt: one of :data:`~aicloud.data.formats.FORMATS` (see :func:`detect_format`).
        f: a seekable binary file object; it is read in large blocks and never needs ``fileno()``.
        limits: the content limits to check (nesting depth, decompressed size); an untrusted file is
            profiled in a worker process that also limits memory and time (:mod:`aicloud.data.isolation`).

    Raises:
        UnsupportedFormatError: ``fmt`` is not a supported format.
        InvalidDataError: the file is empty, has no rows, or is malformed; the message says what is
            wrong and where (e.g. ``CSV row 17 (line 18) has 5 fields, the header has 4``).
        PayloadTooLargeError: the file exceeds one of ``limits``; the message names the setting.
    """
    fmt = normalize_format(fmt)
    if fmt == "npz":
        with translate_errors("the NPZ file"):
            return _profile_npz(f, limits)
    items, what = table_items(fmt, f, limits)
    table = _accumulate(items, what)
    if table.num_rows == 0:
        if fmt == "csv":
            raise InvalidDataError("the CSV file has a header but no rows")
        raise InvalidDataError("the file has no rows")
    return Profile(num_rows=table.num_rows, schema=table.schema_entries(), stats=table.stats())


def table_items(
    fmt: str, f: BinaryIO, limits: ParseLimits = DEFAULT_LIMITS
) -> tuple[Iterator[pa.Schema | pa.RecordBatch], str]:
    """A CSV, JSON Lines or Parquet file (``fmt`` normalized) as its schema, then its record batches
    (a schema item may come again: it restarts the columns), with parse errors turned into clean
    InvalidDataErrors; and how errors name the file ("the CSV file")."""
    what = {"csv": "the CSV file", "jsonl": "the JSON Lines file", "parquet": "the Parquet file"}[fmt]
    items: Iterable[pa.Schema | pa.RecordBatch]
    if fmt == "csv":
        items = csv_batches(f)
    elif fmt == "jsonl":
        items = jsonl_batches(f, limits)
    else:
        with translate_errors(what):
            pf = open_parquet(f, limits)
        items = parquet_batches(pf)
    return guarded(items, what), what


def _accumulate(items: Iterator[pa.Schema | pa.RecordBatch], what: str) -> TableStats:
    """Feed batches to statistics; a schema item (re)starts them."""
    table: TableStats | None = None
    for item in items:
        with translate_errors(what):
            if isinstance(item, pa.Schema):
                _check_names(item.names)
                table = TableStats(item)
            elif table is not None:
                table.add(item)
    if table is None:
        raise InvalidDataError(f"{what} holds no table")
    return table


def _check_names(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidDataError(f"the column name {name!r} appears more than once")
        seen.add(name)


def _profile_npz(f: BinaryIO, limits: ParseLimits) -> Profile:
    archive = NpzArchive(f, limits)
    try:
        cap = distinct_cap(len(archive.members))
        schema: list[dict[str, Any]] = []
        stats: dict[str, dict[str, Any]] = {}
        for member, arr in archive.arrays():
            schema.append({"name": member.name, "dtype": str(member.dtype), "shape": list(member.shape[1:])})
            stats[member.name] = _array_stats(arr, cap)
        return Profile(num_rows=archive.num_rows, schema=schema, stats=stats)
    finally:
        archive.close()


def _array_stats(arr: np.ndarray[Any, Any], cap: int) -> dict[str, Any]:
    """Statistics over all elements of an array, computed in chunks with the tabular rules."""
    try:
        arrow_type = pa.from_numpy_dtype(arr.dtype)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError):
        arrow_type = None
    if arrow_type is None or arr.dtype.names is not None:
        # complex numbers, structured records, raw bytes: no statistics beyond NaN counting
        nulls = int(np.isnan(arr).sum()) if arr.dtype.kind == "c" else 0
        return {
            "min": None,
            "max": None,
            "mean": None,
            "nulls": nulls,
            "distinct": None,
            "distinct_approx": False,
        }
    col = ColumnStats(arrow_type, cap)
    flat = arr.reshape(-1)
    for start in range(0, flat.size, NPZ_CHUNK):
        col.add(pa.array(flat[start : start + NPZ_CHUNK]))
    return col.result()

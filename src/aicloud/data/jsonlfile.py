"""JSON Lines reading: one JSON object per line; blank lines are skipped.

Fast path: pyarrow's streaming JSON reader. When it fails, the file is scanned line by line with
:mod:`json` to name the first bad line (not JSON, not an object, not UTF-8). When every line is fine
and pyarrow still failed (a key whose values change type, e.g. ``5`` then ``"five"``, or a key that
first appears late in a large file), the file is read with :mod:`json` instead: keys become columns in
order of first appearance; ints and floats unify to float64; any other mix, and nested values, become a
string column holding each value's JSON text (dtype ``"json"``).

Nesting deeper than :attr:`~aicloud.data.limits.ParseLimits.max_depth` is refused (413) before a line
reaches either parser: pyarrow's parser recurses on the C stack, and a line of 100,000 ``[`` crashes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.json as pajson

from aicloud.data.formats import (
    HEAD_SIZE,
    UTF8_BOM,
    FullReader,
    TableItem,
    buffered,
    check_not_empty,
    read_head,
)
from aicloud.data.limits import DEFAULT_LIMITS, DepthGuard, ParseLimits, depth_error, first_too_deep
from aicloud.errors import InvalidDataError

JSONL_BLOCK = 32 << 20
PY_BATCH_ROWS = 65_536
DTYPE_META = b"aicloud.dtype"  # field metadata key: the dtype name to report, when not the Arrow type's


def iter_lines(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line without its terminator) for each non-blank line, BOM removed."""
    for line_no, raw in enumerate(buffered(f), 1):
        line = raw[len(UTF8_BOM) :] if line_no == 1 and raw.startswith(UTF8_BOM) else raw
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line_no, line


def parse_line(line_no: int, line: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The JSON object on a line, or InvalidDataError naming the line and the problem (413 when it nests
    deeper than ``limits.max_depth``)."""
    too_deep = first_too_deep(line, limits.max_depth)
    if too_deep is not None:
        raise depth_error(line_no, too_deep[1], limits)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidDataError(
            f"JSON Lines line {line_no} is not valid UTF-8 text", details={"line": line_no}
        ) from e
    try:
        obj = json.loads(text)  # accepts NaN and Infinity, as pyarrow does
    except ValueError as e:
        raise InvalidDataError(
            f"JSON Lines line {line_no} is not valid JSON: {e}", details={"line": line_no}
        ) from e
    if not isinstance(obj, dict):
        raise InvalidDataError(
            f"JSON Lines line {line_no} holds a JSON {_json_type(obj)}, expected an object",
            details={"line": line_no},
        )
    return obj


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def check_jsonl_head(f: BinaryIO) -> None:
    check_not_empty(read_head(f, HEAD_SIZE))


def jsonl_batches(f: BinaryIO, limits: ParseLimits = DEFAULT_LIMITS) -> Iterator[TableItem]:
    """Stream a JSON Lines file as record batches; yields the schema first, and again (followed by all
    batches from the start) if the fast reader gave up and the file is re-read with :mod:`json`."""
    check_jsonl_head(f)
    f.seek(0)
    counting = _LineCounter(FullReader(f), DepthGuard(limits))
    try:
        reader = pajson.open_json(counting, read_options=pajson.ReadOptions(block_size=JSONL_BLOCK))
        yield reader.schema
        rows = 0
        for batch in reader:
            rows += batch.num_rows
            yield batch
        if rows != counting.lines():
            # pyarrow accepts two objects on a line, or one spread over lines; blank lines also make
            # the counts differ. Check each line: raises on the first that is not one object.
            validate_lines(f, limits)
        return
    except Exception as e:
        # the depth guard raises inside pyarrow's read; pyarrow may hand it back wrapped
        if counting.guard.error is not None:
            raise counting.guard.error from None
        if not isinstance(e, pa.ArrowInvalid):
            raise
    yield from _python_batches(f, limits)  # its first pass raises on the first bad line


def validate_lines(f: BinaryIO, limits: ParseLimits = DEFAULT_LIMITS) -> int:
    """Parse every line; InvalidDataError names the first bad one. Returns the number of rows."""
    rows = 0
    for line_no, line in iter_lines(f):
        parse_line(line_no, line, limits)
        rows += 1
    return rows


def _straddling(tail: bytes, data: bytes) -> int:
    """Empty lines (``\\n\\n`` or ``\\n\\r\\n``) that begin in ``tail`` and end in ``data``."""
    n = 0
    if tail.endswith(b"\n") and (data.startswith(b"\n") or data.startswith(b"\r\n")):
        n += 1
    if tail.endswith(b"\n\r") and data.startswith(b"\n"):
        n += 1
    return n


class _LineCounter:
    """A read-only proxy over a file object that counts the non-empty lines of what is read through it
    (a line holding only ``\\r`` counts as empty; one holding spaces does not), and checks their
    nesting depth before the reader gets them."""

    def __init__(self, f: FullReader, guard: DepthGuard) -> None:
        self._f = f
        self.guard = guard
        self._newlines = 0
        self._empty = 0
        self._tail = b"\n"  # as if a newline preceded the file: an empty first line is empty
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.guard.feed(data)
        if data:
            self._newlines += data.count(b"\n")
            self._empty += data.count(b"\n\n") + data.count(b"\n\r\n") + _straddling(self._tail, data)
            self._tail = (self._tail + data[-2:])[-2:]
        return data

    def lines(self) -> int:
        """Non-empty lines read so far (exact unless runs of empty lines make the counts overlap)."""
        unterminated_last = 0 if self._tail.endswith(b"\n") else 1
        return self._newlines + unterminated_last - self._empty

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


# ---------------------------------------------------------------------------------------------------------
# The slow, tolerant reader


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int" if -(2**63) <= v < 2**63 else "float"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    return "json"


_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
}


def _unify(kinds: set[str]) -> tuple[pa.DataType, bool]:
    """(arrow type, holds JSON text) for the set of value kinds seen in one column."""
    kinds = kinds - {"null"}
    if not kinds:
        return pa.null(), False
    if kinds <= {"int", "float"}:
        return (pa.int64() if kinds == {"int"} else pa.float64()), False
    if len(kinds) == 1 and "json" not in kinds:
        return _TYPES[next(iter(kinds))], False
    return pa.string(), True


def _python_batches(f: BinaryIO, limits: ParseLimits) -> Iterator[TableItem]:
    kinds: dict[str, set[str]] = {}
    for line_no, line in iter_lines(f):
        for key, value in parse_line(line_no, line, limits).items():
            kinds.setdefault(key, set()).add(_kind(value))
    fields = []
    as_json: set[str] = set()
    for key, ks in kinds.items():
        typ, is_json = _unify(ks)
        if is_json:
            as_json.add(key)
            fields.append(pa.field(key, typ, metadata={DTYPE_META: b"json"}))
        else:
            fields.append(pa.field(key, typ))
    schema = pa.schema(fields)
    yield schema
    rows: list[dict[str, Any]] = []
    for line_no, line in iter_lines(f):
        rows.append(parse_line(line_no, line, limits))
        if len(rows) >= PY_BATCH_ROWS:
            yield _to_batch(rows, schema, as_json)
            rows = []
    if rows:
        yield _to_batch(rows, schema, as_json)


def _to_batch(rows: list[dict[str, Any]], schema: pa.Schema, as_json: set[str]) -> pa.RecordBatch:
    arrays = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        if field.name in as_json:
            values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
        elif pa.types.is_floating(field.type):
            values = [None if v is None else float(v) for v in values]
        arrays.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)

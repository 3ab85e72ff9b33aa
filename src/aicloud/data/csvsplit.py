"""Splitting a CSV file: rows are copied byte for byte.

Pass 1 reads the file in chunks cut at row boundaries (see :mod:`aicloud.data.csvfile`), parses the
label column of each with pyarrow (which validates the rows), checks UTF-8, and counts the rows that a
quote-aware newline scan finds in the same chunk. Pass 2 reads the same chunks and routes each row's
bytes, header and line endings included, to train or test. Empty lines are dropped.

When the newline scan and pyarrow disagree on a chunk (a stray quote inside an unquoted field, or
``\\r``-only line endings), pass 2 instead re-writes the rows from pyarrow's parse of every column as
exact text, quoted where needed, with ``\\n`` line endings.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from aicloud.data import csvfile
from aicloud.data.formats import guarded, translate_errors
from aicloud.data.sampling import Writable, arrow_labels, assign, counts, missing_column
from aicloud.errors import InvalidDataError

_NL = 10
_CR = 13
_QUOTE = 34


def split_csv(
    f: BinaryIO, out_train: Writable, out_test: Writable, train_size: float, seed: int, stratify: str | None
) -> tuple[int, int]:
    names = csvfile.header(f)
    if stratify is not None and stratify not in names:
        raise missing_column(stratify, names)
    key = stratify if stratify is not None else names[0]
    with translate_errors("the CSV file"):
        column, raw_ok = _scan(f, names, key)
    if len(column) == 0:
        raise InvalidDataError("the CSV file has a header but no rows")
    labels = arrow_labels(column, stratify) if stratify is not None else None
    mask = assign(len(column), train_size, seed, labels, stratify)
    del column
    if raw_ok:
        seen = _copy_rows(f, mask, out_train, out_test)
    else:
        seen = _rewrite_rows(f, names, mask, out_train, out_test)
    return counts(mask, seen)


# ---------------------------------------------------------------------------------------------------------
# Row boundaries


@dataclass(frozen=True)
class _Rows:
    """The rows of a chunk: byte offsets [start, end) of each (line ending included)."""

    starts: np.ndarray[Any, Any]
    ends: np.ndarray[Any, Any]
    header: bytes | None  # the header row's bytes, for the first chunk


def _rows(chunk: bytes, first: bool) -> _Rows:
    if not chunk.endswith(b"\n"):
        chunk += b"\n"  # only the file's last row can lack its newline
    buf = np.frombuffer(chunk, dtype=np.uint8)
    newlines = np.flatnonzero(buf == _NL)
    if b'"' in chunk:
        quotes = np.flatnonzero(buf == _QUOTE)
        newlines = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    ends = newlines + 1
    starts = np.concatenate(([0], ends[:-1]))
    content = newlines - starts  # length before the newline
    cr = (content > 0) & (buf[np.maximum(newlines - 1, 0)] == _CR)
    keep = (content - cr) > 0  # empty lines are not rows
    starts, ends = starts[keep], ends[keep]
    header = None
    if first and len(starts):
        header = chunk[int(starts[0]) : int(ends[0])]
        starts, ends = starts[1:], ends[1:]
    return _Rows(starts, ends, header)


def _chunks(f: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    first = True
    for chunk in csvfile.row_chunks(f):
        yield chunk, first
        first = False


# ---------------------------------------------------------------------------------------------------------
# Pass 1


def _scan(f: BinaryIO, names: list[str], key: str) -> tuple[pa.ChunkedArray, bool]:
    """The key column as exact text, and whether the newline scan agrees with pyarrow on every chunk."""
    pieces: list[pa.Array] = []
    raw_ok = True
    try:
        for chunk, first in _chunks(f):
            _check_utf8(chunk, f)
            read = pacsv.ReadOptions(
                block_size=csvfile.PARSE_BLOCK, use_threads=True, column_names=None if first else names
            )
            table = pacsv.read_csv(
                pa.BufferReader(chunk),
                read_options=read,
                parse_options=pacsv.ParseOptions(newlines_in_values=b'"' in chunk),
                convert_options=pacsv.ConvertOptions(
                    include_columns=[key], column_types={key: pa.string()}, strings_can_be_null=False
                ),
            )
            pieces.extend(table.column(0).chunks)
            raw_ok = raw_ok and len(_rows(chunk, first).starts) == table.num_rows
    except pa.ArrowInvalid:
        # the chunked reading failed: the streaming reader decides (and names the bad row)
        batches = csvfile.string_batches(f, names, include=[key])
        return pa.chunked_array([b.column(0) for b in batches], type=pa.string()), False
    return pa.chunked_array(pieces, type=pa.string()), raw_ok


def _check_utf8(chunk: bytes, f: BinaryIO) -> None:
    try:
        pa.array([chunk], type=pa.binary()).cast(pa.string())
    except pa.ArrowInvalid as e:
        raise csvfile.utf8_error(f, None) from e


# ---------------------------------------------------------------------------------------------------------
# Pass 2


def _select(buf: np.ndarray[Any, Any], rows: _Rows, part: np.ndarray[Any, Any]) -> tuple[bytes, bytes]:
    """The bytes of the rows in ``part`` and of the others, each concatenated in file order."""
    n = len(rows.starts)
    if n == 0:
        return b"", b""
    # segments: [gap before row 0, row 0, gap before row 1, row 1, ..., gap after the last row]
    bounds = np.empty(2 * n + 2, dtype=np.int64)
    bounds[0] = 0
    bounds[1:-1:2] = rows.starts
    bounds[2:-1:2] = rows.ends
    bounds[-1] = len(buf)
    lengths = np.diff(bounds)
    picked = np.zeros(2 * n + 1, dtype=np.bool_)
    picked[1::2] = part
    train = buf[np.repeat(picked, lengths)].tobytes()
    picked[1::2] = ~part
    test = buf[np.repeat(picked, lengths)].tobytes()
    return train, test


def _copy_rows(f: BinaryIO, mask: np.ndarray[Any, Any], out_train: Writable, out_test: Writable) -> int:
    offset = 0
    for chunk, first in guarded(_chunks(f), "the CSV file"):
        data = chunk if chunk.endswith(b"\n") else chunk + b"\n"
        rows = _rows(data, first)
        if rows.header is not None:
            out_train.write(rows.header)
            out_test.write(rows.header)
        part = mask[offset : offset + len(rows.starts)]
        offset += len(rows.starts)
        train, test = _select(np.frombuffer(data, dtype=np.uint8), rows, part)
        if train:
            out_train.write(train)
        if test:
            out_test.write(test)
    return offset


def _header_line(names: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(names)
    return out.getvalue().encode("utf-8")


def _rewrite_rows(
    f: BinaryIO, names: list[str], mask: np.ndarray[Any, Any], out_train: Writable, out_test: Writable
) -> int:
    head = _header_line(names)
    out_train.write(head)
    out_test.write(head)
    offset = 0
    for batch in guarded(csvfile.string_batches(f, names), "the CSV file"):
        part = pa.array(mask[offset : offset + batch.num_rows])
        offset += batch.num_rows
        train, test = _csv_text(batch.filter(part)), _csv_text(batch.filter(pc.invert(part)))
        if train:
            out_train.write(train)
        if test:
            out_test.write(test)
    return offset


def _csv_text(batch: pa.RecordBatch) -> bytes:
    """The CSV text of a batch of string columns: quoted where needed, one ``\\n``-terminated line per row."""
    if batch.num_rows == 0:
        return b""
    cols = []
    for col in batch.columns:
        needs = pc.match_substring_regex(col, r'[",\r\n]')
        if batch.num_columns == 1:
            needs = pc.or_(needs, pc.equal(pc.utf8_length(col), 0))  # an empty line would be skipped
        if pc.any(needs).as_py():
            quoted = pc.binary_join_element_wise('"', pc.replace_substring(col, '"', '""'), '"', "")
            col = pc.if_else(needs, quoted, col)
        cols.append(col)
    rows = pc.binary_join_element_wise(*cols, ",") if len(cols) > 1 else cols[0]
    lines = pc.binary_join_element_wise(rows, "", "\n").cast(pa.large_string())
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    data = lines.buffers()[2]
    return data[start:end].to_pybytes() if data is not None else b""

"""Deterministic train/test splits of a dataset file into two new files of the same format.

Which rows go to train is exactly what :func:`sklearn.model_selection.train_test_split` picks for
``np.arange(num_rows)`` with the same ``train_size``, ``random_state=seed`` and ``stratify`` labels;
each output keeps the rows in their original file order. Outputs are byte-identical for the same input
and seed:

* CSV: rows are copied byte for byte, header and line endings included (see :mod:`.csvsplit`);
* JSON Lines: each line is copied as is (blank lines dropped, ``\\n`` line endings);
* Parquet: written by pyarrow with the input's schema (and its metadata) and compression codec;
* NPZ: a zip with fixed member timestamps, deflated when the input was.
"""

from __future__ import annotations

import json
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aicloud.data.csvsplit import split_csv
from aicloud.data.formats import guarded, normalize_format, translate_errors
from aicloud.data.jsonlfile import check_jsonl_head, iter_lines, parse_line
from aicloud.data.limits import DEFAULT_LIMITS, ParseLimits
from aicloud.data.npzfile import NpzArchive, NpzWriter
from aicloud.data.parquetfile import compression_of, open_parquet
from aicloud.data.sampling import (
    SinkBuffer,
    Writable,
    arrow_labels,
    assign,
    check_seed,
    check_train_size,
    copy_out,
    counts,
    missing_column,
    spooled,
)
from aicloud.errors import InvalidDataError, ValidationError

__all__ = ["Writable", "assign", "split"]


def split(
    fmt: str,
    f: BinaryIO,
    out_train: Writable,
    out_test: Writable,
    *,
    train_size: float,
    seed: int,
    stratify: str | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> tuple[int, int]:
    """Split the rows of a dataset file into a train and a test file of the same format.

    Args:
        fmt: one of :data:`~aicloud.data.formats.FORMATS`.
        f: the input, a seekable binary file object (read twice, in large blocks).
        out_train, out_test: writable sinks for the two new files.
        train_size: the fraction of rows for train, strictly between 0 and 1.
        seed: the random seed (0 ≤ seed < 2**32); the same input and seed give byte-identical outputs.
        stratify: a column (for NPZ: the name of a 1-D array) whose class proportions both parts keep.
        limits: the content limits to check, as for :func:`~aicloud.data.profile.profile`.

    Returns:
        ``(train_rows, test_rows)``.

    Raises:
        ValidationError: a bad ``train_size``, ``seed`` or ``stratify`` (the field is named), including
            a split that would leave a part empty or a class with fewer than 2 rows.
        InvalidDataError / UnsupportedFormatError: as for :func:`~aicloud.data.profile.profile`.
    """
    fmt = normalize_format(fmt)
    check_train_size(train_size)
    check_seed(seed)
    if stratify is not None and (not isinstance(stratify, str) or not stratify):
        raise ValidationError.field("stratify", f"must be a column name, got {stratify!r}")
    if fmt == "csv":
        return split_csv(f, out_train, out_test, train_size, seed, stratify)
    if fmt == "jsonl":
        return _split_jsonl(f, out_train, out_test, train_size, seed, stratify, limits)
    if fmt == "parquet":
        return _split_parquet(f, out_train, out_test, train_size, seed, stratify, limits)
    return _split_npz(f, out_train, out_test, train_size, seed, stratify, limits)


# ---------------------------------------------------------------------------------------------------------
# JSON Lines


def _split_jsonl(
    f: BinaryIO,
    out_train: Writable,
    out_test: Writable,
    train_size: float,
    seed: int,
    stratify: str | None,
    limits: ParseLimits,
) -> tuple[int, int]:
    what = "the JSON Lines file"
    with translate_errors(what):
        check_jsonl_head(f)
        keys: dict[str, None] = {}
        classes: dict[str, int] = {}  # JSON text of a label (so 1 and "1" differ) -> code
        shown: list[str] = []  # code -> display name
        codes: list[int] = []
        rows = 0
        for line_no, line in iter_lines(f):
            obj = parse_line(line_no, line, limits)
            rows += 1
            if stratify is None:
                continue
            keys.update(dict.fromkeys(obj))
            value = obj.get(stratify)
            if isinstance(value, dict | list):
                raise ValidationError.field(
                    "stratify",
                    f"column {stratify!r} holds a JSON {type(value).__name__} on line {line_no}; "
                    "stratify needs plain values",
                )
            label = json.dumps(value)
            if label not in classes:
                classes[label] = len(classes)
                shown.append(value if isinstance(value, str) else label)
            codes.append(classes[label])
    if rows == 0:
        raise InvalidDataError("the file has no rows")
    labels = None
    if stratify is not None:
        if stratify not in keys:
            raise missing_column(stratify, list(keys))
        labels = (np.asarray(codes, dtype=np.int64), shown)
    mask = assign(rows, train_size, seed, labels, stratify)
    sinks = (SinkBuffer(out_test), SinkBuffer(out_train))
    seen = 0
    for _, line in guarded(iter_lines(f), what):
        if seen < rows:
            sinks[int(mask[seen])].write(line + b"\n")
        seen += 1
    for sink in sinks:
        sink.flush()
    return counts(mask, seen)


# ---------------------------------------------------------------------------------------------------------
# Parquet


def _split_parquet(
    f: BinaryIO,
    out_train: Writable,
    out_test: Writable,
    train_size: float,
    seed: int,
    stratify: str | None,
    limits: ParseLimits,
) -> tuple[int, int]:
    what = "the Parquet file"
    with translate_errors(what):
        pf = open_parquet(f, limits)
        num_rows = pf.metadata.num_rows
        names = pf.schema_arrow.names
        labels = None
        if stratify is not None:
            if stratify not in names:
                raise missing_column(stratify, names)
            labels = arrow_labels(pf.read(columns=[stratify]).column(0), stratify)
    mask = assign(num_rows, train_size, seed, labels, stratify)
    codec = compression_of(pf)
    with spooled() as tmp_train, spooled() as tmp_test:
        w_train = pq.ParquetWriter(tmp_train, pf.schema_arrow, compression=codec)
        w_test = pq.ParquetWriter(tmp_test, pf.schema_arrow, compression=codec)
        offset = 0
        for i in range(pf.metadata.num_row_groups):
            with translate_errors(what):
                table = pf.read_row_group(i)
            part = pa.array(mask[offset : offset + table.num_rows])
            offset += table.num_rows
            train, test = table.filter(part), table.filter(pc.invert(part))
            if train.num_rows:
                w_train.write_table(train)
            if test.num_rows:
                w_test.write_table(test)
        w_train.close()
        w_test.close()
        n_parts = counts(mask, offset)
        copy_out(tmp_train, out_train)
        copy_out(tmp_test, out_test)
    return n_parts


# ---------------------------------------------------------------------------------------------------------
# NPZ


def _split_npz(
    f: BinaryIO,
    out_train: Writable,
    out_test: Writable,
    train_size: float,
    seed: int,
    stratify: str | None,
    limits: ParseLimits,
) -> tuple[int, int]:
    what = "the NPZ file"
    with translate_errors(what):
        archive = NpzArchive(f, limits)
    try:
        labels = None
        if stratify is not None:
            member = archive.member(stratify)
            if member is None:
                raise missing_column(stratify, [m.name for m in archive.members])
            if len(member.shape) != 1:
                raise ValidationError.field(
                    "stratify",
                    f"array {stratify!r} has shape {list(member.shape)}; stratify needs a 1-D array",
                )
            with translate_errors(what):
                values = archive.load(member)
            try:
                uniq, codes = np.unique(values, return_inverse=True)
            except TypeError as e:
                problem = f"array {stratify!r} cannot be sorted into classes"
                raise ValidationError.field("stratify", problem) from e
            labels = (codes.reshape(-1).astype(np.int64), [str(u) for u in uniq.tolist()])
        mask = assign(archive.num_rows, train_size, seed, labels, stratify)
        with spooled() as tmp_train, spooled() as tmp_test:
            w_train = NpzWriter(tmp_train, compressed=archive.compressed)
            w_test = NpzWriter(tmp_test, compressed=archive.compressed)
            for m in archive.members:
                with translate_errors(what):
                    arr = archive.load(m)
                w_train.add(m.name, arr[mask])
                w_test.add(m.name, arr[~mask])
                del arr
            w_train.close()
            w_test.close()
            copy_out(tmp_train, out_train)
            copy_out(tmp_test, out_test)
    finally:
        archive.close()
    n_train = int(mask.sum())
    return n_train, archive.num_rows - n_train

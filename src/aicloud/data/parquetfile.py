"""Parquet reading with pyarrow over the caller's file object."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import pyarrow.parquet as pq

from aicloud.data.formats import PARQUET_MAGIC, FullReader, TableItem, read_head
from aicloud.data.limits import DEFAULT_LIMITS, ParseLimits, check_expansion
from aicloud.errors import InvalidDataError

BATCH_ROWS = 1 << 18


def open_parquet(f: BinaryIO, limits: ParseLimits = DEFAULT_LIMITS) -> pq.ParquetFile:
    """The opened Parquet file; InvalidDataError when it is empty or not Parquet, 413 when its column
    chunks declare more decompressed bytes than ``limits`` allow."""
    head = read_head(f, 4)
    if not head:
        raise InvalidDataError("the file is empty")
    if head != PARQUET_MAGIC:
        raise InvalidDataError("not a Parquet file: it does not start with the Parquet magic PAR1")
    stored = f.seek(0, 2)
    pf = pq.ParquetFile(FullReader(f), pre_buffer=True)
    names = pf.schema_arrow.names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidDataError(f"the Parquet file has more than one column named {dupes[0]!r}")
    if pf.metadata.num_rows == 0:
        raise InvalidDataError("the file has no rows")
    md = pf.metadata
    expanded = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    check_expansion("the Parquet file", expanded, stored, limits)
    return pf


def parquet_batches(pf: pq.ParquetFile) -> Iterator[TableItem]:
    """The schema, then the file's record batches."""
    yield pf.schema_arrow
    yield from pf.iter_batches(batch_size=BATCH_ROWS)


def compression_of(pf: pq.ParquetFile) -> str:
    """The codec of the file's first column chunk, as a ParquetWriter ``compression`` value."""
    try:
        codec = str(pf.metadata.row_group(0).column(0).compression).lower()
    except (IndexError, ValueError):
        return "snappy"
    if codec == "uncompressed":
        return "none"
    return codec if codec in {"snappy", "gzip", "brotli", "zstd", "lz4"} else "snappy"

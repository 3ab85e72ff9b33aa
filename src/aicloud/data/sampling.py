"""What splits share: the sink protocol, parameter checks, the choice of train rows, class labels."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from numbers import Integral, Real
from typing import IO, Any, BinaryIO, Protocol, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aicloud.errors import InvalidDataError, ValidationError

SPOOL_BYTES = 64 << 20  # outputs built in a temporary file (Parquet, NPZ) stay in memory up to this
SINK_CHUNK = 4 << 20


class Writable(Protocol):
    """Where a split writes a part: anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> Any: ...


def check_train_size(train_size: float) -> None:
    """ValidationError unless ``train_size`` is a number strictly between 0 and 1."""
    if isinstance(train_size, bool) or not isinstance(train_size, Real):
        raise ValidationError.field(
            "train_size", f"must be a number strictly between 0 and 1, got {train_size!r}"
        )
    if not (0.0 < float(train_size) < 1.0):
        raise ValidationError.field("train_size", f"must be strictly between 0 and 1, got {train_size}")


def check_seed(seed: int) -> None:
    """ValidationError unless ``seed`` is an integer that numpy's RandomState accepts."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= int(seed) < 2**32:
        raise ValidationError.field("seed", f"must be an integer from 0 to 2**32 - 1, got {seed!r}")


def assign(
    num_rows: int,
    train_size: float,
    seed: int,
    labels: tuple[np.ndarray[Any, Any], Sequence[str]] | None = None,
    stratify: str | None = None,
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """A boolean mask over the rows, True for train, chosen as sklearn's ``train_test_split`` does.

    ``labels`` is ``(codes, class names)``: an integer class code per row and a display name per code.
    """
    n_train = math.floor(float(train_size) * num_rows)
    n_test = num_rows - n_train
    if n_train < 1 or n_test < 1:
        empty = "train" if n_train < 1 else "test"
        raise ValidationError.field(
            "train_size", f"train_size={train_size} with {num_rows} rows leaves the {empty} part empty"
        )
    codes = None
    if labels is not None:
        codes, names = labels
        counts = np.bincount(codes, minlength=len(names))
        lonely = [names[int(i)] for i in np.flatnonzero(counts == 1)]
        if lonely:
            raise ValidationError.field(
                "stratify",
                f"class {lonely[0]!r} of column {stratify!r} has only 1 row; every class needs at least 2 "
                f"({len(lonely)} class(es) have 1 row)",
            )
        n_classes = int(np.count_nonzero(counts))
        if n_classes > min(n_train, n_test):
            raise ValidationError.field(
                "train_size",
                f"a stratified split on {stratify!r} needs at least {n_classes} rows (one per class) in each "
                f"part; train_size={train_size} gives {n_train} train and {n_test} test rows",
            )
    from sklearn.model_selection import train_test_split  # imported on first use: it is slow to import

    size, state = float(train_size), int(seed)
    train_idx, _ = train_test_split(np.arange(num_rows), train_size=size, random_state=state, stratify=codes)
    mask = np.zeros(num_rows, dtype=np.bool_)
    mask[train_idx] = True
    return mask


def missing_column(stratify: str, columns: Sequence[str]) -> ValidationError:
    shown = ", ".join(columns[:50]) + (", ..." if len(columns) > 50 else "")
    problem = f"column {stratify!r} is not in the dataset; columns are: {shown}"
    return ValidationError.field("stratify", problem)


def arrow_labels(column: pa.Array | pa.ChunkedArray, stratify: str) -> tuple[np.ndarray[Any, Any], list[str]]:
    """(codes, names) for an Arrow column; null is a class of its own."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    try:
        encoded = pc.dictionary_encode(column)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise ValidationError.field(
            "stratify", f"column {stratify!r} has type {column.type}; stratify needs a column of plain values"
        ) from e
    values = encoded.dictionary.to_pylist()
    names = [str(v) for v in values] + ["null"]
    codes = encoded.indices.fill_null(len(values)).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, names


def counts(mask: np.ndarray[Any, Any], seen: int) -> tuple[int, int]:
    if seen != len(mask):
        raise InvalidDataError(f"the file changed while it was split ({len(mask)} rows, then {seen})")
    n_train = int(mask.sum())
    return n_train, len(mask) - n_train


class SinkBuffer:
    """Collects small writes into large ones for a caller's sink."""

    def __init__(self, sink: Writable) -> None:
        self._sink = sink
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= SINK_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._sink.write(bytes(self._buf))
            self._buf.clear()


def copy_out(tmp: IO[bytes], sink: Writable) -> None:
    tmp.seek(0)
    while chunk := tmp.read(SINK_CHUNK):
        sink.write(chunk)


def spooled() -> BinaryIO:
    return cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES))  # closed by the caller

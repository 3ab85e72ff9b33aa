"""Reading a dataset file (CSV, Parquet, JSON Lines, NPZ) into a pandas DataFrame for training.

NPZ archives hold one array per column (``X`` of shape ``(N, ...)`` and ``y`` of shape ``(N,)``); an
array with more than one dimension per row is flattened into columns ``X_0_0``, ``X_0_1``... in
row-major order, and its per-row shape is kept in the returned schema (so an ``(N, 28, 28)`` array is
a 28x28 image). Pickled (object) arrays are refused.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from aicloud.artifacts.preprocess import dtype_name
from aicloud.data.formats import EXTENSIONS, normalize_format
from aicloud.errors import InvalidDataError


def format_of(path: Path) -> str:
    """The dataset format from a file name (``train.csv`` → ``csv``)."""
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidDataError(f"cannot tell the format of {path.name!r} from its extension")
    return fmt


def read_dataset(path: str | Path, fmt: str | None = None) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The table and its schema (``[{"name", "dtype", "shape"?}]``, as a dataset profile has it)."""
    path = Path(path)
    fmt = normalize_format(fmt) if fmt else format_of(path)
    try:
        if fmt == "npz":
            return _read_npz(path)
        if fmt == "csv":
            frame = pd.read_csv(path, low_memory=False)
        elif fmt == "parquet":
            frame = pq.read_table(path).to_pandas()
        else:
            frame = pa_json.read_json(path).to_pandas()
    except (OSError, ValueError) as exc:
        raise InvalidDataError(f"cannot read {path.name} as {fmt}: {exc}") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame, [{"name": c, "dtype": dtype_name(frame[c])} for c in frame.columns]


def frame_columns(schema: list[dict[str, Any]], names: list[str]) -> list[str]:
    """The table's columns of the schema columns ``names``, in schema order.

    A column with a per-row shape (an NPZ array) is its flattened columns (``X`` → ``X_0_0``, ...).
    """
    chosen = set(names)
    columns: list[str] = []
    for c in schema:
        name, shape = str(c.get("name")), [int(s) for s in c.get("shape") or []]
        if name not in chosen:
            continue
        if not shape:
            columns.append(name)
            continue
        columns.extend(name + "_" + "_".join(map(str, i)) for i in itertools.product(*map(range, shape)))
    return columns


def _read_npz(path: Path) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    columns: dict[str, np.ndarray] = {}
    schema: list[dict[str, Any]] = []
    with np.load(path, allow_pickle=False) as npz:
        for name in npz.files:
            arr = npz[name]
            schema.append({"name": name, "dtype": str(arr.dtype), "shape": list(arr.shape[1:])})
            if arr.ndim <= 1:
                columns[name] = arr
                continue
            flat = arr.reshape(arr.shape[0], -1)
            for i, index in enumerate(itertools.product(*(range(s) for s in arr.shape[1:]))):
                columns[name + "_" + "_".join(str(j) for j in index)] = flat[:, i]
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise InvalidDataError(f"{path.name}: the NPZ arrays do not share their first dimension")
    return pd.DataFrame(columns), schema

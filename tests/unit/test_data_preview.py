"""A dataset file's first rows (``data.preview``), JSON-safe, for the console."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from aicloud.data.preview import MAX_CELL, preview
from aicloud.errors import InvalidDataError, UnsupportedFormatError


def test_csv_jsonl_and_parquet_show_their_first_rows() -> None:
    frame = pd.DataFrame({"x": range(100), "y": [i / 3 for i in range(100)], "s": ["a" * 300] * 100})
    buf = io.BytesIO()
    frame.to_parquet(buf)
    for fmt, raw in [
        ("csv", frame.to_csv(index=False).encode()),
        ("jsonl", frame.to_json(orient="records", lines=True).encode()),
        ("parquet", buf.getvalue()),
    ]:
        shown = preview(fmt, io.BytesIO(raw), rows=5)
        assert shown["columns"] == ["x", "y", "s"], fmt
        assert [r[0] for r in shown["rows"]] == [0, 1, 2, 3, 4], fmt
        assert len(shown["rows"][0][2]) == MAX_CELL + 1  # long text is cut
        json.dumps(shown, allow_nan=False)


def test_non_finite_numbers_are_null_and_bad_input_is_refused() -> None:
    shown = preview("jsonl", io.BytesIO(b'{"a": NaN}\n{"a": 1.5}\n'), rows=10)
    assert shown["rows"] == [[None], [1.5]]
    with pytest.raises(UnsupportedFormatError):
        preview("npz", io.BytesIO(b"PK"))
    with pytest.raises(InvalidDataError):
        preview("csv", io.BytesIO(b"a,b\n1,2,3\n"))

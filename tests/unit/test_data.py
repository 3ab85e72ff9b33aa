"""aicloud.data: format detection, profiling (schema + stats) and validation of every format."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicloud.data import FORMATS, Profile, csvfile, detect_format, jsonlfile, profile, stats
from aicloud.errors import DataCorruptedError, InvalidDataError, UnsupportedFormatError

# ---------------------------------------------------------------------------------------------------------
# helpers


def to_csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()


def to_parquet(df: pd.DataFrame, **kw: Any) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, **kw)
    return buf.getvalue()


def to_jsonl(rows: list[dict[Any, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def to_npz(compressed: bool = False, **arrays: Any) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def run(fmt: str, data: bytes) -> Profile:
    return profile(fmt, io.BytesIO(data))


def bad(fmt: str, data: bytes) -> str:
    with pytest.raises(InvalidDataError) as info:
        run(fmt, data)
    return info.value.message


class SlowFile(io.RawIOBase):
    """A seekable file object that hands out at most 1000 bytes per read and has no fileno()."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(1000 if size is None or size < 0 else min(size, 1000))

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._buf.seek(offset, whence)

    def tell(self) -> int:
        return self._buf.tell()

    def fileno(self) -> int:
        raise io.UnsupportedOperation("no fileno")


def frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=n)
    f[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "i": rng.integers(-1000, 1000, n),
            "f": f,
            "s": rng.choice(["apple", "banana", "cherry", "date"], n),
            "b": rng.random(n) < 0.3,
        }
    )


def check_against_numpy(p: Profile, df: pd.DataFrame) -> None:
    assert p.num_rows == len(df)
    for col in ("i", "f", "b"):
        values = df[col].to_numpy(dtype=float)
        ok = values[~np.isnan(values)]
        st = p.stats[col]
        assert st["nulls"] == int(np.isnan(values).sum())
        assert st["min"] == pytest.approx(ok.min())
        assert st["max"] == pytest.approx(ok.max())
        assert st["mean"] == pytest.approx(ok.mean())
        assert st["distinct"] == len(np.unique(ok))
        assert st["distinct_approx"] is False
    s = p.stats["s"]
    assert (s["min"], s["max"], s["mean"]) == (None, None, None)
    assert s["distinct"] == df["s"].nunique()
    assert p.stats["b"]["min"] is False or p.stats["b"]["min"] is True
    json.dumps(p.to_dict(), allow_nan=False)  # strictly JSON-safe


# ---------------------------------------------------------------------------------------------------------
# detect_format


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.csv", "csv"),
        ("dir/A.CSV", "csv"),
        ("t.parquet", "parquet"),
        ("t.pq", "parquet"),
        ("x.npz", "npz"),
        ("x.jsonl", "jsonl"),
        ("x.ndjson", "jsonl"),
    ],
)
def test_detect_format_by_extension(name: str, fmt: str) -> None:
    heads = {
        "csv": b"a,b\n1,2\n",
        "parquet": b"PAR1...",
        "npz": to_npz(x=np.arange(3)),
        "jsonl": b'{"a": 1}\n',
    }
    assert detect_format(name, heads[fmt][:64]) == fmt
    assert detect_format(name, b"") == fmt  # an empty head proves nothing


def test_detect_format_declared_wins_and_is_normalised() -> None:
    assert detect_format("data.bin", b"a,b\n", declared="CSV") == "csv"
    assert detect_format("data.csv", b"PAR1xxxx", declared="pq") == "parquet"
    assert detect_format("x", b'{"a":1}', declared=".ndjson") == "jsonl"
    with pytest.raises(UnsupportedFormatError) as info:
        detect_format("x.csv", b"a,b\n", declared="xlsx")
    assert "csv, parquet, npz, jsonl" in info.value.message


def test_detect_format_sniffs_content() -> None:
    assert detect_format("upload", b"PAR1\x15\x04") == "parquet"
    assert detect_format("upload", to_npz(a=np.zeros(2))[:64]) == "npz"
    assert detect_format("upload.bin", b'\xef\xbb\xbf  {"a": 1}\n') == "jsonl"


def test_detect_format_unknown() -> None:
    with pytest.raises(UnsupportedFormatError) as info:
        detect_format("report.xlsx", b"not anything we know")
    for fmt in FORMATS:
        assert fmt in info.value.message
    # a zip that is not an npz (an .xlsx is a zip of XML files) is not mistaken for one
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<xml/>")
    with pytest.raises(UnsupportedFormatError):
        detect_format("report.xlsx", buf.getvalue()[:64])
    with pytest.raises(UnsupportedFormatError):
        detect_format("noext", b"a,b\n1,2\n")


@pytest.mark.parametrize(
    ("name", "head", "declared"),
    [
        ("x.bin", b"a,b\n1,2\n", "parquet"),  # declared parquet, no PAR1
        ("x.parquet", b"a,b\n1,2\n", None),  # named parquet, no PAR1
        ("x.bin", b"a,b\n", "npz"),
        ("x.csv", b"PAR1\x00\x00", None),  # named csv, content is parquet
        ("x.jsonl", b"PK\x03\x04rest", None),
        ("x.jsonl", b'[{"a": 1}]', None),  # a JSON array, not JSON Lines
    ],
)
def test_detect_format_contradiction(name: str, head: bytes, declared: str | None) -> None:
    with pytest.raises(InvalidDataError):
        detect_format(name, head, declared=declared)


# ---------------------------------------------------------------------------------------------------------
# profile: round trips and statistics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_profile_csv_stats_match_numpy(seed: int) -> None:
    df = frame(seed=seed)
    p = run("csv", to_csv(df))
    assert p.schema == [
        {"name": "i", "dtype": "int64"},
        {"name": "f", "dtype": "float64"},
        {"name": "s", "dtype": "string"},
        {"name": "b", "dtype": "bool"},
    ]
    check_against_numpy(p, df)


@pytest.mark.parametrize("seed", [0, 1])
def test_profile_parquet_stats_match_numpy(seed: int) -> None:
    df = frame(seed=seed)
    p = run("parquet", to_parquet(df))
    assert [c["dtype"] for c in p.schema] == ["int64", "float64", "string", "bool"]
    check_against_numpy(p, df)


@pytest.mark.parametrize("seed", [0, 1])
def test_profile_jsonl_stats_match_numpy(seed: int) -> None:
    df = frame(seed=seed)
    rows: list[dict[str, Any]] = json.loads(df.to_json(orient="records"))  # NaN -> null
    p = run("jsonl", to_jsonl(rows))
    assert [c["dtype"] for c in p.schema] == ["int64", "float64", "string", "bool"]
    check_against_numpy(p, df)


def test_profile_npz_stats_match_numpy() -> None:
    rng = np.random.default_rng(3)
    images = rng.random((50, 4, 5))
    images[0, 0, 0] = np.nan
    labels = rng.integers(0, 3, 50)
    names = rng.choice(["x", "y"], 50)
    p = run("npz", to_npz(images=images, labels=labels, names=names))
    assert p.num_rows == 50
    assert p.schema == [
        {"name": "images", "dtype": "float64", "shape": [4, 5]},
        {"name": "labels", "dtype": "int64", "shape": []},
        {"name": "names", "dtype": "<U1", "shape": []},
    ]
    ok = images[~np.isnan(images)]
    st = p.stats["images"]
    assert st["nulls"] == 1
    assert (st["min"], st["max"]) == (ok.min(), ok.max())
    assert st["mean"] == pytest.approx(ok.mean())
    assert st["distinct"] == len(np.unique(ok))
    assert p.stats["labels"]["distinct"] == len(np.unique(labels))
    assert p.stats["names"]["min"] is None and p.stats["names"]["mean"] is None
    json.dumps(p.to_dict(), allow_nan=False)


def test_profile_npz_compressed_and_bool() -> None:
    flags = np.array([True, False, True, True])
    p = run("npz", to_npz(compressed=True, flags=flags, x=np.arange(4.0)))
    assert p.stats["flags"] == {
        "min": False,
        "max": True,
        "mean": 0.75,
        "nulls": 0,
        "distinct": 2,
        "distinct_approx": False,
    }


def test_booleans_count_as_numeric_in_every_format() -> None:
    df = pd.DataFrame({"b": [True, False, True, True]})
    expected = {"min": False, "max": True, "mean": 0.75, "nulls": 0, "distinct": 2, "distinct_approx": False}
    assert run("csv", to_csv(df)).stats["b"] == expected
    assert run("parquet", to_parquet(df)).stats["b"] == expected
    assert run("jsonl", to_jsonl(df.to_dict("records"))).stats["b"] == expected


def test_nulls_are_counted() -> None:
    csv = b"a,b,c\n1,,x\n,2.5,\n3,NaN,z\n"
    st = run("csv", csv).stats
    assert (st["a"]["nulls"], st["b"]["nulls"], st["c"]["nulls"]) == (1, 2, 1)
    assert st["a"]["distinct"] == 2 and st["b"]["distinct"] == 1
    jl = b'{"a": 1, "b": null}\n{"a": null}\n{"a": NaN, "b": "x"}\n'
    st = run("jsonl", jl).stats
    assert (st["a"]["nulls"], st["b"]["nulls"]) == (2, 2)
    df = pd.DataFrame({"x": [1.0, np.nan, None, 4.0], "s": ["a", None, "b", None]})
    st = run("parquet", to_parquet(df)).stats
    assert (st["x"]["nulls"], st["s"]["nulls"]) == (2, 2)


def test_stats_are_json_safe_with_infinities_and_all_null_columns() -> None:
    df = pd.DataFrame({"x": [np.inf, -np.inf, np.nan], "y": [None, None, None]})
    p = run("parquet", to_parquet(df))
    json.dumps(p.to_dict(), allow_nan=False)
    assert p.stats["x"]["min"] is None and p.stats["x"]["max"] is None
    p = run("csv", b"a,empty\n1,\n2,\n")
    assert p.schema[1] == {"name": "empty", "dtype": "null"}
    assert p.stats["empty"] == {
        "min": None,
        "max": None,
        "mean": None,
        "nulls": 2,
        "distinct": 0,
        "distinct_approx": False,
    }


def test_strings_have_no_min_max_so_no_plaintext_reaches_the_metadata() -> None:
    long = "z" * 500
    p = run("csv", f"s\nabc\n{long}\n".encode())
    assert p.stats["s"]["max"] is None and p.stats["s"]["min"] is None
    assert p.stats["s"]["distinct"] == 2


def test_temporal_and_nested_columns() -> None:
    df = pd.DataFrame(
        {
            "t": [pd.Timestamp("2024-01-02 03:04:05"), pd.Timestamp("2023-05-06"), None],
            "l": [[1, 2], [3], None],
            "c": pd.Categorical(["a", "b", "a"]),
        }
    )
    p = run("parquet", to_parquet(df))
    t = p.stats["t"]
    assert t["min"].startswith("2023-05-06") and t["max"].startswith("2024-01-02 03:04:05")
    assert t["mean"] is None and t["nulls"] == 1
    assert p.stats["l"]["distinct"] is None and p.stats["l"]["nulls"] == 1
    assert p.schema[2]["dtype"] == "string"
    assert p.stats["c"]["distinct"] == 2 and p.stats["c"]["min"] is None
    jl = b'{"m": [{"role": "user", "content": "hi"}], "d": {"k": 1}}\n{"m": [], "d": {"k": 2}}\n'
    p = run("jsonl", jl)
    assert p.num_rows == 2 and p.stats["m"]["distinct"] is None


def test_distinct_count_is_capped_and_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "DISTINCT_CAP", 50)
    monkeypatch.setattr(stats, "MIN_DISTINCT_CAP", 50)
    df = pd.DataFrame({"many": np.arange(1000), "few": np.arange(1000) % 7})
    for data, fmt in ((to_csv(df), "csv"), (to_parquet(df), "parquet")):
        st = run(fmt, data).stats
        assert st["many"]["distinct_approx"] is True and st["many"]["distinct"] > 50
        assert st["few"] == {**st["few"], "distinct": 7, "distinct_approx": False}


def test_negative_zero_is_not_a_distinct_value() -> None:
    assert run("npz", to_npz(x=np.array([0.0, -0.0, 1.0]))).stats["x"]["distinct"] == 2


def test_profile_reads_slow_file_objects_without_fileno() -> None:
    df = frame(n=300)
    for fmt, data in (
        ("csv", to_csv(df)),
        ("parquet", to_parquet(df)),
        ("jsonl", to_jsonl([{"a": i, "b": str(i)} for i in range(300)])),
        ("npz", to_npz(x=np.arange(300))),
    ):
        assert profile(fmt, SlowFile(data)).num_rows == 300  # type: ignore[arg-type]


def test_profile_rejects_unknown_format() -> None:
    with pytest.raises(UnsupportedFormatError):
        run("xlsx", b"a,b\n1,2\n")


def test_errors_of_the_file_object_pass_through() -> None:
    class Corrupt(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() > 10:
                raise DataCorruptedError("blob failed authentication")
            return super().read(size)

    for fmt, data in (("csv", to_csv(frame())), ("jsonl", to_jsonl([{"a": i} for i in range(100)]))):
        with pytest.raises(DataCorruptedError):
            profile(fmt, Corrupt(data))


# ---------------------------------------------------------------------------------------------------------
# CSV specifics


def test_csv_widens_a_column_whose_type_changes_in_a_later_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvfile, "CSV_CHUNK", 64)
    body = "".join(f"{i},{i},{i}\n" for i in range(100))
    data = ("a,b,c\n" + body + "1.5,oops,\n").encode()
    p = run("csv", data)
    assert p.num_rows == 101
    assert [c["dtype"] for c in p.schema] == ["float64", "string", "int64"]
    assert p.stats["a"]["max"] == 99 and p.stats["a"]["mean"] == pytest.approx((sum(range(100)) + 1.5) / 101)
    assert p.stats["b"]["distinct"] == 101 and p.stats["c"]["nulls"] == 1


def test_csv_all_empty_first_chunk_then_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvfile, "CSV_CHUNK", 32)
    data = ("k,v\n" + "".join(f"{i},\n" for i in range(50)) + "50,7\n51,2.5\n").encode()
    p = run("csv", data)
    assert p.schema[1]["dtype"] == "float64"
    assert (p.stats["v"]["nulls"], p.stats["v"]["min"], p.stats["v"]["max"]) == (50, 2.5, 7.0)


def test_csv_quoted_newlines_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvfile, "CSV_CHUNK", 50)
    rows = [(i, f'line one\nline "two", {i}') for i in range(60)]
    df = pd.DataFrame(rows, columns=["id", "text"])
    p = run("csv", to_csv(df))
    assert p.num_rows == 60 and p.stats["text"]["distinct"] == 60 and p.stats["id"]["max"] == 59


def test_csv_stray_quotes_fall_back_to_the_streaming_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvfile, "CSV_CHUNK", 40)
    data = b'id,text\n1,5" tall\n2,"multi\nline"\n3,plain\n4,"x"\n' * 5
    data = b"id,text\n" + data.replace(b"id,text\n", b"")
    p = run("csv", data)
    assert p.num_rows == 20 and p.stats["text"]["distinct"] == 4


def test_csv_bom_crlf_and_blank_lines() -> None:
    p = run("csv", b"\xef\xbb\xbfa,b\r\n1,x\r\n\r\n2,y\r\n")
    assert p.num_rows == 2 and [c["name"] for c in p.schema] == ["a", "b"]


def test_csv_errors_say_what_and_where(monkeypatch: pytest.MonkeyPatch) -> None:
    assert bad("csv", b"") == "the file is empty"
    assert bad("csv", b"\n \n") == "the file is empty"
    assert "header but no rows" in bad("csv", b"a,b,c\n")
    ragged = b"a,b,c,d\n1,2,3,4\n5,6,7,8\n1,2,3,4,5\n"
    assert bad("csv", ragged) == "CSV row 3 (line 4) has 5 fields, the header has 4"
    assert "row 2 (line 3) has 1 fields" in bad("csv", b"a,b\n1,2\n3\n")
    assert "line 3 is not valid UTF-8" in bad("csv", b"a,b\n1,x\n2,\xff\xfe\n")
    assert "header" in bad("csv", b"a,\xff\n1,2\n")
    assert "more than once" in bad("csv", b"a,a\n1,2\n")
    monkeypatch.setattr(csvfile, "CSV_CHUNK", 64)
    late = b"a,b\n" + b"1,x\n" * 100 + b"2,\xff\n" + b"3,y\n"
    assert "line 102 is not valid UTF-8" in bad("csv", late)
    ragged_late = b"a,b\n" + b"1,x\n" * 100 + b"1,2,3\n"
    assert bad("csv", ragged_late) == "CSV row 101 (line 102) has 3 fields, the header has 2"


def test_csv_binary_garbage_is_invalid() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert bad("csv", rng.bytes(5000))
    bad("csv", gzip.compress(b"a,b\n1,2\n" * 100))
    bad("csv", b"\x89PNG\r\n\x1a\n" + rng.bytes(100))
    bad("csv", to_parquet(frame()))


def test_csv_later_garbage_is_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvfile, "CSV_CHUNK", 256)
    rng = np.random.default_rng(1)
    bad("csv", b"a,b\n" + b"1,2\n" * 200 + rng.bytes(3000))


# ---------------------------------------------------------------------------------------------------------
# JSON Lines specifics


def test_jsonl_errors_name_the_line() -> None:
    assert bad("jsonl", b"") == "the file is empty"
    assert bad("jsonl", b"\n\n  \n") == "the file is empty"
    msg = bad("jsonl", b'{"a": 1}\n{"a": 2}\n{"a": 3,}\n')
    assert msg.startswith("JSON Lines line 3 is not valid JSON")
    assert "line 2 holds a JSON array, expected an object" in bad("jsonl", b'{"a": 1}\n[1, 2]\n')
    assert "line 2 holds a JSON number" in bad("jsonl", b'{"a": 1}\n\n7\n'.replace(b"\n\n", b"\n"))
    assert "line 2 is not valid UTF-8" in bad("jsonl", b'{"a": 1}\n{"a": "\xff"}\n')
    assert "line 1" in bad("jsonl", b'{"a": 1} {"a": 2}\n{"a": 3}\n')  # two objects on one line
    assert "line 1" in bad("jsonl", b'{"a":\n1}\n{"a": 2}\n{"a": 3}\n')  # an object over two lines


def test_jsonl_blank_lines_and_bom() -> None:
    p = run("jsonl", b'\xef\xbb\xbf{"a": 1}\n\n   \n{"a": 2}\r\n{"a": 3}')
    assert p.num_rows == 3 and p.stats["a"]["max"] == 3


def test_jsonl_mixed_types_use_the_tolerant_reader() -> None:
    rows = [
        {"n": 1, "x": 5, "tag": "a"},
        {"n": 2.5, "x": "five", "tag": None},
        {"n": 3, "x": [1], "extra": True},
    ]
    p = run("jsonl", to_jsonl(rows))
    assert p.num_rows == 3
    assert p.schema == [
        {"name": "n", "dtype": "float64"},
        {"name": "x", "dtype": "json"},
        {"name": "tag", "dtype": "string"},
        {"name": "extra", "dtype": "bool"},
    ]
    assert p.stats["n"]["mean"] == pytest.approx(6.5 / 3)
    assert p.stats["x"]["distinct"] == 3 and p.stats["extra"]["nulls"] == 2


def test_jsonl_key_appearing_late(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonlfile, "JSONL_BLOCK", 64)
    rows = [{"a": i} for i in range(100)] + [{"a": 100, "late": "x"}]
    p = run("jsonl", to_jsonl(rows))
    assert p.num_rows == 101 and p.stats["late"]["nulls"] == 100


# ---------------------------------------------------------------------------------------------------------
# Parquet and NPZ specifics


def test_parquet_errors() -> None:
    assert bad("parquet", b"") == "the file is empty"
    assert "PAR1" in bad("parquet", b"a,b\n1,2\n")
    data = to_parquet(frame())
    bad("parquet", data[: len(data) // 2])  # truncated: footer missing
    corrupt = bytearray(data)
    corrupt[-60:-8] = b"\xff" * 52  # the footer's metadata
    bad("parquet", bytes(corrupt))
    empty = to_parquet(frame().iloc[:0])
    assert "no rows" in bad("parquet", empty)


def test_parquet_num_rows_over_many_row_groups() -> None:
    table = pa.table({"x": np.arange(10_000)})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=1000)
    p = run("parquet", buf.getvalue())
    assert p.num_rows == 10_000 and p.stats["x"]["distinct"] == 10_000


def test_npz_refuses_pickle() -> None:
    obj = np.array([{"a": 1}, None], dtype=object)
    msg = bad("npz", to_npz(x=np.arange(2), o=obj))
    assert "pickle" in msg and "'o'" in msg


def test_npz_errors() -> None:
    assert bad("npz", b"") == "the file is empty"
    assert "zip" in bad("npz", b"a,b\n1,2\n")
    msg = bad("npz", to_npz(x=np.arange(10), y=np.arange(9)))
    assert "'x' has 10 rows" in msg and "'y' has 9" in msg
    assert "0-d" in bad("npz", to_npz(x=np.float64(3.0)))
    assert "no arrays" in bad("npz", to_npz())
    assert "no rows" in bad("npz", to_npz(x=np.zeros((0, 3))))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", b"")
        zf.writestr("notes.txt", b"hello")
    assert "notes.txt" in bad("npz", buf.getvalue())
    data = bytearray(to_npz(x=np.arange(1000)))
    data[200:260] = b"\x00" * 60  # inside the array's data: CRC mismatch
    bad("npz", bytes(data))
    bad("npz", to_npz(x=np.arange(1000))[:500])  # truncated


def test_jsonl_blank_lines_do_not_force_the_slow_check(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    validate = jsonlfile.validate_lines

    def spy(f: Any, *limits: Any) -> int:
        calls.append(1)
        return validate(f, *limits)

    monkeypatch.setattr(jsonlfile, "validate_lines", spy)
    assert run("jsonl", b'\n{"a": 1}\r\n\r\n{"a": 2}\n\n').num_rows == 2
    assert calls == []
    assert run("jsonl", b'{"a": 1}\n   \n{"a": 2}\n').num_rows == 2  # a line of spaces: checked line by line
    assert calls == [1]


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.text(alphabet='ab ,"\n', max_size=8), min_size=1, max_size=40),
    crlf=st.booleans(),
    chunk=st.sampled_from([16, 64, 1 << 20]),
)
def test_any_csv_text_profiles_exactly(texts: list[str], crlf: bool, chunk: int) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n" if crlf else "\n").writerows([["id", "text"], *enumerate(texts)])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(csvfile, "CSV_CHUNK", chunk)
        p = run("csv", buf.getvalue().encode())
    assert p.num_rows == len(texts)
    assert p.stats["id"]["max"] == len(texts) - 1
    assert p.stats["text"]["nulls"] == texts.count("")
    assert p.stats["text"]["distinct"] == len({t for t in texts if t})

"""aicloud.data.split: deterministic, stratified, lossless train/test splits in every format."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from aicloud.data import csvfile, csvsplit, profile, split
from aicloud.errors import InvalidDataError, ValidationError

# ---------------------------------------------------------------------------------------------------------
# helpers: every format from one DataFrame, and back to rows


def encode(fmt: str, df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    if fmt == "csv":
        return df.to_csv(index=False).encode()
    if fmt == "parquet":
        df.to_parquet(buf, index=False)
    elif fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in json.loads(df.to_json(orient="records"))).encode()
    else:
        arrays: dict[str, Any] = {str(c): df[c].to_numpy() for c in df.columns}
        np.savez(buf, **{c: a.astype(str) if a.dtype == object else a for c, a in arrays.items()})
    return buf.getvalue()


def decode(fmt: str, data: bytes) -> pd.DataFrame:
    buf = io.BytesIO(data)
    if fmt == "csv":
        return pd.read_csv(buf)
    if fmt == "parquet":
        return pd.read_parquet(buf)
    if fmt == "jsonl":
        return pd.read_json(buf, lines=True)
    with np.load(buf, allow_pickle=False) as npz:
        return pd.DataFrame({k: npz[k] for k in npz.files})


def do_split(fmt: str, data: bytes, **kw: Any) -> tuple[bytes, bytes, tuple[int, int]]:
    train, test = io.BytesIO(), io.BytesIO()
    kw.setdefault("train_size", 0.75)
    kw.setdefault("seed", 0)
    counts = split(fmt, io.BytesIO(data), train, test, **kw)
    return train.getvalue(), test.getvalue(), counts


def dataset(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "x": rng.normal(size=n).round(6),
            "label": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
        }
    )


def digits_csv() -> bytes:
    digits = load_digits()
    df = pd.DataFrame(digits.data.astype(int), columns=[f"pixel_{i}" for i in range(64)])
    df["label"] = digits.target
    return df.to_csv(index=False).encode()


FORMATS = ["csv", "parquet", "jsonl", "npz"]


# ---------------------------------------------------------------------------------------------------------
# determinism, conservation, sklearn semantics


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_seed_same_bytes_different_seed_different_split(fmt: str) -> None:
    data = encode(fmt, dataset())
    a = do_split(fmt, data, seed=7)
    b = do_split(fmt, data, seed=7)
    assert a == b
    c = do_split(fmt, data, seed=8)
    assert c[2] == a[2] and c[0] != a[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_are_conserved_and_match_sklearn(fmt: str) -> None:
    df = dataset()
    train_b, test_b, (n_train, n_test) = do_split(fmt, encode(fmt, df), train_size=0.7, seed=3)
    train, test = decode(fmt, train_b), decode(fmt, test_b)
    assert (n_train, n_test) == (len(train), len(test)) == (84, 36)
    # by content: every original row exactly once, in one part
    together = pd.concat([train, test]).sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(together, df, check_dtype=False)
    # the same membership as sklearn's train_test_split, original order kept within each part
    expected_train, _ = train_test_split(np.arange(len(df)), train_size=0.7, random_state=3)
    assert list(train["id"]) == sorted(expected_train)
    assert list(test["id"]) == sorted(set(range(len(df))) - set(expected_train))


@pytest.mark.parametrize("fmt", FORMATS)
def test_stratified_proportions(fmt: str) -> None:
    df = dataset(n=400, seed=1)
    train_b, test_b, _ = do_split(fmt, encode(fmt, df), train_size=0.8, seed=5, stratify="label")
    train, test = decode(fmt, train_b), decode(fmt, test_b)
    for cls, count in df["label"].value_counts().items():
        assert abs((train["label"] == cls).sum() - 0.8 * count) <= 1
        assert abs((test["label"] == cls).sum() - 0.2 * count) <= 1
    expected_train, _ = train_test_split(
        np.arange(len(df)), train_size=0.8, random_state=5, stratify=df["label"].to_numpy()
    )
    assert list(train["id"]) == sorted(expected_train)


def test_stratified_digits_csv() -> None:
    data = digits_csv()
    full = pd.read_csv(io.BytesIO(data))
    train_b, test_b, (n_train, n_test) = do_split("csv", data, train_size=0.75, seed=42, stratify="label")
    train, test = pd.read_csv(io.BytesIO(train_b)), pd.read_csv(io.BytesIO(test_b))
    assert n_train + n_test == len(full) == 1797
    for cls, count in full["label"].value_counts().items():
        assert abs((train["label"] == cls).sum() - 0.75 * count) <= 1
        assert abs((test["label"] == cls).sum() - 0.25 * count) <= 1
    # row conservation by content (digits has duplicate rows, so compare as multisets)
    rows = Counter(map(tuple, full.to_numpy().tolist()))
    assert Counter(map(tuple, pd.concat([train, test]).to_numpy().tolist())) == rows


@pytest.mark.parametrize("fmt", FORMATS)
def test_outputs_profile_like_the_input(fmt: str) -> None:
    data = encode(fmt, dataset())
    train_b, test_b, (n_train, n_test) = do_split(fmt, data)
    whole = profile(fmt, io.BytesIO(data))
    for part, n in ((train_b, n_train), (test_b, n_test)):
        p = profile(fmt, io.BytesIO(part))
        assert p.num_rows == n and p.schema == whole.schema


# ---------------------------------------------------------------------------------------------------------
# format fidelity


def test_csv_values_are_copied_as_text() -> None:
    rows = [
        ["id", "zip", "price", "text", "maybe"],
        ["1", "007", "1.50", 'say "hi", then\nleave', ""],
        ["2", "010", "2.00", "plain", "NA"],
        ["3", "123", "1e3", "comma, here", "x"],
        ["4", "000", "-0", "", ""],
    ]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    train_b, test_b, _ = do_split("csv", buf.getvalue().encode(), train_size=0.5)
    got = [r for part in (train_b, test_b) for r in list(csv.reader(io.StringIO(part.decode())))[1:]]
    assert sorted(got) == sorted(rows[1:])
    header = b"id,zip,price,text,maybe\n"
    assert train_b.startswith(header) and test_b.startswith(header)


def test_csv_single_column_with_empty_values_keeps_every_row() -> None:
    data = b"v\na\n\nb\n" + b"".join(b'""\n' for _ in range(5)) + b"c\n"
    train_b, test_b, (n_train, n_test) = do_split("csv", data, train_size=0.5)
    assert n_train + n_test == 8  # the blank line is not a row; the quoted empty values are
    assert profile("csv", io.BytesIO(train_b)).num_rows == n_train
    assert profile("csv", io.BytesIO(test_b)).num_rows == n_test


def test_csv_split_across_many_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvfile, "CSV_CHUNK", 256)
    df = dataset(n=500)
    df["text"] = [f"row {i}\nhas, a comma" for i in range(500)]
    data = encode("csv", df)
    train_b, test_b, (n_train, n_test) = do_split("csv", data, seed=1)
    together = pd.concat([pd.read_csv(io.BytesIO(train_b)), pd.read_csv(io.BytesIO(test_b))])
    pd.testing.assert_frame_equal(together.sort_values("id").reset_index(drop=True), df)
    monkeypatch.setattr(csvfile, "CSV_CHUNK", 32 << 20)
    assert do_split("csv", data, seed=1) == (train_b, test_b, (n_train, n_test))  # chunking is invisible


def test_csv_rows_are_copied_byte_for_byte() -> None:
    lines = [b'"a","b"', b"1,  x ", b'2,"multi\r\nline"', b'3,"q"""', b"4,1.50", b"5,007"]
    # a BOM, CRLF endings, an empty line, no final newline
    data = b"\xef\xbb\xbf" + b"\r\n".join(lines[:3]) + b"\r\n\r\n" + b"\r\n".join(lines[3:])
    train_b, test_b, (n_train, n_test) = do_split("csv", data, train_size=0.6)
    assert (n_train, n_test) == (3, 2)  # the empty line is not a row
    header = b"\xef\xbb\xbf" + lines[0] + b"\r\n"
    assert train_b.startswith(header) and test_b.startswith(header)
    rows = train_b[len(header) :] + test_b[len(header) :]
    assert sorted(_rows_of(rows)) == sorted(lines[1:])


def _rows_of(blob: bytes) -> list[bytes]:
    """Split copied CSV bytes back into rows (quote-aware, CRLF or LF, final newline optional)."""
    out, row, quotes = [], b"", 0
    for line in blob.splitlines(keepends=True):
        row += line
        quotes += line.count(b'"')
        if quotes % 2 == 0:
            out.append(row.rstrip(b"\r\n"))
            row, quotes = b"", 0
    return out


@pytest.mark.parametrize(
    "data",
    [
        # a stray quote inside an unquoted field fools the quote-aware newline scan
        b'id,text\n1,5" tall\n2,"multi\nline"\n3,plain\n4,"x, y"\n5,6\'2"\n6,z\n',
        # \r-only line endings: rows pyarrow sees, lines the scan does not
        b"id,text\r1,a\r2,b\r3,c\r4,d\r5,e\r6,f\r",
    ],
)
def test_csv_rows_are_rewritten_when_boundaries_are_ambiguous(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    rewrite = csvsplit._rewrite_rows

    def spy(*args: Any) -> int:
        calls.append(1)
        return rewrite(*args)

    monkeypatch.setattr(csvsplit, "_rewrite_rows", spy)
    train_b, test_b, (n_train, n_test) = do_split("csv", data, train_size=0.5)
    assert calls == [1]
    assert (n_train, n_test) == (3, 3)
    original = pd.read_csv(io.BytesIO(data))
    together = pd.concat([pd.read_csv(io.BytesIO(train_b)), pd.read_csv(io.BytesIO(test_b))])
    pd.testing.assert_frame_equal(together.sort_values("id").reset_index(drop=True), original)
    assert do_split("csv", data, train_size=0.5) == (train_b, test_b, (3, 3))


def test_jsonl_lines_are_copied_verbatim() -> None:
    lines = [b'{"b": 1, "a": 1.50}', b'{"a": "x", "nested": {"k": [1, 2]}}', b'{"a": null}', b'{"z":   3}']
    data = b"\xef\xbb\xbf" + lines[0] + b"\r\n\n" + b"\n".join(lines[1:])
    train_b, test_b, (n_train, n_test) = do_split("jsonl", data, train_size=0.5)
    out = train_b.splitlines() + test_b.splitlines()
    assert sorted(out) == sorted(lines) and (n_train, n_test) == (2, 2)
    assert train_b.endswith(b"\n") and test_b.endswith(b"\n")


def test_parquet_keeps_schema_metadata_and_codec() -> None:
    df = pd.DataFrame({"c": pd.Categorical(list("abcabcabca")), "t": pd.date_range("2024-01-01", periods=10)})
    buf = io.BytesIO()
    df.to_parquet(buf, compression="zstd")
    train_b, _, _ = do_split("parquet", buf.getvalue(), train_size=0.6)
    pf = pq.ParquetFile(io.BytesIO(train_b))
    assert pf.schema_arrow == pq.ParquetFile(io.BytesIO(buf.getvalue())).schema_arrow
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
    back = pd.read_parquet(io.BytesIO(train_b))
    assert isinstance(back["c"].dtype, pd.CategoricalDtype) and len(back) == 6


def test_parquet_many_row_groups() -> None:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": np.arange(5000), "y": np.arange(5000) % 3}), buf, row_group_size=700)
    train_b, test_b, (n_train, n_test) = do_split("parquet", buf.getvalue(), stratify="y")
    ids = np.concatenate([pq.read_table(io.BytesIO(b))["id"].to_numpy() for b in (train_b, test_b)])
    assert sorted(ids.tolist()) == list(range(5000)) and (n_train, n_test) == (3750, 1250)


def test_npz_is_deterministic_zip_and_keeps_shapes_dtypes_and_compression() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((40, 3, 2)).astype(np.float32)
    labels = np.repeat(np.arange(4), 10).astype(np.int16)
    for compressed in (False, True):
        buf = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buf, images=images, labels=labels)
        train_b, _, (n_train, _) = do_split("npz", buf.getvalue(), stratify="labels", seed=3)
        with zipfile.ZipFile(io.BytesIO(train_b)) as zf:
            infos = zf.infolist()
            assert [i.filename for i in infos] == ["images.npy", "labels.npy"]
            assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
            method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
            assert {i.compress_type for i in infos} == {method}
        with np.load(io.BytesIO(train_b), allow_pickle=False) as npz:
            assert npz["images"].shape == (n_train, 3, 2) and npz["images"].dtype == np.float32
            assert npz["labels"].dtype == np.int16
            assert all(abs(c - n_train / 4) <= 1 for c in np.bincount(npz["labels"]))


# ---------------------------------------------------------------------------------------------------------
# sinks


class WriteOnly:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_only_sinks(fmt: str) -> None:
    data = encode(fmt, dataset())
    train, test = WriteOnly(), WriteOnly()
    counts = split(fmt, io.BytesIO(data), train, test, train_size=0.75, seed=0)
    assert (b"".join(train.parts), b"".join(test.parts), counts) == do_split(fmt, data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sink_errors_pass_through(fmt: str) -> None:
    class Full:
        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left") as info:
        split(fmt, io.BytesIO(encode(fmt, dataset())), Full(), WriteOnly(), train_size=0.5, seed=0)
    assert not isinstance(info.value, InvalidDataError)


# ---------------------------------------------------------------------------------------------------------
# validation


def field_error(fmt: str, data: bytes, **kw: Any) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        do_split(fmt, data, **kw)
    (detail,) = info.value.details
    return detail["field"], detail["message"]


@pytest.mark.parametrize("train_size", [0, 1, 1.5, -0.1, 0.0, 1.0, float("nan"), "0.5", True, None])
def test_train_size_must_be_strictly_between_0_and_1(train_size: Any) -> None:
    field, _ = field_error("csv", encode("csv", dataset()), train_size=train_size)
    assert field == "train_size"


def test_train_size_message() -> None:
    _, msg = field_error("csv", encode("csv", dataset()), train_size=1.5)
    assert msg == "must be strictly between 0 and 1, got 1.5"


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "1", True])
def test_seed_is_validated(seed: Any) -> None:
    assert field_error("csv", encode("csv", dataset()), seed=seed)[0] == "seed"


@pytest.mark.parametrize("fmt", FORMATS)
def test_stratify_column_must_exist(fmt: str) -> None:
    field, msg = field_error(fmt, encode(fmt, dataset()), stratify="foo")
    assert field == "stratify"
    assert msg == "column 'foo' is not in the dataset; columns are: id, x, label"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_class_needs_two_members(fmt: str) -> None:
    df = dataset(n=30)
    df.loc[7, "label"] = "lonely"
    field, msg = field_error(fmt, encode(fmt, df), stratify="label")
    assert field == "stratify" and "'lonely'" in msg and "only 1 row" in msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_both_parts_need_a_row(fmt: str) -> None:
    df = dataset(n=3)
    field, msg = field_error(fmt, encode(fmt, df), train_size=0.2)
    assert field == "train_size" and "train part empty" in msg
    field, msg = field_error(fmt, encode(fmt, dataset(n=1)), train_size=0.5)
    assert field == "train_size"


def test_stratified_parts_need_a_row_per_class() -> None:
    df = pd.DataFrame({"y": list("aabbccdd")})
    field, msg = field_error("csv", encode("csv", df), train_size=0.75, stratify="y")
    assert field == "train_size" and "4 rows" in msg


def test_npz_stratify_needs_a_1d_array() -> None:
    data = encode("npz", dataset())
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((10, 2)), y=np.arange(10) % 2)
    field, msg = field_error("npz", buf.getvalue(), stratify="x")
    assert field == "stratify" and "1-D" in msg
    assert do_split("npz", data, stratify="label")[2] == (90, 30)


def test_jsonl_stratify_needs_plain_values() -> None:
    data = b'{"y": [1]}\n{"y": [1]}\n{"y": 2}\n{"y": 2}\n'
    assert field_error("jsonl", data, stratify="y")[0] == "stratify"


def test_stratify_null_is_a_class() -> None:
    data = b'{"y": 1}\n{"y": 1}\n{"y": null}\n{}\n{"y": 1}\n{"y": 1}\n'
    assert do_split("jsonl", data, train_size=0.5, stratify="y")[2] == (3, 3)


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("csv", b""),
        ("csv", b"a,b\n"),
        ("csv", b"a,b\n1,2\n3,4,5\n"),
        ("csv", b"a,b\n1,2\n3,\xff\n"),
        ("jsonl", b'{"a": 1}\n{"a": 2\n'),
        ("jsonl", b""),
        ("parquet", b"nope"),
        ("npz", b"nope"),
    ],
)
def test_bad_inputs_are_invalid_data(fmt: str, data: bytes) -> None:
    with pytest.raises(InvalidDataError):
        do_split(fmt, data)


def test_unknown_format() -> None:
    from aicloud.errors import UnsupportedFormatError

    with pytest.raises(UnsupportedFormatError):
        do_split("xlsx", b"a,b\n1,2\n")


# ---------------------------------------------------------------------------------------------------------
# property: any CSV text survives a split, whatever its quoting and line endings


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.text(alphabet='ab ,"\n\r', max_size=8), min_size=2, max_size=40),
    crlf=st.booleans(),
    chunk=st.sampled_from([16, 64, 1 << 20]),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_csv_text_survives_a_split(texts: list[str], crlf: bool, chunk: int, seed: int) -> None:
    if not crlf:  # the writer quotes a field holding \r only when \r is part of its line terminator
        texts = [t.replace("\r", "") for t in texts]
    rows = [[str(i), t] for i, t in enumerate(texts)]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n" if crlf else "\n").writerows([["id", "text"], *rows])
    data = buf.getvalue().encode()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(csvfile, "CSV_CHUNK", chunk)
        train_b, test_b, (n_train, n_test) = do_split("csv", data, train_size=0.5, seed=seed)
    expected = list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
    got = []
    for part, n in ((train_b, n_train), (test_b, n_test)):
        parsed = list(csv.reader(io.StringIO(part.decode(), newline="")))
        assert parsed[0] == ["id", "text"] and len(parsed) - 1 == n
        got.extend(parsed[1:])
    assert sorted(got) == sorted(expected)

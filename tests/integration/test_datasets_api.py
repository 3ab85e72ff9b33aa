"""Datasets over real HTTP: versions, schema and stats, splits, byte-identical downloads."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aicloud import Client
from aicloud.errors import NotFoundError

from helpers import digits_csv, small_csv


def test_upload_records_schema_stats_and_sha(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    path = digits_csv(tmp_path / "digits.csv")
    ds = client.datasets.create(unique("digits"), path)
    frame = pd.read_csv(path)
    assert ds.version == 1 and ds.format == "csv"
    assert ds.num_rows == len(frame) == 1797
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [c["name"] for c in ds.schema] == list(frame.columns)
    assert ds.stats["label"]["distinct"] == 10
    assert ds.stats["label"]["min"] == 0 and ds.stats["label"]["max"] == 9
    assert ds.stats["pixel_0_2"]["mean"] == pytest.approx(frame["pixel_0_2"].mean())
    assert ds.stats["label"]["nulls"] == 0
    assert client.datasets.get(ds.name).id == ds.id


def test_each_upload_is_a_new_immutable_version(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    name = unique("ds")
    v1 = client.datasets.create(name, small_csv(tmp_path / "a.csv", rows=10))
    v2 = client.datasets.create(name, small_csv(tmp_path / "b.csv", rows=20))
    assert (v1.version, v2.version) == (1, 2)
    assert client.datasets.get(name, 1).num_rows == 10
    assert client.datasets.get(name).num_rows == 20
    assert [v.version for v in client.datasets.versions(name)] == [1, 2]
    summary = next(d for d in client.datasets.list() if d.name == name)
    assert summary.latest_version == 2 and summary.num_versions == 2


def test_download_is_byte_identical(client: Client, tmp_path: Path, unique: Callable[[str], str]) -> None:
    path = digits_csv(tmp_path / "digits.csv")
    ds = client.datasets.create(unique("digits"), path)
    out = ds.download(tmp_path / "back.csv")
    assert out.read_bytes() == path.read_bytes()
    folder = tmp_path / "dir"
    folder.mkdir()
    assert ds.download(folder).name == "digits.csv"


def _parquet(path: Path) -> Path:
    pd.DataFrame({"a": [1, 2, 3, None], "b": ["x", "y", "x", "z"]}).to_parquet(path)
    return path


def _npz(path: Path) -> Path:
    np.savez(path, X=np.arange(40, dtype=np.float32).reshape(10, 2, 2), y=np.arange(10) % 2)
    return path


def _jsonl(path: Path) -> Path:
    path.write_text("".join(json.dumps({"a": i, "b": f"s{i}"}) + "\n" for i in range(7)))
    return path


@pytest.mark.parametrize(
    ("maker", "fmt", "rows"), [(_parquet, "parquet", 4), (_npz, "npz", 10), (_jsonl, "jsonl", 7)]
)
def test_other_formats(
    client: Client,
    tmp_path: Path,
    unique: Callable[[str], str],
    maker: Callable[[Path], Path],
    fmt: str,
    rows: int,
) -> None:
    path = maker(tmp_path / f"data.{fmt}")
    ds = client.datasets.create(unique(fmt), path)
    assert (ds.format, ds.num_rows) == (fmt, rows)
    assert ds.download(tmp_path / "back").read_bytes() == path.read_bytes()
    if fmt == "npz":
        with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as z:
            assert {c["name"] for c in ds.schema} == {n.removesuffix(".npy") for n in z.namelist()}
    if fmt == "parquet":
        assert ds.stats["a"]["nulls"] == 1


def test_split_is_stratified_deterministic_and_has_lineage(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    ds = client.datasets.create(unique("digits"), digits_csv(tmp_path / "d.csv"))
    train, test = ds.split(train_size=0.8, seed=0, stratify="label")
    assert train.num_rows + test.num_rows == ds.num_rows
    assert test.num_rows == pytest.approx(0.2 * ds.num_rows, abs=1)
    assert train.name == f"{ds.name}-train" and test.name == f"{ds.name}-test"
    for part, v in (("train", train), ("test", test)):
        assert v.lineage["parent"] == {"id": ds.id, "name": ds.name, "version": ds.version}
        assert v.lineage["part"] == part and v.lineage["params"]["stratify"] == "label"
    train2, test2 = ds.split(train_size=0.8, seed=0, stratify="label")
    assert (train2.sha256, test2.sha256) == (train.sha256, test.sha256)
    assert train2.version == train.version + 1
    train3, _ = ds.split(train_size=0.8, seed=1, stratify="label")
    assert train3.sha256 != train.sha256
    full = pd.read_csv(tmp_path / "d.csv")["label"].value_counts(normalize=True).sort_index()
    tr = pd.read_csv(train.download(tmp_path / "tr.csv"))
    te = pd.read_csv(test.download(tmp_path / "te.csv"))
    assert (tr["label"].value_counts(normalize=True).sort_index() - full).abs().max() < 0.01
    merged = pd.concat([tr, te]).sort_values(list(tr.columns)).reset_index(drop=True)
    original = pd.read_csv(tmp_path / "d.csv").sort_values(list(tr.columns)).reset_index(drop=True)
    pd.testing.assert_frame_equal(merged, original)


def test_missing_dataset_and_version_raise_not_found(client: Client, unique: Callable[[str], str]) -> None:
    with pytest.raises(NotFoundError):
        client.datasets.get(unique("nothing"))
    with pytest.raises(NotFoundError):
        client.datasets.versions(unique("nothing"))


def test_delete_dataset(client: Client, tmp_path: Path, unique: Callable[[str], str]) -> None:
    name = unique("gone")
    client.datasets.create(name, small_csv(tmp_path / "a.csv"))
    client.datasets.delete(name)
    with pytest.raises(NotFoundError):
        client.datasets.get(name)


def test_secrets_are_never_returned(
    client: Client, server_home_text: Callable[[], bytes], unique: Callable[[str], str]
) -> None:
    name = unique("S").replace("-", "_")
    value = "sk-" + unique("supersecretvalue")
    client.secrets.create(name, value)
    assert name in {s.name for s in client.secrets.list()}
    listed = client._transport.request("GET", "/api/v1/secrets").text
    assert value not in listed
    assert value.encode() not in server_home_text()
    client.secrets.delete(name)
    assert name not in {s.name for s in client.secrets.list()}


@pytest.fixture
def server_home_text(server) -> Callable[[], bytes]:  # type: ignore[no-untyped-def]
    def read() -> bytes:
        out = bytearray()
        for p in server.home.rglob("*"):
            if p.is_file():
                out += p.read_bytes()
        return bytes(out)

    return read

"""Bad input gets a clear 4xx in the error shape, creates no version, and leaves the server healthy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from aicloud import Client
from aicloud.errors import InvalidDataError, UnsupportedFormatError, ValidationError
from aicloud.testing.server import ServerProcess

from helpers import assert_error, digits_csv, small_csv


def _upload(
    http: httpx.Client, name: str, content: bytes, filename: str, fmt: str | None = None
) -> httpx.Response:
    data = {"format": fmt} if fmt else {}
    return http.post(f"/api/v1/datasets/{name}/versions", files={"file": (filename, content)}, data=data)


def _no_versions(http: httpx.Client, name: str) -> None:
    assert_error(http.get(f"/api/v1/datasets/{name}/versions"), 404, "not_found")
    assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("content", "filename", "fmt", "code"),
    [
        (b"a,b,c\n1,2,3\n4,5\n6,7,8,9\n", "ragged.csv", None, "invalid_data"),
        (b"", "empty.csv", None, "invalid_data"),
        (b"a,b,c\n", "header-only.csv", None, "invalid_data"),
        (b"\x00\xff\xfe\x01" * 100, "garbage.csv", None, "invalid_data"),
        (b"hello", "data.xlsx", None, "unsupported_format"),
        (b"a,b\n1,2\n", "data.csv", "excel", "unsupported_format"),
        (b"not parquet at all", "x.parquet", None, "invalid_data"),
        (b'{"a": 1}\n{"a": \n', "bad.jsonl", None, "invalid_data"),
        (b"PK\x03\x04broken zip", "broken.npz", None, "invalid_data"),
    ],
    ids=[
        "ragged-csv",
        "empty",
        "header-only",
        "binary-garbage",
        "unknown-ext",
        "unknown-format",
        "fake-parquet",
        "bad-jsonl",
        "broken-npz",
    ],
)
def test_malformed_files(
    http: httpx.Client,
    unique: Callable[[str], str],
    content: bytes,
    filename: str,
    fmt: str | None,
    code: str,
) -> None:
    name = unique("bad")
    err = assert_error(_upload(http, name, content, filename, fmt), 400, code)
    assert len(err["message"]) > 10
    _no_versions(http, name)


def test_sdk_raises_typed_errors(client: Client, tmp_path: Path, unique: Callable[[str], str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,b\n1,2,3\n")
    with pytest.raises(InvalidDataError):
        client.datasets.create(unique("bad"), bad)
    other = tmp_path / "x.bin"
    other.write_bytes(b"\x01\x02")
    with pytest.raises(UnsupportedFormatError) as info:
        client.datasets.create(unique("bad"), other)
    assert "csv" in info.value.message


@pytest.mark.parametrize(
    "name",
    ["..", "a..b", "-lead", ".hidden", "a b", "x" * 101, "%2e%2e", "%2e%2e%2fetc", "a%2fb"],
)
def test_bad_names_are_refused(http: httpx.Client, name: str) -> None:
    r = _upload(http, name, b"a,b\n1,2\n", "ok.csv")
    assert 400 <= r.status_code < 500
    assert_error(r, r.status_code)
    assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/datasets/../../etc/passwd/versions",
        "/api/v1/datasets/%2e%2e/versions/1",
        "/api/v1/datasets/%2Fetc%2Fpasswd/versions/latest/content",
        "/api/v1/datasets//etc/passwd/versions/1",
        "/api/v1/datasets/ok/versions/..%2F..%2Fx",
        "/api/v1/datasets/ok/versions/-1",
        "/api/v1/secrets/..%2F..",
    ],
)
def test_path_tricks_in_reads(server: ServerProcess, path: str) -> None:
    raw = httpx.URL(server.url + path)  # httpx keeps %2e and %2f as sent
    with httpx.Client(headers={"Authorization": f"Bearer {server.token}"}) as c:
        r = c.get(raw)
    assert r.status_code in (404, 422), (path, r.status_code, r.text)
    assert_error(r, r.status_code)


def test_split_bad_parameters(
    client: Client, http: httpx.Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    ds = client.datasets.create(unique("digits"), digits_csv(tmp_path / "d.csv"))
    with pytest.raises(ValidationError) as info:
        ds.split(stratify="no_such_column")
    assert "no_such_column" in info.value.message
    for size in (0, 1, 1.5, -0.1):
        err = assert_error(
            http.post(f"/api/v1/datasets/{ds.name}/versions/1/split", json={"train_size": size}),
            422,
            "validation_error",
        )
        assert err["details"][0]["field"] == "train_size"
    assert_error(
        http.post(
            f"/api/v1/datasets/{ds.name}/versions/1/split",
            content=b"[",
            headers={"Content-Type": "application/json"},
        ),
        422,
    )
    assert_error(http.get(f"/api/v1/datasets/{ds.name}-train/versions"), 404)


def test_upload_without_file_part_and_bad_multipart(http: httpx.Client, unique: Callable[[str], str]) -> None:
    name = unique("nofile")
    assert_error(
        http.post(
            f"/api/v1/datasets/{name}/versions", data={"format": "csv"}, files={"other": ("a.csv", b"a\n1\n")}
        ),
        400,
        "bad_request",
    )
    r = http.post(
        f"/api/v1/datasets/{name}/versions",
        content=b"--zzz\r\ngarbage",
        headers={"Content-Type": "multipart/form-data; boundary=zzz"},
    )
    assert_error(r, 400)
    _no_versions(http, name)


def test_raw_body_upload(http: httpx.Client, tmp_path: Path, unique: Callable[[str], str]) -> None:
    name = unique("raw")
    body = small_csv(tmp_path / "s.csv").read_bytes()
    r = http.post(
        f"/api/v1/datasets/{name}/versions",
        params={"filename": "s.csv"},
        content=body,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["num_rows"] == 50


def test_oversized_upload_is_413(make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    srv = make_server(env={"AICLOUD_MAX_UPLOAD_BYTES": "100000"})
    headers = {"Authorization": f"Bearer {srv.token}"}
    big = b"a,b\n" + b"1,2\n" * 50_000
    r = httpx.post(
        f"{srv.url}/api/v1/datasets/big/versions", files={"file": ("big.csv", big)}, headers=headers
    )
    assert_error(r, 413, "payload_too_large")

    def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: the limit holds while streaming
        yield b"a,b\n"
        for _ in range(100):
            yield b"1,2\n" * 1000

    r = httpx.post(
        f"{srv.url}/api/v1/datasets/big/versions",
        params={"filename": "big.csv"},
        content=chunks(),
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert_error(r, 413, "payload_too_large")
    assert_error(httpx.get(f"{srv.url}/api/v1/datasets/big/versions", headers=headers), 404)
    ok = httpx.post(
        f"{srv.url}/api/v1/datasets/big/versions", files={"file": ("s.csv", b"a,b\n1,2\n")}, headers=headers
    )
    assert ok.status_code == 201
    leftovers = list((srv.home / "blobs" / "tmp").iterdir())
    assert leftovers == []

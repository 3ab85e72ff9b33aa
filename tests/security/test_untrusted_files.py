"""Hostile dataset files (issue #17): they are parsed in a bounded worker process, so a parser crash or a
bomb costs one request (a 4xx naming the limit), never the control plane; a truncated multipart body is
refused instead of being stored as a complete version."""

from __future__ import annotations

import gzip
import io
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aicloud.data.limits import DepthGuard, ParseLimits, line_depths
from aicloud.errors import PayloadTooLargeError
from aicloud.testing.server import ServerProcess

from helpers import assert_error

NESTED_JSONL = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"  # the probe's file: pyarrow segfaults


def _upload(http: httpx.Client, name: str, content: bytes, filename: str) -> httpx.Response:
    return http.post(f"/api/v1/datasets/{name}/versions", files={"file": (filename, content)})


def _stored_blobs(server: ServerProcess) -> set[Path]:
    root = server.home / "blobs"
    return {p for p in root.rglob("*") if p.is_file() and "tmp" not in p.relative_to(root).parts}


def _still_serving(http: httpx.Client, name: str) -> None:
    """No version was made; the server answers and still takes a normal upload."""
    assert_error(http.get(f"/api/v1/datasets/{name}/versions"), 404, "not_found")
    assert http.get("/healthz").status_code == 200
    ok = _upload(http, f"{name}-after", b"x,y\n1,2\n3,4\n", "ok.csv")
    assert ok.status_code == 201, ok.text
    assert ok.json()["num_rows"] == 2


def test_deeply_nested_json_lines_is_refused_naming_the_limit(
    http: httpx.Client, server: ServerProcess
) -> None:
    name = f"nested-{uuid.uuid4().hex[:8]}"
    before = _stored_blobs(server)
    err = assert_error(_upload(http, name, NESTED_JSONL, "deep.jsonl"), 413, "payload_too_large")
    assert "AICLOUD_PARSE_MAX_DEPTH" in err["message"] and "line 1" in err["message"]
    assert err["details"]["limit"] == "AICLOUD_PARSE_MAX_DEPTH"
    assert _stored_blobs(server) == before
    _still_serving(http, name)


def test_a_parser_crash_costs_one_request_not_the_server(make_server: Callable[..., ServerProcess]) -> None:
    """With the depth check out of the way (a huge limit) pyarrow still segfaults on the file, but in the
    worker process: the request gets a 400 that says so, and the control plane goes on serving."""
    srv = make_server(env={"AICLOUD_PARSE_MAX_DEPTH": "1000000"})
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=60) as http:
        err = assert_error(_upload(http, "crash", NESTED_JSONL, "deep.jsonl"), 400, "invalid_data")
        assert "crashed" in err["message"] and err["details"]["signal"] == "SIGSEGV"
        _still_serving(http, "crash")
        assert srv.alive()


def test_npz_decompression_bomb_is_refused(http: httpx.Client) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.zeros(100_000_000, dtype=np.float32))  # 400 MB in about 390 KB
    assert len(buf.getvalue()) < 1_000_000
    name = f"npzbomb-{uuid.uuid4().hex[:8]}"
    err = assert_error(_upload(http, name, buf.getvalue(), "bomb.npz"), 413, "payload_too_large")
    assert "AICLOUD_PARSE_MAX_EXPANSION_RATIO" in err["message"]
    assert err["details"]["expanded_bytes"] > 400_000_000
    _still_serving(http, name)


def test_npz_header_claiming_more_than_its_member_holds_is_refused(http: httpx.Client) -> None:
    npy = io.BytesIO()
    header = {"descr": "<i8", "fortran_order": False, "shape": (10**12,)}  # 8 TB
    np.lib.format.write_array_header_1_0(npy, header)
    npy.write(np.arange(10, dtype="<i8").tobytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", npy.getvalue())
    name = f"npzlie-{uuid.uuid4().hex[:8]}"
    err = assert_error(_upload(http, name, buf.getvalue(), "lie.npz"), 400, "invalid_data")
    assert "more than its member holds" in err["message"]
    _still_serving(http, name)


def test_gzip_parquet_bomb_is_refused(http: httpx.Client) -> None:
    """gzip reaches the parsers only inside Parquet (a .gz upload is no dataset format, see below)."""
    buf = io.BytesIO()
    table = pa.table({"s": ["a" * 1000] * 100_000})  # 100 MB of text in about 300 KB
    pq.write_table(table, buf, compression="gzip", use_dictionary=False)
    name = f"pqbomb-{uuid.uuid4().hex[:8]}"
    err = assert_error(_upload(http, name, buf.getvalue(), "bomb.parquet"), 413, "payload_too_large")
    assert "AICLOUD_PARSE_MAX_EXPANSION_RATIO" in err["message"]
    _still_serving(http, name)


def test_gzip_files_are_never_decompressed(http: httpx.Client) -> None:
    bomb = gzip.compress(b"a,b\n" + b"1,2\n" * 10_000_000)  # 40 MB of CSV
    name = f"gz-{uuid.uuid4().hex[:8]}"
    assert_error(_upload(http, name, bomb, "data.csv.gz"), 400, "unsupported_format")
    assert_error(_upload(http, name, bomb, "data.csv"), 400, "invalid_data")
    _still_serving(http, name)


@pytest.mark.parametrize(
    "ending", [b"", b"\r\n", b"\r\n--BOUNDARY"], ids=["no-boundary", "crlf", "no-dashes"]
)
def test_truncated_multipart_is_refused_and_stores_nothing(
    http: httpx.Client, server: ServerProcess, ending: bytes
) -> None:
    name = f"truncated-{uuid.uuid4().hex[:8]}"
    body = (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="t.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\na,b\n1,2\n3,4\n" + ending
    )
    before = _stored_blobs(server)
    response = http.post(
        f"/api/v1/datasets/{name}/versions",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=BOUNDARY"},
    )
    err = assert_error(response, 400, "bad_request")
    assert "closing boundary" in err["message"]
    assert _stored_blobs(server) == before
    _still_serving(http, name)


def test_complete_multipart_with_the_same_content_is_stored(http: httpx.Client) -> None:
    name = f"complete-{uuid.uuid4().hex[:8]}"
    body = (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="t.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\na,b\n1,2\n3,4\n\r\n--BOUNDARY--\r\n"
    )
    response = http.post(
        f"/api/v1/datasets/{name}/versions",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=BOUNDARY"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["num_rows"] == 2


def test_depth_guard_sees_a_deep_line_however_the_reads_cut_it() -> None:
    limits = ParseLimits(max_depth=8)
    text = b'{"a":1}\n{"s":"[[[[[[[[[[[[[[["}\n\n{"b":[[[[[[[[[1]]]]]]]]]}\n'
    assert line_depths(text).tolist() == [1, 1, 0, 10]
    for cut in range(1, 17):
        guard = DepthGuard(limits)
        with pytest.raises(PayloadTooLargeError, match="line 4 nests") as info:
            for start in range(0, len(text), cut):
                guard.feed(text[start : start + cut])
            guard.feed(b"")
        assert info.value.details["limit"] == "AICLOUD_PARSE_MAX_DEPTH"
    guard = DepthGuard(ParseLimits(max_depth=10))
    for start in range(0, len(text), 5):
        guard.feed(text[start : start + 5])
    guard.feed(b"")

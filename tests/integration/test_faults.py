"""Crashes, concurrency, encryption at rest and memory, against real server processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from aicloud import Client
from aicloud.errors import NotFoundError
from aicloud.testing.server import ServerProcess

from helpers import assert_error, digits_csv, small_csv

MARKER = b"PLAINTEXT-MARKER-7f3a9c"


def _all_bytes_under(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_kill_9_during_upload_leaves_no_version(make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server()
    killed = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"a,b\n"
        for i in range(10_000):
            if i == 50:
                srv.kill()
                killed.set()
            yield b"1,2\n" * 2000
            time.sleep(0.001)

    with pytest.raises(httpx.HTTPError):
        httpx.post(
            f"{srv.url}/api/v1/datasets/crashy/versions",
            params={"filename": "c.csv"},
            content=slow_body(),
            headers={"Authorization": f"Bearer {srv.token}", "Content-Type": "text/csv"},
            timeout=30,
        )
    assert killed.is_set() and not srv.alive()
    srv.start()
    with Client(url=srv.url, token=srv.token) as c:
        with pytest.raises(NotFoundError):
            c.datasets.versions("crashy")
        assert c.datasets.list() == []
    tmp_files = list((srv.home / "blobs" / "tmp").iterdir())
    assert tmp_files == []


def test_twenty_concurrent_uploads_make_twenty_versions(
    client: Client, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    name = unique("concurrent")
    files = [small_csv(tmp_path / f"f{i}.csv", rows=10 + i) for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda p: client.datasets.create(name, p), files))
    assert sorted(v.version for v in results) == list(range(1, 21))
    assert {v.num_rows for v in results} == {10 + i for i in range(20)}
    assert len(client.datasets.versions(name)) == 20


def test_plaintext_never_under_home(
    client: Client, server: ServerProcess, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    path = tmp_path / "marked.csv"
    path.write_bytes(b"text,n\n" + b"".join(MARKER + f"-{i},{i}\n".encode() for i in range(2000)))
    ds = client.datasets.create(unique("marked"), path)
    train, _ = ds.split(train_size=0.5, seed=0)
    assert train.num_rows == 1000
    everything = _all_bytes_under(server.home)
    assert MARKER not in everything
    assert path.read_bytes()[100:132] not in everything


def test_tampered_object_is_refused_and_rotation_keeps_old_objects(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    srv = make_server()
    with Client(url=srv.url, token=srv.token) as c:
        original = digits_csv(tmp_path / "d.csv")
        before = c.datasets.create("before", original)
        c.secrets.create("API_KEY", "value-1")
        rotated = c.admin.rotate_key()
        assert rotated.blobs_rewrapped >= 1 and rotated.secrets_rewrapped == 1
        assert before.download(tmp_path / "b.csv").read_bytes() == original.read_bytes()
        after = c.datasets.create("after", small_csv(tmp_path / "s.csv"))
        assert after.download(tmp_path / "a.csv").read_bytes() == (tmp_path / "s.csv").read_bytes()
        data_files = sorted(
            p for p in (srv.home / "blobs").rglob("*") if p.is_file() and p.stat().st_size > 50_000
        )
        assert data_files, "the digits object should be on disk"
        victim = data_files[0]
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        victim.write_bytes(bytes(raw))
        r = httpx.get(
            f"{srv.url}/api/v1/datasets/before/versions/1/content",
            headers={"Authorization": f"Bearer {srv.token}"},
        )
        if r.status_code == 200:  # damage past the first chunk: the stream is cut, never completed
            pytest.fail("a tampered object was served in full")
        err = assert_error(r, 500, "data_corrupted")
        assert "integrity" in err["message"]
        assert c.health()["status"] == "ok"


def test_key_file_is_private(server: ServerProcess) -> None:
    key = server.home / "master.key"
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600


def _rss_kb(pid: int, field: str) -> int:
    # VmHWM (peak RSS) is only in /proc: psutil has the current RSS, not its peak
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def _csv_of_size(path: Path, size: int) -> tuple[Path, int]:
    """A CSV file of at least ``size`` bytes, and its number of rows."""
    block = b"".join(f"{i},{i * 0.5},{i % 7}\n".encode() for i in range(40_000))
    rows = 0
    with open(path, "wb") as f:
        f.write(b"a,b,c\n")
        while f.tell() < size:
            f.write(block)
            rows += 40_000
    return path, rows


@pytest.mark.serial  # peak server memory against fixed MB margins; writes 1.1 GB: run alone
def test_one_gigabyte_upload_is_streamed(make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """Streaming means the memory an upload needs does not grow with its size: a 1 GB upload may
    not need more than a 128 MB one. The 128 MB upload also takes the fixed costs (the profiler's
    chunk buffers, pyarrow's threads and allocator caches, about 90 MB here) out of the comparison."""
    srv = make_server()
    assert srv.proc is not None
    medium, _ = _csv_of_size(tmp_path / "medium.csv", 128 * 1024**2)
    path, rows = _csv_of_size(tmp_path / "big.csv", 1024**3)
    with Client(url=srv.url, token=srv.token) as c:
        c.datasets.create("warm", small_csv(tmp_path / "s.csv"))
        base = _rss_kb(srv.proc.pid, "VmRSS")
        c.datasets.create("medium", medium)
        fixed = _rss_kb(srv.proc.pid, "VmHWM")
        ds = c.datasets.create("big", path)
        peak = _rss_kb(srv.proc.pid, "VmHWM")
        settled = _rss_kb(srv.proc.pid, "VmRSS")
        assert ds.size_bytes == path.stat().st_size
        assert ds.num_rows == rows
    fixed_mb, growth_mb = (fixed - base) / 1024, (peak - fixed) / 1024
    assert growth_mb < 48, f"a 1 GB upload needed {growth_mb:.0f} MB more server memory than a 128 MB one"
    assert fixed_mb < 200, f"the server's memory grew by {fixed_mb:.0f} MB for a 128 MB upload"
    # pyarrow's cached pages go back to the system once a request is done (data.release_memory)
    settled_mb = (settled - base) / 1024
    assert settled_mb < 55, f"the server kept {settled_mb:.0f} MB after the uploads were done"

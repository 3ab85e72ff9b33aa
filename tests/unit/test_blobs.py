"""The blob stores: the encrypted local folder store and the in-memory fake."""

from __future__ import annotations

import base64
import gc
import hashlib
import io
import json
import os
import random
import stat
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicloud.blobs import BlobStore, open_blob_store
from aicloud.blobs.base import check_digest
from aicloud.blobs.local import LocalBlobStore, open_local_store
from aicloud.errors import BadRequestError, DataCorruptedError, NotFoundError
from aicloud.testing.blobs import InMemoryBlobStore

CHUNK = 64  # tiny chunks so multi-chunk cases stay small
HEADER = 20
TAG = 16


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_local(tmp: Path, master_key: str | None = None) -> LocalBlobStore:
    return open_local_store(f"file://{tmp / 'blobs'}", master_key=master_key, home=str(tmp), chunk_size=CHUNK)


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return make_local(tmp_path)


@pytest.fixture(params=["local", "memory"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    return make_local(tmp_path) if request.param == "local" else InMemoryBlobStore()


def data_file(store: LocalBlobStore, digest: str) -> Path:
    return store.root / "objects" / digest[:2] / f"{digest}.data"


def key_file(store: LocalBlobStore, digest: str) -> Path:
    return store.root / "objects" / digest[:2] / f"{digest}.key"


def tmp_files(store: LocalBlobStore) -> list[str]:
    return os.listdir(store.root / "tmp")


def corrupt_message(digest: str) -> str:
    return f"stored object {digest} failed its integrity check"


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 5 * CHUNK + 7, 1000])
def test_round_trip_sizes(any_store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    info = any_store.put_bytes(data)
    assert (info.digest, info.size) == (sha(data), size)
    assert any_store.exists(info.digest)
    assert any_store.size(info.digest) == size
    assert any_store.read_bytes(info.digest) == data
    assert b"".join(any_store.iter_chunks(info.digest, 50)) == data
    assert any_store.verify(info.digest) == info


def test_default_chunk_size_round_trip_through_open_blob_store(tmp_path: Path) -> None:
    blobs = open_blob_store(f"file://{tmp_path / 'blobs'}", home=str(tmp_path))
    data = os.urandom(3 * 1024 * 1024 + 17)
    with blobs.writer() as w:
        for i in range(0, len(data), 700_001):  # odd piece sizes straddle chunk borders
            w.write(data[i : i + 700_001])
        assert w.bytes_written == len(data)
        info = w.commit()
    assert info.digest == sha(data)
    assert blobs.read_bytes(info.digest) == data
    with blobs.open(info.digest) as f:
        f.seek(1024 * 1024 - 3)
        assert f.read(10) == data[1024 * 1024 - 3 : 1024 * 1024 + 7]


def test_a_mutable_buffer_may_be_reused_as_soon_as_write_returns(tmp_path: Path) -> None:
    blobs = open_local_store(str(tmp_path / "blobs"), home=str(tmp_path))  # default 1 MiB chunks
    data = os.urandom(3 * 1024 * 1024)
    buf = bytearray(2 * 1024 * 1024)
    with blobs.writer() as w:
        for i in range(0, len(data), len(buf)):
            piece = data[i : i + len(buf)]
            buf[: len(piece)] = piece
            w.write(memoryview(buf)[: len(piece)])
            buf[:] = bytes(len(buf))  # scribble over it straight away
        info = w.commit()
    assert info.digest == sha(data)
    assert blobs.read_bytes(info.digest) == data


def test_sequential_read_ahead_and_jumps_with_real_chunk_sizes(tmp_path: Path) -> None:
    blobs = open_local_store(str(tmp_path / "blobs"), home=str(tmp_path))
    mib = 1024 * 1024
    data = os.urandom(6 * mib + 123)
    digest = blobs.put_bytes(data).digest
    with blobs.open(digest) as f:
        assert f.read(mib) == data[:mib]
        assert f.read(mib) == data[mib : 2 * mib]  # sequential: chunk 2 is decrypted ahead
        f.seek(5 * mib + 7)  # jump away while the read-ahead is pending
        assert f.read(100) == data[5 * mib + 7 : 5 * mib + 107]
        f.seek(0)
        buf = bytearray(mib)
        for i in range(6):
            assert f.readinto(buf) == mib  # type: ignore[attr-defined]
            assert buf == data[i * mib : (i + 1) * mib]
        assert f.read() == data[6 * mib :]
    # a corrupt chunk that was only read ahead, never asked for, raises nothing
    path = data_file(blobs, digest)
    _flip(path, HEADER + 2 * (mib + TAG) + 5)
    with blobs.open(digest) as f:
        assert f.read(mib) == data[:mib]
        assert f.read(mib) == data[mib : 2 * mib]
        with pytest.raises(DataCorruptedError, match=corrupt_message(digest)):
            f.read(mib)


def test_writes_of_any_piece_size_and_buffer_type(any_store: BlobStore) -> None:
    data = os.urandom(10 * CHUNK + 5)
    rng = random.Random(7)
    with any_store.writer() as w:
        pos = 0
        while pos < len(data):
            n = rng.choice([0, 1, 3, CHUNK - 1, CHUNK, 2 * CHUNK + 1])
            piece = data[pos : pos + n]
            w.write(rng.choice([bytes, bytearray, memoryview])(piece))
            pos += n
        info = w.commit()
    assert info.digest == sha(data)
    assert any_store.read_bytes(info.digest) == data


def test_identical_content_is_stored_once(any_store: BlobStore) -> None:
    first = any_store.put_bytes(b"same bytes" * 30)
    second = any_store.put_bytes(b"same bytes" * 30)
    assert first == second
    assert list(any_store.digests()) == [first.digest]
    if isinstance(any_store, LocalBlobStore):
        names = sorted(os.listdir(data_file(any_store, first.digest).parent))
        assert names == [f"{first.digest}.data", f"{first.digest}.key"]
        assert tmp_files(any_store) == []


def test_concurrent_identical_writes_leave_one_consistent_object(store: LocalBlobStore) -> None:
    data = os.urandom(7 * CHUNK + 3)
    results = []

    def put() -> None:
        results.append(store.put_bytes(data))

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.digest for r in results} == {sha(data)}
    assert store.read_bytes(sha(data)) == data
    assert tmp_files(store) == []


def test_digests_delete_and_missing_objects(any_store: BlobStore) -> None:
    infos = [any_store.put_bytes(bytes([i]) * 10) for i in range(5)]
    assert list(any_store.digests()) == sorted(i.digest for i in infos)
    any_store.delete(infos[0].digest)
    any_store.delete(infos[0].digest)  # idempotent
    assert not any_store.exists(infos[0].digest)
    assert infos[0].digest not in list(any_store.digests())
    for call in (any_store.open, any_store.size, any_store.read_bytes):
        with pytest.raises(NotFoundError):
            call(infos[0].digest)


@pytest.mark.parametrize(
    "bad", ["../etc/passwd", "A" * 64, "a" * 63, "", "a" * 65, "../" + "a" * 61, "g" * 64, "ab/" + "c" * 61]
)
def test_digests_are_checked_before_any_path_is_built(any_store: BlobStore, bad: str) -> None:
    with pytest.raises(NotFoundError):
        check_digest(bad)
    for call in (any_store.open, any_store.size, any_store.exists, any_store.delete):
        with pytest.raises(NotFoundError):
            call(bad)


# -- writer lifecycle --------------------------------------------------------------------------


def test_abort_leaves_nothing(any_store: BlobStore) -> None:
    w = any_store.writer()
    w.write(b"x" * (3 * CHUNK))
    w.abort()
    w.abort()  # twice is fine
    with pytest.raises(ValueError):
        w.write(b"more")
    with pytest.raises(ValueError):
        w.commit()
    assert list(any_store.digests()) == []
    if isinstance(any_store, LocalBlobStore):
        assert tmp_files(any_store) == []


def test_an_exception_inside_the_writer_context_aborts(any_store: BlobStore) -> None:
    with pytest.raises(RuntimeError), any_store.writer() as w:
        w.write(b"partial")
        raise RuntimeError("upload failed")
    assert list(any_store.digests()) == []
    if isinstance(any_store, LocalBlobStore):
        assert tmp_files(any_store) == []


def test_commit_is_idempotent_and_abort_after_commit_is_a_no_op(any_store: BlobStore) -> None:
    w = any_store.writer()
    w.write(b"abc")
    info = w.commit()
    assert w.commit() == info
    w.abort()
    assert any_store.read_bytes(info.digest) == b"abc"


def test_a_dropped_writer_removes_its_temp_file(store: LocalBlobStore) -> None:
    w = store.writer()
    w.write(b"y" * 100)
    assert len(tmp_files(store)) == 1
    del w
    gc.collect()
    assert tmp_files(store) == []


def test_stale_temp_files_are_removed_at_open_but_live_ones_are_kept(tmp_path: Path) -> None:
    store = make_local(tmp_path)
    stale = store.root / "tmp" / "0123.part"
    stale.write_bytes(b"left by a crash")
    live = store.writer()
    live.write(b"z" * 100)
    reopened = make_local(tmp_path)
    assert not stale.exists()
    assert len(tmp_files(reopened)) == 1  # the live writer holds its file locked
    info = live.commit()
    assert reopened.read_bytes(info.digest) == b"z" * 100


# -- random access -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_object(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalBlobStore, str, bytes]:
    store = make_local(tmp_path_factory.mktemp("seek"))
    data = os.urandom(20 * CHUNK + 13)
    return store, store.put_bytes(data).digest, data


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 20 * CHUNK + 40), st.integers(-1, 3 * CHUNK)), max_size=8))
def test_seek_and_read_match_the_plaintext(
    big_object: tuple[LocalBlobStore, str, bytes], ops: list[tuple[int, int]]
) -> None:
    store, digest, data = big_object
    with store.open(digest) as f:
        for pos, n in ops:
            assert f.seek(pos) == pos
            expected = data[pos:] if n < 0 else data[pos : pos + n]
            assert f.read(n) == expected
            assert f.tell() == pos + len(expected)


@settings(max_examples=100, deadline=None)
@given(pos=st.integers(0, 20 * CHUNK + 20), n=st.integers(0, 5 * CHUNK))
def test_readinto_matches_the_plaintext(
    big_object: tuple[LocalBlobStore, str, bytes], pos: int, n: int
) -> None:
    store, digest, data = big_object
    with store.open(digest) as f:
        f.seek(pos)
        buf = bytearray(n)
        got = f.readinto(buf)  # type: ignore[attr-defined]
        assert bytes(buf[:got]) == data[pos : pos + n]


def test_file_object_protocol(any_store: BlobStore) -> None:
    data = os.urandom(3 * CHUNK + 5)
    digest = any_store.put_bytes(data).digest
    f = any_store.open(digest)
    assert f.readable() and f.seekable() and not f.writable()
    assert f.seek(-5, io.SEEK_END) == len(data) - 5
    assert f.read() == data[-5:]
    assert f.read() == b""
    f.seek(10)
    assert f.seek(5, io.SEEK_CUR) == 15
    assert f.read(3) == data[15:18]
    f.seek(len(data) + 100)
    assert f.read(10) == b""
    with pytest.raises(ValueError):
        f.seek(-1)
    with pytest.raises((OSError, ValueError)):
        f.write(b"no")
    f.close()
    assert f.closed
    with pytest.raises(ValueError):
        f.read()


def test_readers_such_as_zipfile_and_pyarrow_work_on_an_open_blob(store: LocalBlobStore) -> None:
    np = pytest.importorskip("numpy")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    arrays = {"x": np.arange(1000, dtype=np.float32), "y": np.ones((10, 7))}
    npz = io.BytesIO()
    np.savez(npz, **arrays)
    digest = store.put_bytes(npz.getvalue()).digest
    with store.open(digest) as f, np.load(f) as loaded:
        assert set(loaded.files) == {"x", "y"}
        assert (loaded["x"] == arrays["x"]).all()
    with store.open(digest) as f, zipfile.ZipFile(f) as zf:
        assert zf.testzip() is None

    parquet = io.BytesIO()
    pq.write_table(pa.table({"a": list(range(5000)), "b": [str(i) for i in range(5000)]}), parquet)
    digest = store.put_bytes(parquet.getvalue()).digest
    with store.open(digest) as f:
        table = pq.read_table(f)
    assert table.num_rows == 5000 and table.column("a")[4999].as_py() == 4999


# -- tampering ---------------------------------------------------------------------------------


def _stored(store: LocalBlobStore, size: int = 5 * CHUNK + 9) -> tuple[str, bytes]:
    data = os.urandom(size)
    return store.put_bytes(data).digest, data


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x20
    path.write_bytes(bytes(raw))


def _assert_corrupted(store: LocalBlobStore, digest: str) -> None:
    with pytest.raises(DataCorruptedError, match=corrupt_message(digest)):
        store.read_bytes(digest)


@pytest.mark.parametrize(
    "offset",
    [
        0,
        5,
        12,
        HEADER - 1,
        HEADER,
        HEADER + CHUNK - 1,
        HEADER + CHUNK + TAG - 1,
        HEADER + 2 * (CHUNK + TAG) + 3,
        -1,
    ],
    ids=["magic", "format", "chunk-size", "nonce", "chunk0", "chunk0-end", "tag0", "chunk2", "last-tag"],
)
def test_a_flipped_data_byte_is_detected(store: LocalBlobStore, offset: int) -> None:
    digest, _ = _stored(store)
    path = data_file(store, digest)
    _flip(path, offset if offset >= 0 else path.stat().st_size + offset)
    _assert_corrupted(store, digest)


def test_corruption_is_raised_even_for_a_partial_read(store: LocalBlobStore) -> None:
    digest, data = _stored(store)
    _flip(data_file(store, digest), HEADER + 2 * (CHUNK + TAG) + 3)
    with store.open(digest) as f:
        assert f.read(CHUNK) == data[:CHUNK]  # untouched chunks read fine
        with pytest.raises(DataCorruptedError, match=corrupt_message(digest)):
            f.read(2 * CHUNK)


@pytest.mark.parametrize("size", [0, CHUNK, 3 * CHUNK + 1])
def test_truncation_and_extension_are_detected(store: LocalBlobStore, size: int) -> None:
    digest, _ = _stored(store, size)
    path = data_file(store, digest)
    original = path.read_bytes()
    for changed in (
        original[:-1],
        original[: -(TAG + (size % CHUNK))],
        original + b"\x00",
        original[:HEADER],
    ):
        path.write_bytes(changed)
        _assert_corrupted(store, digest)


def test_dropping_the_final_chunk_and_fixing_the_size_is_detected(store: LocalBlobStore) -> None:
    """Whole-chunk truncation with a consistent sidecar needs the final flag to catch it."""
    digest, _ = _stored(store, 3 * CHUNK)  # chunks: 3 full + 1 empty final
    path = data_file(store, digest)
    path.write_bytes(path.read_bytes()[:-TAG])
    _assert_corrupted(store, digest)


def test_swapped_chunks_are_detected(store: LocalBlobStore) -> None:
    digest, _ = _stored(store)
    path = data_file(store, digest)
    raw = path.read_bytes()
    c0 = raw[HEADER : HEADER + CHUNK + TAG]
    c1 = raw[HEADER + CHUNK + TAG : HEADER + 2 * (CHUNK + TAG)]
    path.write_bytes(raw[:HEADER] + c1 + c0 + raw[HEADER + 2 * (CHUNK + TAG) :])
    _assert_corrupted(store, digest)


@pytest.mark.parametrize("field", ["wrapped_dek", "size", "digest", "key_version", "json"])
def test_a_tampered_sidecar_is_detected(store: LocalBlobStore, field: str) -> None:
    digest, _ = _stored(store)
    path = key_file(store, digest)
    doc = json.loads(path.read_bytes())
    if field == "wrapped_dek":
        raw = bytearray(base64.b64decode(doc["wrapped_dek"]))
        raw[20] ^= 1
        doc["wrapped_dek"] = base64.b64encode(bytes(raw)).decode()
    elif field == "size":
        doc["size"] += 1
    elif field == "digest":
        doc["digest"] = "0" * 64
    elif field == "key_version":
        doc["key_version"] = 7
    if field == "json":
        path.write_bytes(path.read_bytes()[:-3])
    else:
        path.write_text(json.dumps(doc))
    _assert_corrupted(store, digest)
    with pytest.raises(DataCorruptedError):
        store.size(digest)


def test_swapping_two_objects_files_is_detected(store: LocalBlobStore) -> None:
    a, _ = _stored(store, 3 * CHUNK + 2)
    b, _ = _stored(store, 3 * CHUNK + 2)  # same length: a naive swap would fit
    da, db = data_file(store, a).read_bytes(), data_file(store, b).read_bytes()
    data_file(store, a).write_bytes(db)
    data_file(store, b).write_bytes(da)
    _assert_corrupted(store, a)
    _assert_corrupted(store, b)
    # swapping data *and* sidecars is caught too: the digest is bound into the wrapped key
    ka, kb = key_file(store, a).read_bytes(), key_file(store, b).read_bytes()
    key_file(store, a).write_bytes(kb.replace(b.encode(), a.encode()))
    key_file(store, b).write_bytes(ka.replace(a.encode(), b.encode()))
    _assert_corrupted(store, a)
    _assert_corrupted(store, b)


def test_a_missing_data_file_is_corruption_not_absence(store: LocalBlobStore) -> None:
    digest, _ = _stored(store)
    data_file(store, digest).unlink()
    _assert_corrupted(store, digest)


def test_the_wrong_master_key_is_named_as_such(tmp_path: Path) -> None:
    key1, key2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    first = make_local(tmp_path, master_key=key1)
    digest = first.put_bytes(b"hello").digest
    with pytest.raises(DataCorruptedError, match="different key"):
        make_local(tmp_path, master_key=key2).read_bytes(digest)


def test_fake_store_corrupt_hook() -> None:
    fake = InMemoryBlobStore()
    digest = fake.put_bytes(b"x").digest
    fake.corrupt(digest)
    with pytest.raises(DataCorruptedError, match=digest):
        fake.read_bytes(digest)


# -- keys and rotation -------------------------------------------------------------------------


def test_master_key_file_is_0600(store: LocalBlobStore, tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["current"] == 1


def test_rotation_rewraps_sidecars_and_never_touches_data(tmp_path: Path) -> None:
    store = make_local(tmp_path)
    objects = {store.put_bytes(os.urandom(n)).digest: n for n in (0, 10, 3 * CHUNK + 1)}
    sealed = store.seal(b"secret", b"ctx")
    before = {d: data_file(store, d).read_bytes() for d in objects}
    old_reader = make_local(tmp_path)  # another store instance, e.g. another process

    assert store.rotate_master_key() == 3
    for digest in objects:
        assert data_file(store, digest).read_bytes() == before[digest]
        assert json.loads(key_file(store, digest).read_bytes())["key_version"] == 2
        assert store.size(digest) == objects[digest]
        store.verify(digest)
        old_reader.verify(digest)  # reloads the keyring it has not seen
    assert store.unseal(sealed, b"ctx") == b"secret"
    rewrapped = store.rewrap_sealed(sealed)
    assert rewrapped != sealed and store.unseal(rewrapped, b"ctx") == b"secret"

    fresh = store.put_bytes(b"after rotation").digest
    assert json.loads(key_file(store, fresh).read_bytes())["key_version"] == 2
    assert store.rotate_master_key() == 4  # every object moves to version 3
    keyring = json.loads((tmp_path / "master.key").read_text())
    assert keyring["current"] == 3 and sorted(keyring["keys"]) == ["1", "2", "3"]
    assert tmp_files(store) == []


def test_rotation_reports_objects_it_cannot_rewrap(store: LocalBlobStore) -> None:
    good, _ = _stored(store)
    bad, _ = _stored(store)
    _flip(key_file(store, bad), key_file(store, bad).read_bytes().index(b"wrapped_dek") + 20)
    with pytest.raises(DataCorruptedError) as caught:
        store.rotate_master_key()
    assert caught.value.details["failed"] == [bad] and caught.value.details["rewrapped"] == 1
    assert json.loads(key_file(store, good).read_bytes())["key_version"] == 2


def test_an_environment_master_key_cannot_be_rotated(tmp_path: Path) -> None:
    store = make_local(tmp_path, master_key=base64.b64encode(os.urandom(32)).decode())
    store.put_bytes(b"x")
    assert not (tmp_path / "master.key").exists()
    with pytest.raises(BadRequestError, match="keyring file"):
        store.rotate_master_key()


def test_a_bad_environment_master_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BadRequestError, match="AICLOUD_MASTER_KEY"):
        make_local(tmp_path, master_key="too-short")


def test_seal_and_unseal(any_store: BlobStore) -> None:
    sealed = any_store.seal(b"api-key-123", b"secret:s1")
    assert b"api-key-123" not in sealed
    assert any_store.unseal(sealed, b"secret:s1") == b"api-key-123"
    with pytest.raises(DataCorruptedError):
        any_store.unseal(sealed, b"secret:s2")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(DataCorruptedError):
        any_store.unseal(bytes(tampered), b"secret:s1")
    any_store.rotate_master_key()
    assert any_store.unseal(any_store.rewrap_sealed(sealed), b"secret:s1") == b"api-key-123"


# -- no plaintext at rest ----------------------------------------------------------------------


def _all_files(root: Path) -> Iterator[bytes]:
    for folder, _, files in os.walk(root):
        for name in files:
            yield (Path(folder) / name).read_bytes()


def test_no_plaintext_anywhere_under_home(tmp_path: Path) -> None:
    store = make_local(tmp_path)
    marker = b"AICLOUD-PLAINTEXT-MARKER-"
    plaintext = marker + os.urandom(20 * CHUNK)
    digest = store.put_bytes(plaintext).digest
    store.put_bytes(marker + b"small")
    store.seal(marker + b"sealed")
    pending = store.writer()  # an upload in progress: its temp file must be ciphertext too
    pending.write(plaintext[::-1])
    needles = [marker, *(plaintext[i : i + 16] for i in range(0, len(plaintext) - 16, 37))]
    needles += [plaintext[::-1][i : i + 16] for i in range(0, len(plaintext) - 16 * 2, 101)]
    store.rotate_master_key()
    files = list(_all_files(tmp_path))
    assert len(files) >= 5
    for content in files:
        for needle in needles:
            assert needle not in content
    pending.abort()
    assert store.read_bytes(digest) == plaintext


def test_store_urls(tmp_path: Path) -> None:
    assert open_local_store(str(tmp_path / "a"), home=str(tmp_path)).root == tmp_path / "a"
    assert open_local_store(f"file://localhost{tmp_path}/b", home=str(tmp_path)).root == tmp_path / "b"
    with pytest.raises(BadRequestError, match="only file://"):
        open_local_store("s3://bucket/x", home=str(tmp_path))

"""Dataset file formats: their names, detection from a name and the first bytes, and safe reading.

Every reader in :mod:`aicloud.data` goes through the helpers here, so that:

* a file object is read in large blocks (it may be a slow, decrypting stream without ``fileno()``);
* nothing a parsing library raises leaks out: it becomes :class:`~aicloud.errors.InvalidDataError`
  (:func:`translate_errors`, :func:`guarded`), while errors of our own (``AicloudError``) pass through.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, TypeAlias, TypeVar

import pyarrow as pa

from aicloud.errors import AicloudError, InvalidDataError, UnsupportedFormatError

FORMATS: tuple[str, ...] = ("csv", "parquet", "npz", "jsonl")
"""The dataset formats aicloud reads, profiles and splits."""

EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npz": "npz",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_ALIASES: dict[str, str] = {"pq": "parquet", "ndjson": "jsonl"}

PARQUET_MAGIC = b"PAR1"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive's end record
UTF8_BOM = b"\xef\xbb\xbf"

READ_BLOCK = 8 << 20  # bytes per read from the caller's file object
HEAD_SIZE = 64 << 10  # bytes inspected by the cheap up-front checks

_T = TypeVar("_T")

TableItem: TypeAlias = pa.Schema | pa.RecordBatch | pa.Table
"""What the table readers yield: a schema (which starts, or restarts, the stream) or a batch of rows."""


def _supported() -> str:
    return ", ".join(FORMATS)


def normalize_format(fmt: str) -> str:
    """The canonical name of a format (``"PQ"`` → ``"parquet"``); unknown → UnsupportedFormatError."""
    name = str(fmt).strip().lower().lstrip(".")
    name = _ALIASES.get(name, name)
    if name not in FORMATS:
        raise UnsupportedFormatError(
            f"unsupported dataset format {fmt!r}; supported formats are: {_supported()}",
            details={"format": fmt, "supported": list(FORMATS)},
        )
    return name


def detect_format(filename: str, head: bytes, declared: str | None = None) -> str:
    """The format of an uploaded file.

    Taken from ``declared`` when given, else from the file extension (``.csv``, ``.parquet``/``.pq``,
    ``.npz``, ``.jsonl``/``.ndjson``), else sniffed from ``head``, the first bytes of the file
    (``PAR1`` → parquet, a zip archive whose first member is a ``.npy`` → npz, ``{`` → jsonl).

    Raises:
        UnsupportedFormatError: the format is unknown; the message lists the supported ones.
        InvalidDataError: the declared format (or the extension) contradicts the content,
            e.g. declared parquet but the file does not start with ``PAR1``.
    """
    if declared is not None and str(declared).strip():
        fmt = normalize_format(declared)
        _check_claim(fmt, head, f"declared format {fmt!r}")
        return fmt
    ext = _extension(filename)
    if ext in EXTENSIONS:
        fmt = EXTENSIONS[ext]
        _check_claim(fmt, head, f"file name {filename!r}")
        return fmt
    sniffed = _sniff(head)
    if sniffed is None:
        raise UnsupportedFormatError(
            f"cannot tell the format of {filename!r} from its name or content; "
            f"supported formats are: {_supported()} (declare one explicitly if the name has no extension)",
            details={"filename": filename, "supported": list(FORMATS)},
        )
    return sniffed


def _extension(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
    dot = base.rfind(".")
    return base[dot:] if dot > 0 else ""


def _first_char(head: bytes) -> bytes:
    """The first non-whitespace byte after an optional UTF-8 BOM (b"" when there is none)."""
    body = head[len(UTF8_BOM) :] if head.startswith(UTF8_BOM) else head
    stripped = body.lstrip()
    return stripped[:1]


def _is_npz_head(head: bytes) -> bool:
    if head.startswith(ZIP_MAGICS[1]):
        return True  # an empty archive: npz (profile will say it holds no arrays)
    if not head.startswith(ZIP_MAGICS[0]) or len(head) < 30:
        return False
    name_len = int.from_bytes(head[26:28], "little")
    name = head[30 : 30 + name_len]
    return name.endswith(b".npy")


def _sniff(head: bytes) -> str | None:
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if _is_npz_head(head):
        return "npz"
    if _first_char(head) == b"{":
        return "jsonl"
    return None


def _what_it_looks_like(head: bytes) -> str | None:
    if head.startswith(PARQUET_MAGIC):
        return "a Parquet file"
    if head.startswith(ZIP_MAGICS):
        return "a zip archive"
    return None


def _check_claim(fmt: str, head: bytes, claim: str) -> None:
    """Raise InvalidDataError when ``head`` contradicts the claimed format (an empty head proves nothing)."""
    if not head:
        return
    if fmt == "parquet" and not head.startswith(PARQUET_MAGIC):
        raise InvalidDataError(f"{claim} says Parquet, but the file does not start with the magic PAR1")
    if fmt == "npz" and not head.startswith(ZIP_MAGICS):
        raise InvalidDataError(f"{claim} says NPZ, but the file is not a zip archive (no PK magic)")
    if fmt in ("csv", "jsonl"):
        looks = _what_it_looks_like(head)
        if looks is not None:
            raise InvalidDataError(f"{claim} says {fmt.upper()}, but the content looks like {looks}")
    if fmt == "jsonl":
        first = _first_char(head)
        if first and first != b"{":
            raise InvalidDataError(
                f"{claim} says JSON Lines (one JSON object per line), but the file starts with {first!r}"
            )


# ---------------------------------------------------------------------------------------------------------
# Reading the caller's file object


class _RawReader(io.RawIOBase):
    """A raw stream over the caller's file object, so that :class:`io.BufferedReader` can read it in
    large blocks. Closing it never closes the caller's object."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self._f = f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._f.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


def buffered(f: BinaryIO, *, rewind: bool = True) -> io.BufferedReader:
    """A buffered reader over ``f`` (from its start when ``rewind``) that reads ``READ_BLOCK`` at a time."""
    if rewind:
        f.seek(0)
    return io.BufferedReader(_RawReader(f), buffer_size=READ_BLOCK)


def release_memory() -> None:
    """Hand the memory pyarrow's pool keeps cached after a large read back to the system.

    Profiling or splitting a big file leaves about 40 MB in the allocator's per-thread caches;
    a server calls this after each such request, so its resident size falls back between uploads.
    """
    pa.default_memory_pool().release_unused()


def read_full(f: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes from ``f``: fewer only at the end of the file (``f.read`` may return less)."""
    first = f.read(size)
    if not first or len(first) >= size:
        return first
    chunks = [first]
    got = len(first)
    while got < size:
        chunk = f.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_head(f: BinaryIO, size: int = HEAD_SIZE) -> bytes:
    """The first ``size`` bytes of ``f``; leaves ``f`` at its start."""
    f.seek(0)
    head = read_full(f, size)
    f.seek(0)
    return head


class FullReader:
    """A proxy for handing the caller's file object to pyarrow, whose ``read(n)`` returns ``n`` bytes
    unless the file ends (pyarrow takes a short read for the end of the file)."""

    closed = False

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self._f.read()
        return read_full(self._f, size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        pass  # the caller owns the file


def check_not_empty(head: bytes) -> None:
    """InvalidDataError('the file is empty') for a file with no bytes, or only whitespace."""
    body = head[len(UTF8_BOM) :] if head.startswith(UTF8_BOM) else head
    if not body.strip():
        raise InvalidDataError("the file is empty")


# ---------------------------------------------------------------------------------------------------------
# Error translation


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn any exception a parsing library raises into InvalidDataError ("could not read <what>: ...").

    Errors of our own and MemoryError pass through unchanged.
    """
    try:
        yield
    except (AicloudError, MemoryError):
        raise
    except Exception as e:  # the libraries raise ValueError, OSError, ArrowException, BadZipFile, ...
        raise InvalidDataError(f"could not read {what}: {_describe(e)}") from e


def guarded(items: Iterable[_T], what: str) -> Iterator[_T]:
    """Iterate ``items`` with :func:`translate_errors` around each step (not around the consumer)."""
    it = iter(items)
    while True:
        with translate_errors(what):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


def _describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text if len(text) <= 500 else text[:500] + "..."

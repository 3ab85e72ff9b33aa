"""NPZ (a zip of ``.npy`` arrays) reading and deterministic writing. Pickle is never allowed.

Each array is a column; its first dimension is the row. Headers are checked before any data is loaded:
an object-dtype array (which would need pickle) and arrays of different lengths are refused, and so is
an archive whose members declare more decompressed bytes than :class:`~aicloud.data.limits.ParseLimits`
allow (a decompression bomb), or an array whose header claims more data than its member holds.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from aicloud.data.formats import ZIP_MAGICS, buffered, read_head
from aicloud.data.limits import DEFAULT_LIMITS, ParseLimits, check_expansion
from aicloud.errors import InvalidDataError

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # a fixed timestamp for every member, so that output is deterministic


@dataclass(frozen=True)
class NpzMember:
    """One array of an archive, as described by its ``.npy`` header."""

    name: str  # the array name (member name without ``.npy``)
    member: str  # the zip member name
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    compressed: bool


class NpzArchive:
    """An opened, validated NPZ file: its members (in archive order) and shared row count."""

    def __init__(self, f: BinaryIO, limits: ParseLimits = DEFAULT_LIMITS) -> None:
        head = read_head(f, 64)
        if not head:
            raise InvalidDataError("the file is empty")
        if not head.startswith(ZIP_MAGICS):
            raise InvalidDataError("not an NPZ file: it is not a zip archive (no PK magic)")
        stored = f.seek(0, 2)
        self._npz = np.load(buffered(f), allow_pickle=False)
        infos = self._infos()
        check_expansion("the NPZ archive", sum(i.file_size for i in infos), stored, limits)
        self.members = [self._inspect(info) for info in infos]
        if not self.members:
            raise InvalidDataError("the NPZ archive holds no arrays")
        first = self.members[0]
        for m in self.members[1:]:
            if m.shape[0] != first.shape[0]:
                raise InvalidDataError(
                    f"NPZ arrays must share their first dimension (rows): {first.name!r} has "
                    f"{first.shape[0]} rows, {m.name!r} has {m.shape[0]}",
                    details={"arrays": {first.name: first.shape[0], m.name: m.shape[0]}},
                )
        self.num_rows = first.shape[0]
        if self.num_rows == 0:
            raise InvalidDataError("the file has no rows (every array has length 0)")
        self.compressed = any(m.compressed for m in self.members)

    def _infos(self) -> list[zipfile.ZipInfo]:
        zf: zipfile.ZipFile = self._npz.zip
        infos = [i for i in zf.infolist() if not i.is_dir()]
        seen: set[str] = set()
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise InvalidDataError(f"NPZ member {info.filename!r} is not a .npy array")
            if info.filename in seen:
                raise InvalidDataError(f"NPZ member {info.filename!r} appears more than once")
            seen.add(info.filename)
        return infos

    def _inspect(self, info: zipfile.ZipInfo) -> NpzMember:
        name = info.filename[: -len(".npy")]
        with self._npz.zip.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                reader = getattr(np.lib.format, "_read_array_header")  # noqa: B009 - private, version 3.0
                shape, _, dtype = reader(fp, version)
        if dtype.hasobject:
            raise InvalidDataError(
                f"NPZ array {name!r} has an object dtype, which can only be loaded with pickle; "
                "aicloud never loads pickled data: save plain numeric or string arrays",
                details={"array": name, "dtype": str(dtype)},
            )
        if len(shape) == 0:
            raise InvalidDataError(f"NPZ array {name!r} is a 0-d scalar; every array needs a row dimension")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if nbytes > info.file_size:
            raise InvalidDataError(
                f"NPZ array {name!r} claims shape {list(shape)} ({nbytes} bytes), more than its member holds "
                f"({info.file_size} bytes): the file is corrupt",
                details={"array": name},
            )
        return NpzMember(name, info.filename, tuple(shape), dtype, info.compress_type != zipfile.ZIP_STORED)

    def member(self, name: str) -> NpzMember | None:
        return next((m for m in self.members if m.name == name), None)

    def load(self, m: NpzMember) -> np.ndarray[Any, Any]:
        """The whole array (never through pickle)."""
        with self._npz.zip.open(m.member) as fp:
            arr: np.ndarray[Any, Any] = np.lib.format.read_array(fp, allow_pickle=False)
        if arr.shape != m.shape:
            raise InvalidDataError(f"NPZ array {m.name!r} is truncated or corrupt")
        return arr

    def arrays(self) -> Iterator[tuple[NpzMember, np.ndarray[Any, Any]]]:
        """Each member with its data, loaded one at a time."""
        for m in self.members:
            yield m, self.load(m)

    def close(self) -> None:
        self._npz.close()


class NpzWriter:
    """Writes arrays into an NPZ archive byte-for-byte deterministically (fixed member timestamps and
    attributes), uncompressed like :func:`numpy.savez` or deflated like :func:`numpy.savez_compressed`."""

    def __init__(self, out: BinaryIO, *, compressed: bool) -> None:
        self._method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
        self._zip = zipfile.ZipFile(out, "w", compression=self._method, allowZip64=True)

    def add(self, name: str, arr: np.ndarray[Any, Any]) -> None:
        info = zipfile.ZipInfo(name + ".npy", date_time=ZIP_DATE)
        info.compress_type = self._method
        info.create_system = 3
        info.external_attr = 0o600 << 16
        with self._zip.open(info, "w", force_zip64=True) as fp:
            np.lib.format.write_array(fp, np.ascontiguousarray(arr), allow_pickle=False)

    def close(self) -> None:
        self._zip.close()

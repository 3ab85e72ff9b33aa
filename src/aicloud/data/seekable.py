"""A read-only, seekable file of a known size whose bytes come from somewhere else: what the parser
worker reads an upload through (the parent's pipe, or one of two files sent back to back) and what
the control plane sends two files as. Subclasses implement :meth:`SeekableReader.read`."""

from __future__ import annotations

import io
from typing import Any


class SeekableReader(io.RawIOBase):
    """``size`` bytes, a position, seeks relative to the start, the position or the end (a negative
    position is a ``ValueError``, as for a real file); ``readinto`` through the subclass's ``read``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

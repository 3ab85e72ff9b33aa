"""The job supervisor's log (standard library only; :mod:`aicloud.executors.supervise` loads this file):
the job's output appended up to a cap, then counted and dropped, with one marker line that says how
much was dropped."""

from __future__ import annotations

import os


class CappedLog:
    """Appends to a log file up to ``cap`` bytes, then counts (and drops) the rest."""

    def __init__(self, fd: int, cap: int, start: int = 0) -> None:
        self.fd = fd
        self.cap = cap
        self.written = start  # bytes in the file (an earlier attempt's log counts towards the cap)
        self.dropped = 0
        self._last = os.pread(fd, 1, start - 1) if start > 0 else b"\n"
        os.lseek(fd, start, os.SEEK_SET)

    def _marker(self) -> bytes:
        lead = b"" if self._last == b"\n" else b"\n"
        text = f"[aicloud: log truncated at {self.cap} bytes; {self.dropped} more bytes dropped]\n"
        return lead + text.encode()

    def write(self, data: bytes) -> None:
        room = self.cap - self.written
        if room > 0:
            keep = memoryview(data)[:room]
            while keep:
                n = os.write(self.fd, keep)
                keep = keep[n:]
            kept = min(room, len(data))
            self.written += kept
            self._last = data[kept - 1 : kept] if kept else self._last
            data = data[kept:]
        if data:
            first = self.dropped == 0
            self.dropped += len(data)
            if first:  # readers of a live log see the truncation at once
                os.write(self.fd, self._marker())

    def finish(self) -> None:
        """Rewrite the marker with the final dropped count."""
        if self.dropped:
            os.lseek(self.fd, self.written, os.SEEK_SET)
            marker = self._marker()
            os.write(self.fd, marker)
            os.ftruncate(self.fd, self.written + len(marker))

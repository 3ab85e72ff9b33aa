"""Job logs: reading them with bounded memory (the tail of a file, a slice from a byte offset), and
turning bytes pulled from a remote worker's log into whole lines of the job's log."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["read_lines", "read_log", "tail_lines", "whole_lines"]

_LINE_STARTS = re.compile(rb"(?<=\n)")


def tail_lines(path: Path, n_lines: int = 50, *, max_bytes: int = 16 * 1024, end: int | None = None) -> str:
    """The last ``n_lines`` lines of ``path`` (at most its last ``max_bytes``), as text; with
    ``end``, of its first ``end`` bytes only (what a reader that follows the file has not seen).

    A missing file reads as ``""``. Invalid UTF-8 is replaced, never raised.
    """
    if n_lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END) if end is None else end
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read(size - start)
    except FileNotFoundError:
        return ""
    if start > 0:  # the first line is probably cut: drop it unless it is all we have
        cut = data.find(b"\n")
        if 0 <= cut < len(data) - 1:
            data = data[cut + 1 :]
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-n_lines:])


def read_log(path: Path, offset: int = 0, limit: int = 1024 * 1024) -> tuple[bytes, int]:
    """Up to ``limit`` bytes of ``path`` from byte ``offset``, and the offset to read next.

    A missing file, or an offset past the end, gives ``(b"", offset)``.
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset}")
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)


def read_lines(path: Path, offset: int, limit: int = 1024 * 1024) -> tuple[str, int]:
    """The whole lines of ``path`` from byte ``offset`` (up to ``limit`` bytes; one longer line is
    cut at ``limit``), and the offset to read next: a line still being written waits for the next
    read instead of arriving in two pieces."""
    data, _ = read_log(path, offset, limit)
    if not data.endswith(b"\n") and len(data) < limit:
        data = data[: data.rfind(b"\n") + 1]
    return data.decode("utf-8", "replace"), offset + len(data)


def whole_lines(data: bytes, *, final: bool, limit: int, rank: int = 0) -> tuple[bytes, int]:
    """What to append to a job's log of ``data``, the next bytes pulled from worker ``rank``'s log:
    (the text, how many bytes of ``data`` it took).

    Only whole lines, so two workers' lines never interleave mid-line; all of ``data`` when it
    is the ``final`` piece (then ended with a newline) or one line of at least ``limit`` bytes
    (the pull size). Rank 0's lines stay as they are; rank r > 0's start with ``[rank r] ``, as
    the local executor writes them.
    """
    consumed = len(data) if final else data.rfind(b"\n") + 1
    if consumed == 0 and len(data) >= limit:  # one very long line
        consumed = len(data)
    chunk = data[:consumed]
    if final and chunk and not chunk.endswith(b"\n"):
        chunk += b"\n"
    if rank > 0 and chunk:
        tag = f"[rank {rank}] ".encode()
        chunk = b"".join(tag + line for line in _LINE_STARTS.split(chunk) if line)
    return chunk, consumed

"""Limits on parsing untrusted dataset files, and the checks the readers make against them.

:class:`ParseLimits` carries every limit. The readers of this package check the content limits
themselves (JSON nesting depth before pyarrow sees a line, the declared decompressed size of NPZ members
and Parquet column chunks); the process limits (memory, CPU time, wall-clock time) are enforced by the
worker process that runs them (:mod:`aicloud.data.isolation`). A limit that is hit raises
:class:`~aicloud.errors.PayloadTooLargeError` (413) whose message and ``details["limit"]`` name the
setting that sets it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from aicloud.errors import PayloadTooLargeError

EXPANSION_FLOOR = 64 << 20
"""The expansion ratio is only checked once a file expands to more than this many bytes."""


@dataclass(frozen=True)
class ParseLimits:
    """What parsing one untrusted file (one upload, or one split with its two parts) may use.

    Attributes:
        max_depth: deepest nesting of JSON arrays and objects on one JSON Lines line.
        max_expanded_bytes: most bytes a compressed file may declare once decompressed (NPZ members,
            Parquet column chunks).
        max_expansion_ratio: most a compressed file may expand (decompressed / stored size), once it
            expands to more than :data:`EXPANSION_FLOOR`.
        max_memory_bytes: the worker process's address space (``RLIMIT_AS``).
        max_cpu_seconds: the worker process's CPU time, all threads (``RLIMIT_CPU``).
        timeout_seconds: wall-clock time of one worker session; the worker is killed past it.
    """

    max_depth: int = 64
    max_expanded_bytes: int = 32 << 30
    max_expansion_ratio: float = 100.0
    max_memory_bytes: int = 4 << 30
    max_cpu_seconds: float = 600.0
    timeout_seconds: float = 900.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_LIMITS = ParseLimits()

#: The setting (environment variable) behind each limit, for messages.
SETTING = {
    "max_depth": "AICLOUD_PARSE_MAX_DEPTH",
    "max_expanded_bytes": "AICLOUD_PARSE_MAX_EXPANDED_BYTES",
    "max_expansion_ratio": "AICLOUD_PARSE_MAX_EXPANSION_RATIO",
    "max_memory_bytes": "AICLOUD_PARSE_MAX_MEMORY_BYTES",
    "max_cpu_seconds": "AICLOUD_PARSE_MAX_CPU_SECONDS",
    "timeout_seconds": "AICLOUD_PARSE_TIMEOUT_SECONDS",
}


def limit_error(limit: str, value: float, message: str, **details: Any) -> PayloadTooLargeError:
    """413 naming the setting: ``<message> (limit: AICLOUD_...=<value>)``."""
    setting = SETTING[limit]
    return PayloadTooLargeError(
        f"{message} (limit: {setting}={value:g})", details={"limit": setting, "value": value, **details}
    )


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def check_expansion(what: str, expanded: int, stored: int, limits: ParseLimits) -> None:
    """413 when ``what`` declares more decompressed bytes than the limits allow (a decompression bomb)."""
    if expanded > limits.max_expanded_bytes:
        raise limit_error(
            "max_expanded_bytes",
            limits.max_expanded_bytes,
            f"{what} expands to {_size(expanded)}, more than the limit of {_size(limits.max_expanded_bytes)}",
            expanded_bytes=expanded,
        )
    ratio = expanded / max(stored, 1)
    if expanded > EXPANSION_FLOOR and ratio > limits.max_expansion_ratio:
        raise limit_error(
            "max_expansion_ratio",
            limits.max_expansion_ratio,
            f"{what} expands {ratio:.0f}-fold ({_size(stored)} to {_size(expanded)}), more than the "
            f"limit of {limits.max_expansion_ratio:g}-fold: refused as a possible decompression bomb",
            expanded_bytes=expanded,
            stored_bytes=stored,
        )


# ---------------------------------------------------------------------------------------------------------
# JSON nesting depth

_OPEN = (0x5B, 0x7B)  # [ {
_CLOSE = (0x5D, 0x7D)  # ] }
EXACT_SCAN_BYTES = 2 << 20  # bytes of lines scanned exactly at once (see line_depths)


def line_depths(text: bytes) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The deepest nesting of arrays and objects on each line of JSON text, one entry per line (a last
    line without ``\\n`` counts). Brackets inside strings do not count; a string ends at its line.

    For text that is not valid JSON a depth may be off after the first error a parser stops at, never
    before it. Vectorised: about 30 bytes of temporary memory per byte of ``text``.
    """
    a = np.frombuffer(text, dtype=np.uint8)
    n = len(a)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero(a == 0x0A)
    starts = np.concatenate(([0], ends + 1))
    if starts[-1] >= n:
        starts = starts[:-1]
    quote = a == 0x22
    if 0x5C in a:  # a quote after an odd run of backslashes is escaped
        idx = np.arange(n, dtype=np.int32)
        last_other = np.maximum.accumulate(np.where(a == 0x5C, -1, idx))
        qpos = np.flatnonzero(quote[1:]) + 1
        escaped = ((qpos - 1 - last_other[qpos - 1]) & 1).astype(bool)
        quote[qpos[escaped]] = False
        del idx, last_other
    # inside a string: an odd number of quotes since the line's start
    quotes = np.cumsum(quote, dtype=np.int32)
    newline = a == 0x0A
    line_of = np.cumsum(newline, dtype=np.int32)
    line_of -= newline
    quotes -= np.concatenate(([0], quotes[ends]))[line_of]
    code = np.where(quotes & 1, 0, a)
    del quotes, quote, line_of, newline
    step = ((code == _OPEN[0]) | (code == _OPEN[1])).astype(np.int32)
    step -= (code == _CLOSE[0]) | (code == _CLOSE[1])
    level = np.cumsum(step, dtype=np.int32)
    before = np.concatenate(([0], level[ends]))[: len(starts)]
    return np.maximum(np.maximum.reduceat(level, starts).astype(np.int64) - before, 0)


def first_too_deep(block: bytes, max_depth: int) -> tuple[int, int] | None:
    """``(line index within block, depth)`` of the first line nesting deeper than ``max_depth``, or None.

    Cheap for ordinary data: a line with no more ``[``/``{`` than the limit cannot nest deeper, and only
    lines with more are scanned exactly, a few MiB at a time.
    """
    if block.count(b"[") + block.count(b"{") <= max_depth:
        return None
    a = np.frombuffer(block, dtype=np.uint8)
    opens = np.flatnonzero((a == _OPEN[0]) | (a == _OPEN[1]))
    newlines = np.flatnonzero(a == 0x0A)
    per_line = np.bincount(np.searchsorted(newlines, opens), minlength=len(newlines) + 1)
    del opens
    flagged = np.flatnonzero(per_line > max_depth).tolist()
    group: list[int] = []
    size = 0
    for n, index in enumerate(flagged):
        group.append(index)
        size += (int(newlines[index]) if index < len(newlines) else len(block)) - (
            int(newlines[index - 1]) + 1 if index else 0
        )
        if size < EXACT_SCAN_BYTES and n + 1 < len(flagged):
            continue
        lines = [
            block[(int(newlines[i - 1]) + 1 if i else 0) : (int(newlines[i]) if i < len(newlines) else None)]
            for i in group
        ]
        depths = line_depths(b"\n".join(lines))
        deep = np.flatnonzero(depths > max_depth)
        if len(deep):
            return group[int(deep[0])], int(depths[deep[0]])
        group, size = [], 0
    return None


def depth_error(line_no: int, depth: int, limits: ParseLimits) -> PayloadTooLargeError:
    return limit_error(
        "max_depth",
        limits.max_depth,
        f"JSON Lines line {line_no} nests arrays and objects {depth} levels deep, more than the limit "
        f"of {limits.max_depth}",
        line=line_no,
    )


class DepthGuard:
    """Checks the nesting depth of JSON Lines text fed to it in pieces of any size (cut anywhere)."""

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self._partial = b""  # the unfinished last line
        self._lines_before = 0  # complete lines already checked
        self.error: PayloadTooLargeError | None = None

    def feed(self, data: bytes) -> None:
        """Check the lines ``data`` completes; raises (and keeps in ``error``) the limit error."""
        if not data:
            self._check(self._partial)
            self._partial = b""
            return
        cut = data.rfind(b"\n")
        if cut < 0:
            self._partial += data
            return
        block = self._partial + data[: cut + 1] if self._partial else data[: cut + 1]
        self._partial = data[cut + 1 :]
        self._check(block)
        self._lines_before += block.count(b"\n")

    def _check(self, block: bytes) -> None:
        found = first_too_deep(block, self.limits.max_depth)
        if found is not None:
            index, depth = found
            self.error = depth_error(self._lines_before + index + 1, depth, self.limits)
            raise self.error

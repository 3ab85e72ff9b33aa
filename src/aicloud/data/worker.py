"""The parser worker: ``python -m aicloud.data.worker '<limits JSON>'``, started by
:class:`aicloud.data.isolation.ParserPool`.

It limits itself (address space, CPU time, no core file), imports the parsers, then serves the jobs of
several sessions from its stdin until the parent closes it. Its file is read from the parent through the
pipe (:class:`RemoteFile`); nothing it parses is ever written to a file by it, except the temporary
spool of a Parquet or NPZ split part (``TMPDIR``). Errors go back in the project's error shape, never
as a traceback (the traceback of an unexpected one goes to stderr, the server's log).
"""

from __future__ import annotations

import importlib
import io
import json
import os
import resource
import sys
import threading
import traceback
from typing import IO, Any, BinaryIO, cast

from aicloud.data.isolation import CHUNK, READ_REQUEST, read_frame, write_frame
from aicloud.data.limits import ParseLimits, limit_error
from aicloud.data.seekable import SeekableReader
from aicloud.errors import AicloudError, InvalidDataError

#: within this much of the address-space limit, an error is taken for running out of memory
_NEAR_LIMIT = 0.9


def _limit_self(limits: ParseLimits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash never writes the file's bytes to disk
    resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory_bytes, limits.max_memory_bytes))
    _renew_cpu_limit(limits)


def _renew_cpu_limit(limits: ParseLimits) -> None:
    """Allow ``max_cpu_seconds`` more CPU time (all threads) from now: SIGXCPU ends the process past it.
    The hard limit stays unlimited so that the next step can be given its own allowance."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(used.ru_utime + used.ru_stime + limits.max_cpu_seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))


class RemoteFile(SeekableReader):
    """A read-only, seekable file whose bytes the parent sends on request. Thread-safe: pyarrow reads
    from its own threads, and a request and its answer must not interleave with another's."""

    def __init__(self, to_parent: IO[bytes], from_parent: IO[bytes], size: int) -> None:
        super().__init__(size)
        self._out = to_parent
        self._in = from_parent
        self._lock = threading.Lock()

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with self._lock:
            want = min(len(view), CHUNK, max(self._size - self._pos, 0))
            if want <= 0:
                return 0
            _send(self._out, b"R", READ_REQUEST.pack(self._pos, want))
            kind, data = read_frame(self._in, CHUNK)
            if kind != b"D" or len(data) > want:
                raise OSError(f"the parent sent {kind!r} instead of data")
            n = len(data)
            view[:n] = data
            self._pos += n
            return n

    def read(self, size: int = -1) -> bytes:
        """Exactly ``size`` bytes unless the file ends (the readers expect full reads)."""
        if size is None or size < 0:
            size = max(self._size - self._pos, 0)
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = self.readinto(view[got:])
            if not n:
                break
            got += n
        del view
        return bytes(buf[:got]) if got < size else bytes(buf)


class _PartSink:
    """Where a split writes one part: ``W`` frames to the parent."""

    def __init__(self, out: IO[bytes], part: bytes) -> None:
        self._out = out
        self._part = part

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            _send(self._out, b"W", self._part, view[start : start + CHUNK])
        return len(data)


_send_lock = threading.Lock()


def _send(out: IO[bytes], kind: bytes, *parts: bytes | memoryview) -> None:
    """One frame to the parent; frames from different threads never interleave."""
    with _send_lock:
        write_frame(out, kind, *parts)


def _near_memory_limit(limits: ParseLimits) -> bool:
    # VmPeak, the peak address-space size (what RLIMIT_AS caps), is only in /proc: psutil has the
    # current size, which has already shrunk back by the time a MemoryError is caught here.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) * 1024 >= _NEAR_LIMIT * limits.max_memory_bytes
    except OSError:
        pass
    return False


def _memory_error(limits: ParseLimits) -> AicloudError:
    return limit_error(
        "max_memory_bytes",
        limits.max_memory_bytes,
        f"parsing the file needs more memory than the limit of {limits.max_memory_bytes} bytes",
    )


def _run(job: dict[str, Any], f: BinaryIO, out: IO[bytes], limits: ParseLimits) -> Any:
    from aicloud import data

    op = job.get("op")
    if op == "profile":
        return data.profile(job["fmt"], f, limits).to_dict()
    if op == "split":
        return list(
            data.split(
                job["fmt"],
                f,
                _PartSink(out, b"0"),
                _PartSink(out, b"1"),
                train_size=job["train_size"],
                seed=job["seed"],
                stratify=job["stratify"],
                limits=limits,
            )
        )
    if op == "preview":
        from aicloud.data.preview import preview

        return preview(job["fmt"], f, rows=int(job.get("rows", 20)), limits=limits)
    if op == "drift":  # two files back to back: the reference's first ``ref_size`` bytes, then the current's
        from aicloud.data.drift import drift_report, sample_table

        ref_size = int(job["ref_size"])
        ref = sample_table(job["ref_fmt"], cast(BinaryIO, _Window(f, 0, ref_size)), limits)
        cur = sample_table(
            job["fmt"], cast(BinaryIO, _Window(f, ref_size, f.seek(0, io.SEEK_END) - ref_size)), limits
        )
        return drift_report(
            ref[0],
            cur[0],
            columns=job.get("columns"),
            threshold=float(job.get("threshold", 0.5)),
            unsupported=(ref[1], cur[1]),
            rows=(ref[2], cur[2]),
        )
    raise AicloudError(f"unknown parser job {op!r}")


class _Window(SeekableReader):
    """``length`` bytes of ``f`` from ``start``, as a seekable file of its own."""

    def __init__(self, f: BinaryIO, start: int, length: int) -> None:
        super().__init__(length)
        self._f, self._start = f, start

    def read(self, size: int = -1) -> bytes:
        left = max(self._size - self._pos, 0)
        size = left if size is None or size < 0 else min(size, left)
        self._f.seek(self._start + self._pos)
        data = self._f.read(size)
        self._pos += len(data)
        return data


def serve(to_parent: IO[bytes], from_parent: IO[bytes], limits: ParseLimits) -> None:
    """Answer jobs until the parent closes the pipe."""
    while True:
        try:
            kind, payload = read_frame(from_parent, CHUNK)
        except Exception:  # the parent closed the pipe: the session is over
            return
        if kind != b"J":
            return
        job = json.loads(payload)
        _renew_cpu_limit(limits)
        f = RemoteFile(to_parent, from_parent, int(job["size"]))
        try:
            result = _run(job, cast(BinaryIO, f), to_parent, limits)
        except MemoryError:
            err = _memory_error(limits)
        except InvalidDataError as e:
            err = _memory_error(limits) if _near_memory_limit(limits) else e
        except AicloudError as e:
            err = e
        except Exception:
            traceback.print_exc()
            err = AicloudError("the parser failed unexpectedly; see the server log")
        else:
            _send(to_parent, b"O", json.dumps(result, default=str).encode())
            del f, result
            _release()
            continue
        _send(to_parent, b"E", json.dumps(err.to_payload()["error"], default=str).encode())
        del f, err
        _release()


def _release() -> None:
    """Drop what the step left behind before the worker waits for the next one."""
    from aicloud import data

    data.release_memory()


def main() -> None:
    limits = ParseLimits(**json.loads(sys.argv[1]))
    _limit_self(limits)
    # The protocol owns the original stdin and stdout; anything a library prints goes to stderr.
    to_parent = os.fdopen(os.dup(1), "wb", buffering=0)
    from_parent = os.fdopen(os.dup(0), "rb", buffering=0)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    # Imports and pyarrow's first-use set-up (about 0.3 s of the first profile) happen now, while a
    # spare worker waits for its job, not during the job.
    for module in ("pyarrow.csv", "pyarrow.json", "pyarrow.parquet"):
        importlib.import_module(module)
    from aicloud import data

    data.profile("csv", io.BytesIO(b"a,b,c\n1,x,1.5\n2,y,\n"))

    serve(to_parent, from_parent, limits)


if __name__ == "__main__":
    main()

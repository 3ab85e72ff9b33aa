"""Parsing untrusted files in a bounded worker process, so that a crash costs one request, not the server.

    pool = ParserPool(ParseLimits(...))
    pool.start()                                   # one idle worker, imported and warmed up
    prof = pool.profile("csv", f)                  # f: any seekable binary file object
    with pool.session() as parser:                 # one worker for the steps of one request
        parser.split("csv", f, out_train, out_test, train_size=0.8, seed=0)
        prof = parser.profile("csv", part)

A worker is ``python -m aicloud.data.worker``. The pool keeps one idle worker (started at once, so no
request waits for its imports, about 0.6 s); a session takes it, or starts another when it is busy, and
gives it back after steps that all succeeded. A worker that failed a step, crashed or hit a limit is
killed and replaced. It runs under ``RLIMIT_AS`` (memory), ``RLIMIT_CPU`` (renewed for each step) and
``RLIMIT_CORE=0``, in ``/``, with an environment that keeps only ``PATH``, ``PYTHONPATH`` and the
locale (no ``AICLOUD_*`` variable: no key, token or database URL); the parent kills it when a session
passes its wall-clock limit.

The worker never opens the caller's file: it asks the parent for byte ranges over its stdin/stdout
pipes (``R``: position and length; the parent answers ``D`` with the bytes read from ``f``), writes a
split's parts back as ``W`` frames, and ends each step with ``O`` (the JSON result) or ``E`` (an
error in the project's error shape). So the worker needs no key and writes no plaintext file; the
parent keeps the decrypting reader and the encrypting writers. A frame is one kind byte, a 4-byte
big-endian length and the payload.

A worker that dies (a segfault in a parsing library, the CPU or memory limit, the wall-clock limit)
becomes an :class:`~aicloud.errors.AicloudError` with a 4xx status naming the limit or the crash.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any, BinaryIO

from aicloud.data.formats import read_full
from aicloud.data.limits import ParseLimits, limit_error
from aicloud.data.profile import Profile
from aicloud.data.sampling import Writable
from aicloud.errors import ERRORS_BY_CODE, AicloudError, InvalidDataError

log = logging.getLogger("aicloud.data.isolation")

HEADER = struct.Struct(">cI")
READ_REQUEST = struct.Struct(">QI")
CHUNK = 4 << 20  # the most bytes one D or W frame carries
MAX_FRAME = 64 << 20  # a longer frame from the worker is a broken worker

#: environment variables a worker keeps; everything else (tokens, keys, database URLs) is dropped
_ENV_KEEP = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SYSTEMROOT")


class WorkerGone(Exception):
    """The worker's end of a pipe closed: it exited or was killed."""


class WorkerBroken(Exception):
    """The worker sent something the protocol does not allow."""


def read_frame(stream: IO[bytes], limit: int = MAX_FRAME) -> tuple[bytes, bytes]:
    """(kind, payload) of the next frame; WorkerGone at the end of the stream."""
    head = _read_exact(stream, HEADER.size)
    kind, length = HEADER.unpack(head)
    if length > limit:
        raise WorkerBroken(f"a frame of {length} bytes")
    return kind, _read_exact(stream, length)


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise WorkerGone("end of stream")
        got += k
    return bytes(buf)


def write_frame(stream: IO[bytes], kind: bytes, *parts: bytes | memoryview) -> None:
    stream.write(HEADER.pack(kind, sum(len(p) for p in parts)))
    for p in parts:
        stream.write(p)
    stream.flush()


def worker_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in _ENV_KEEP or k.startswith("LC_")}


#: Turns a worker's command line into one that runs it confined (the server passes the workload
#: sandbox's): ``wrap(argv, workdir)`` with ``workdir`` a private folder the worker may write.
Confine = Callable[[list[str], str], list[str]]


class _Worker:
    """One worker process and its pipes (and, when confined, its private working folder)."""

    def __init__(self, limits: ParseLimits, confine: Confine | None = None) -> None:
        argv = [sys.executable, "-m", "aicloud.data.worker", json.dumps(limits.to_dict())]
        self.workdir: str | None = None
        cwd = "/"
        if confine is not None:
            self.workdir = cwd = tempfile.mkdtemp(prefix="aicloud-parser-")
            try:
                argv = confine(argv, self.workdir)
            except BaseException:
                shutil.rmtree(self.workdir, ignore_errors=True)
                raise
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=worker_env(),
            cwd=cwd,
            close_fds=True,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.to_worker: IO[bytes] = self.proc.stdin
        self.from_worker: IO[bytes] = self.proc.stdout
        self.timed_out = False
        self.jobs = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for stream in (self.to_worker, self.from_worker):
            with suppress(OSError):
                stream.close()
        self.proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


class ParserPool:
    """Runs parsing sessions in worker processes under ``limits``, keeping one idle worker; thread-safe.

    A session takes the idle worker (or starts one when it is busy), and gives it back when every step
    succeeded. A worker that failed a step, crashed, hit a limit or served ``MAX_JOBS`` steps is killed
    and a fresh idle one started in the background, so the next request does not wait for its imports.
    """

    MAX_JOBS = 100

    def __init__(self, limits: ParseLimits, confine: Confine | None = None) -> None:
        self.limits = limits
        self.confine = confine  # set before start(): the server's workload sandbox, if any
        self._idle: _Worker | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the idle worker (it imports and warms up in the background)."""
        with self._lock:
            self._refill()

    def _refill(self) -> None:
        if not self._closed and self._idle is None:
            try:
                self._idle = _Worker(self.limits, self.confine)
            except OSError:
                log.exception("could not start a parser worker")

    def _take(self) -> _Worker:
        with self._lock:
            worker, self._idle = self._idle, None
        if worker is not None and worker.alive():
            return worker
        if worker is not None:
            worker.kill()
        try:
            return _Worker(self.limits, self.confine)
        except OSError as e:
            raise AicloudError(f"could not start a parser worker: {e}") from None

    def _give_back(self, worker: _Worker, healthy: bool) -> None:
        with self._lock:
            keep = healthy and worker.alive() and worker.jobs < self.MAX_JOBS
            if keep and self._idle is None and not self._closed:
                self._idle, worker = worker, None  # type: ignore[assignment]
            else:
                self._refill()
        if worker is not None:
            worker.kill()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            worker, self._idle = self._idle, None
        if worker is not None:
            worker.kill()

    @contextmanager
    def session(self) -> Iterator[ParserSession]:
        """A worker for the steps of one request (killed past the wall-clock limit)."""
        worker = self._take()
        timer = threading.Timer(self.limits.timeout_seconds, self._expire, (worker,))
        timer.daemon = True
        timer.start()
        healthy = False
        try:
            yield ParserSession(worker, self.limits)
            healthy = True
        finally:
            timer.cancel()
            self._give_back(worker, healthy and not worker.timed_out)

    @staticmethod
    def _expire(worker: _Worker) -> None:
        worker.timed_out = True
        if worker.proc.poll() is None:
            worker.proc.kill()

    def profile(self, fmt: str, f: BinaryIO, size: int | None = None) -> Profile:
        """:func:`aicloud.data.profile` of ``f`` in a worker."""
        with self.session() as parser:
            return parser.profile(fmt, f, size)

    def preview(self, fmt: str, f: BinaryIO, rows: int = 20, size: int | None = None) -> dict[str, Any]:
        """:func:`aicloud.data.preview.preview` of ``f`` in a worker: its first rows."""
        with self.session() as parser:
            return parser.preview(fmt, f, rows, size)


class ParserSession:
    """The steps a request runs in its worker; each raises what :mod:`aicloud.data` would raise, or a
    4xx naming the limit the worker hit or the way it crashed."""

    def __init__(self, worker: _Worker, limits: ParseLimits) -> None:
        self._worker = worker
        self._limits = limits

    def profile(self, fmt: str, f: BinaryIO, size: int | None = None) -> Profile:
        """:func:`aicloud.data.profile` of ``f`` (``size``: its length, when the caller knows it)."""
        result = self._run({"op": "profile", "fmt": fmt}, f, size, ())
        try:
            return Profile(num_rows=int(result["num_rows"]), schema=result["schema"], stats=result["stats"])
        except (KeyError, TypeError, ValueError):
            self._worker.kill()
            raise AicloudError("the parser worker sent a malformed profile") from None

    def preview(self, fmt: str, f: BinaryIO, rows: int = 20, size: int | None = None) -> dict[str, Any]:
        """The first ``rows`` rows of ``f`` (``{"columns", "rows"}``), read in the worker."""
        result = self._run({"op": "preview", "fmt": fmt, "rows": rows}, f, size, ())
        if not (
            isinstance(result, dict)
            and isinstance(result.get("columns"), list)
            and isinstance(result.get("rows"), list)
        ):
            self._worker.kill()
            raise AicloudError("the parser worker sent a malformed preview")
        return result

    def drift(self, job: dict[str, Any], f: BinaryIO, size: int) -> dict[str, Any]:
        """:func:`aicloud.data.drift.drift_report` of two files read back to back from ``f`` (``job``:
        ``ref_fmt``, ``ref_size``, ``fmt``, ``columns``, ``threshold``)."""
        result = self._run({**job, "op": "drift"}, f, size, ())
        if not isinstance(result, dict) or not isinstance(result.get("columns"), list):
            self._worker.kill()
            raise AicloudError("the parser worker sent a malformed drift report")
        return result

    def split(
        self,
        fmt: str,
        f: BinaryIO,
        out_train: Writable,
        out_test: Writable,
        *,
        train_size: float,
        seed: int,
        stratify: str | None = None,
        size: int | None = None,
    ) -> tuple[int, int]:
        """:func:`aicloud.data.split`; the parts arrive in pieces and go to ``out_train``, ``out_test``."""
        job = {"op": "split", "fmt": fmt, "train_size": train_size, "seed": seed, "stratify": stratify}
        result = self._run(job, f, size, (out_train, out_test))
        try:
            return int(result[0]), int(result[1])
        except (IndexError, KeyError, TypeError, ValueError):
            self._worker.kill()
            raise AicloudError("the parser worker sent a malformed split result") from None

    def _run(self, job: dict[str, Any], f: BinaryIO, size: int | None, sinks: tuple[Writable, ...]) -> Any:
        worker = self._worker
        if size is None:
            size = f.seek(0, io.SEEK_END)
        f.seek(0)
        worker.jobs += 1
        try:
            write_frame(worker.to_worker, b"J", json.dumps({**job, "size": size}).encode())
            while True:
                kind, payload = read_frame(worker.from_worker)
                if kind == b"R":
                    pos, n = READ_REQUEST.unpack(payload)
                    if f.tell() != pos:
                        f.seek(pos)
                    write_frame(worker.to_worker, b"D", read_full(f, min(n, CHUNK)))
                elif kind == b"W" and payload[:1] in (b"0", b"1") and sinks:
                    sinks[int(payload[:1])].write(payload[1:])
                elif kind == b"O":
                    return json.loads(payload)
                elif kind == b"E":
                    raise _error_from(json.loads(payload))
                else:
                    raise WorkerBroken(f"an unexpected frame {kind!r}")
        except (WorkerGone, BrokenPipeError) as e:
            raise self._death(e) from None
        except (WorkerBroken, ValueError) as e:  # ValueError: JSON that does not parse
            log.warning("a parser worker broke the protocol: %s", e)
            worker.kill()
            raise AicloudError("the parser worker broke its protocol; see the server log") from None

    def _death(self, cause: Exception) -> AicloudError:
        """The error for a worker that stopped answering (it is killed if it still runs)."""
        worker = self._worker
        with suppress(subprocess.TimeoutExpired):
            worker.proc.wait(timeout=5)  # its pipe closed: it is exiting
        worker.kill()
        code = worker.proc.returncode
        if worker.workdir is not None and code is not None and 128 < code <= 128 + 64:
            code = 128 - code  # confined: the sandbox reports a death by signal N as 128 + N
        limits = self._limits
        if worker.timed_out:
            return limit_error(
                "timeout_seconds",
                limits.timeout_seconds,
                f"parsing the file took longer than {limits.timeout_seconds:g} seconds",
            )
        if code == -signal.SIGXCPU:
            return limit_error(
                "max_cpu_seconds",
                limits.max_cpu_seconds,
                f"parsing the file used more than {limits.max_cpu_seconds:g} seconds of CPU time",
            )
        if code is not None and code < 0:
            name = _signal_name(-code)
            log.warning("a parser worker died of %s", name)
            return InvalidDataError(
                f"the parser crashed on this file ({name}); nothing was stored. A valid file may need "
                f"more than the parser's memory limit (AICLOUD_PARSE_MAX_MEMORY_BYTES="
                f"{limits.max_memory_bytes})",
                details={"signal": name, "limit": "AICLOUD_PARSE_MAX_MEMORY_BYTES"},
            )
        log.warning("a parser worker stopped answering (exit %s): %s", code, cause)
        return AicloudError(f"the parser worker stopped answering (exit status {code})")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _error_from(payload: Any) -> AicloudError:
    """The error a worker reported, as the class its code names (never a traceback)."""
    if not isinstance(payload, dict):
        raise ValueError("malformed error frame")
    cls = ERRORS_BY_CODE.get(str(payload.get("code")), AicloudError)
    return cls(str(payload.get("message", ""))[:4000], details=payload.get("details"))

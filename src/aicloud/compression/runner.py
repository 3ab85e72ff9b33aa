"""Runs one compression request in a worker process (:mod:`aicloud.compression.worker`).

Standard library only: this is what the control plane imports. The caller makes a private working
folder, puts the model files there and calls :func:`run_worker`; the worker runs confined (the
server passes the workload sandbox's ``confine``, as for the parser workers), with an environment
without any ``AICLOUD_*`` variable, in a process group of its own that is killed past the wall-clock
limit. Its answer is ``result.json`` in the working folder: a result, or an error that becomes the
same :class:`~aicloud.errors.AicloudError` here (a 4xx the caller sees); a worker that dies without
answering is an error naming its exit and the tail of its log.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from aicloud.data.isolation import worker_env
from aicloud.errors import ERRORS_BY_CODE, AicloudError, UnavailableError

log = logging.getLogger("aicloud.compression")

#: ``confine(argv, workdir)``: the worker's command line, run confined with ``workdir`` writable
Confine = Callable[[list[str], str], list[str]]

TIMEOUT_S = 600.0
#: workers at once (each imports torch and uses every core it may): more requests wait their turn
MAX_WORKERS = 2
_slots = threading.BoundedSemaphore(MAX_WORKERS)


def run_worker(
    request: dict[str, Any], workdir: Path, confine: Confine | None = None, timeout_s: float = TIMEOUT_S
) -> Any:
    """The worker's result for ``request`` (paths in it lie under ``workdir``).

    Raises:
        AicloudError: the error the worker answered (its class from the error code), or one naming
            the worker's death or the wall-clock limit.
    """
    request_path = workdir / "request.json"
    request_path.write_text(json.dumps(request))
    argv = [sys.executable, "-m", "aicloud.compression.worker", str(request_path)]
    if confine is not None:
        argv = confine(argv, str(workdir))
    log_path = workdir / "worker.log"
    with _slots, open(log_path, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=worker_env(),
            cwd=str(workdir),
            close_fds=True,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise UnavailableError(
                f"the compression worker took longer than {timeout_s:g} seconds and was stopped",
                details={"limit": "timeout_seconds", "value": timeout_s},
            ) from None
    result_path = workdir / "result.json"
    if not result_path.exists():
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        log.warning("the compression worker exited with %s without an answer:\n%s", code, tail)
        raise AicloudError(
            f"the compression worker exited with status {code} without an answer; see the server log"
        )
    body = json.loads(result_path.read_text())
    error = body.get("error") if isinstance(body, dict) else None
    if error is not None:
        cls = ERRORS_BY_CODE.get(str(error.get("code")), AicloudError)
        raise cls(str(error.get("message", ""))[:4000], details=error.get("details"))
    return body.get("result")

"""The reconcile-loop skeleton the controllers share: a daemon thread that runs
``reconcile_once`` every ``interval`` seconds, at once after ``wake()``, and never dies
of one failed pass.

A pass that finds nothing to watch sets ``idle``; the loop then waits ``idle_interval``
seconds (2 s by default) instead of ``interval``, so that an idle control plane does not
query its store several times a second. Whatever gives a controller work calls ``wake()``
(the API routes do, through ``AppState``), so an idle loop still reacts at once.

The loop calls :meth:`ReconcileLoop.tick`, which is ``reconcile_once`` unless a controller
has a cheaper pass for its steady state (the deployment controller does);
``reconcile_once`` itself is always the full pass."""

from __future__ import annotations

import abc
import logging
import threading
import time
from typing import Any

from aicloud.executors.base import Executor, ExitInfo

#: Polls of one handle that may fail in a row before it counts as ``lost``.
MAX_POLL_ERRORS = 10


def poll_counted(
    executor: Executor, handle: dict[str, Any], errors: dict[str, int], key: str, log: logging.Logger
) -> ExitInfo | None:
    """``executor.poll(handle)``, tolerating failures: one that raises is logged and counted in
    ``errors[key]``; None (cannot tell now) until :data:`MAX_POLL_ERRORS` failed in a row, then
    ``lost``, so nothing stays running forever on an unpollable handle. A good poll resets the count."""
    try:
        info = executor.poll(handle)
    except Exception:
        count = errors[key] = errors.get(key, 0) + 1
        log.exception("%s: poll failed (%d/%d)", key, count, MAX_POLL_ERRORS)
        return ExitInfo("lost") if count >= MAX_POLL_ERRORS else None
    errors.pop(key, None)
    return info


class ReconcileLoop(abc.ABC):
    """Subclasses implement :meth:`reconcile_once` (idempotent) and call ``super().__init__``."""

    #: thread name and log wording, e.g. "job controller"
    loop_name = "controller"

    #: How long an idle loop (nothing to watch) waits between passes, unless woken.
    idle_interval = 2.0

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.idle = False  # set by reconcile_once: its last pass found nothing to watch
        self.passes = 0  # the loop's passes so far, their seconds summed, the last one's (/metrics)
        self.pass_seconds = 0.0
        self.last_pass_seconds = 0.0
        self._pass_lock = threading.Lock()  # one pass at a time (the loop, tests, shutdown)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = logging.getLogger(f"aicloud.{self.loop_name.replace(' ', '_')}")

    @abc.abstractmethod
    def reconcile_once(self) -> None:
        """One idempotent pass."""

    def tick(self) -> None:
        """What the loop runs each ``interval``: the full pass, unless a subclass knows better."""
        self.reconcile_once()

    def start(self) -> None:
        """Start the background loop (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        name = "aicloud-" + self.loop_name.replace(" ", "-")
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _stop_loop(self, timeout: float) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Run a pass now rather than at the next tick."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether the background loop is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                self.tick()
            except Exception:
                self.idle = False
                self._log.exception("%s pass failed; retrying", self.loop_name)
            self.last_pass_seconds = time.perf_counter() - started
            self.pass_seconds += self.last_pass_seconds
            self.passes += 1
            self._wake.wait(max(self.interval, self.idle_interval) if self.idle else self.interval)
            self._wake.clear()

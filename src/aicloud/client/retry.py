"""The transport's retry policy: wait out a control plane that is unreachable (it may be restarting).

Workloads (the in-job session) give their :class:`aicloud.client.http.Transport` ``retry_seconds``;
the SDK's transport has none, so its calls fail at once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

from aicloud.errors import UnavailableError

RETRY_SECONDS = 60.0  # how long one-off calls wait out a control plane that is restarting

T = TypeVar("T")


def retrying(call: Callable[[], T], what: str, seconds: float = RETRY_SECONDS) -> T:
    """Run ``call``, retrying while the control plane is unreachable (it may be restarting)."""
    deadline = time.monotonic() + seconds
    delay = 0.25
    while True:
        try:
            return call()
        except UnavailableError as exc:
            if time.monotonic() + delay > deadline:
                raise
            print(f"[aicloud] {what}: {exc.message}; retrying in {delay:.2g}s", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

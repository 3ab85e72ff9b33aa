"""Executors: where workloads run. One interface (:class:`Executor`), chosen by ``AICLOUD_EXECUTOR``.

``local`` (the default) runs each job as a supervised subprocess tree on this machine
(:class:`~aicloud.executors.local.LocalExecutor`); ``ray`` runs it on a Ray cluster
(:class:`~aicloud.executors.ray.RayExecutor`, the optional extra ``aicloud[ray]``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aicloud.executors.base import Executor, ExitInfo, LaunchError, LaunchRequest, WorkloadLimits
from aicloud.executors.local import LocalExecutor
from aicloud.executors.sandbox import Sandbox, SandboxUnavailable

if TYPE_CHECKING:
    from aicloud.config import Settings

__all__ = [
    "Executor",
    "ExitInfo",
    "LaunchError",
    "LaunchRequest",
    "LocalExecutor",
    "Sandbox",
    "SandboxUnavailable",
    "WorkloadLimits",
    "make_executor",
    "workload_sandbox",
]

log = logging.getLogger(__name__)


def workload_sandbox(settings: Settings) -> Sandbox | None:
    """The sandbox every workload runs in (``AICLOUD_ISOLATION=sandbox``, the default), checked
    once by running Python in it; None with ``AICLOUD_ISOLATION=none``, said in the log.

    Raises SandboxUnavailable (what is missing, and what to do) when the sandbox cannot run."""
    if settings.isolation == "none":
        log.warning(
            "AICLOUD_ISOLATION=none: workloads run unsandboxed as this user and are trusted: any job or "
            "replica can read every workspace's data, the keys and the database. Use it only on a "
            "single-user machine."
        )
        return None
    hidden = [settings.home, settings.resolved_jobs_dir]
    sandbox = Sandbox.detect(hidden=hidden)
    sandbox.probe()
    mode = "an unprivileged uid of its own" if sandbox.as_root else "a user namespace"
    log.info("workloads run in the bubblewrap sandbox (%s; %s)", sandbox.bwrap, mode)
    return sandbox


def make_executor(settings: Settings, *, replicas: bool = False, sandbox: Sandbox | None = None) -> Executor:
    """The executor named by ``settings.executor``; a ValueError says what is missing.

    ``replicas``: the executor of serving replicas, which the gateway reaches on 127.0.0.1:
    with ``ray`` they are placed on the control plane's own Ray node. ``sandbox``: the one
    :func:`workload_sandbox` gave (None: unsandboxed).
    """
    if settings.executor == "local":
        return LocalExecutor.from_settings(settings, sandbox)
    if settings.executor == "ray":
        try:
            from aicloud.executors.ray import RayExecutor
        except ImportError as exc:
            raise ValueError(f"AICLOUD_EXECUTOR=ray needs Ray ({exc}): pip install 'aicloud[ray]'") from None
        return RayExecutor.from_settings(settings, local_node=replicas, sandboxed=sandbox is not None)
    raise ValueError(f"unknown executor {settings.executor!r}: AICLOUD_EXECUTOR must be 'local' or 'ray'")

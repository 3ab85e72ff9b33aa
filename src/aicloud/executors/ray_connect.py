"""Connecting the control plane to a Ray cluster, failing fast and clearly.

``ray.init`` is slow to give up and vague when it does: an address that does not answer
keeps it retrying for two minutes (then it raises SystemExit), a wrong token for twenty
seconds (then "Failed to connect"), and a machine without a Ray node for a minute. So
:func:`connect` checks these first, each in about a second, and raises
:class:`RayUnavailable` (a :class:`~aicloud.executors.base.LaunchError`) saying what to fix:

1. the address answers (a TCP connect to the GCS port);
2. the cluster accepts our credentials: with a token, Ray's token authentication
   (``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN``, which Ray reads from the environment only,
   so they are set in this process's environment; the Ray executor keeps them out of jobs);
3. a Ray node runs on this machine (a Ray driver attaches to a local raylet), unless the
   address is a Ray Client one (``ray://``).

One process holds one Ray connection: a second address is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

import ray
import ray._raylet as _raylet
from ray.exceptions import AuthenticationError

from aicloud.executors.base import LaunchError

__all__ = ["RayUnavailable", "cause", "connect"]

log = logging.getLogger("aicloud.executors.ray")

_lock = threading.Lock()
_connected_to: str | None = None  # the address this process's ray.init used


class RayUnavailable(LaunchError):
    """The Ray cluster cannot be reached or used; the message says what to fix."""


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``ray://host:port``) → (host, port)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()):
        raise RayUnavailable(f"AICLOUD_RAY_ADDRESS {address!r} is not host:port (the Ray head's GCS address)")
    return host.strip("[]"), int(port)


def cause(exc: BaseException) -> str:
    """The most specific message in an exception chain (Ray wraps the real reason)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}".strip()[:1000]


def _set_token(token: str | None) -> None:
    if not token:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = token
    config: Any = getattr(_raylet, "Config", None)
    loader: Any = getattr(_raylet, "AuthenticationTokenLoader", None)
    with contextlib.suppress(Exception):  # refresh what Ray read from the environment at import
        config.initialize("")
        loader.instance().reset_cache()


def _check_credentials(address: str, token: str | None) -> None:
    gcs_client: Any = getattr(_raylet, "GcsClient", None)
    if gcs_client is None:  # pragma: no cover - another Ray: let ray.init say what is wrong
        return
    try:
        gcs_client(address=address)
    except AuthenticationError:
        hint = "is wrong" if token else "is not set"
        raise RayUnavailable(
            f"the Ray cluster at {address} has token authentication on and AICLOUD_RAY_TOKEN "
            f"{hint}: set it to the cluster's token (its RAY_AUTH_TOKEN)"
        ) from None
    except Exception as exc:
        raise RayUnavailable(f"the Ray cluster at {address} failed: {cause(exc)}") from None


def _check_local_node(address: str) -> None:
    try:
        from ray._private.services import find_node_ids
    except ImportError:  # pragma: no cover
        return
    if not find_node_ids():
        raise RayUnavailable(
            "no Ray node runs on the control plane's machine, and a Ray driver needs one: run "
            f"`ray start --address {address} --num-cpus 0` here, or use a Ray Client address "
            "(ray://head:10001)"
        )


def connect(address: str, *, namespace: str, token: str | None, timeout_s: float = 5.0) -> None:
    """Connect this process to the cluster at ``address`` (once); see the module docstring."""
    global _connected_to
    with _lock:
        if ray.is_initialized() and _connected_to == address:
            return
        host, port = split_address(address)
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as exc:
            raise RayUnavailable(
                f"the Ray cluster at {address} does not answer ({exc}); check AICLOUD_RAY_ADDRESS "
                "(the Ray head's host:port) and that the cluster is up"
            ) from None
        if ray.is_initialized():
            raise RayUnavailable(f"this process is already connected to the Ray cluster at {_connected_to}")
        _set_token(token)
        with contextlib.suppress(Exception):  # no crash-handler stack dump on the server's SIGTERM
            import ray._private.ray_constants as ray_constants

            ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
        if not address.startswith("ray://"):
            _check_credentials(address, token)
            _check_local_node(address)
        try:
            ray.init(
                address=address,
                namespace=namespace,
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=False,
            )
        except (Exception, SystemExit) as exc:  # ray.init raises SystemExit on some failures
            raise RayUnavailable(f"could not connect to the Ray cluster at {address}: {cause(exc)}") from None
        _connected_to = address
        log.info("connected to the Ray cluster at %s (namespace %s)", address, namespace)

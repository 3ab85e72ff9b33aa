"""The unit tier is pure: no processes, no network.

While a unit test runs, connecting, listening or sending on a network socket, binding one to a
fixed port, and starting a process (``subprocess``, ``multiprocessing``, ``os.fork``/``spawn``/
``system``) raise, and the test fails even if the code under test caught the error. Unix sockets
are allowed (an asyncio event loop wakes itself through a socket pair), and so is binding port 0 to
learn a free port number (nothing listens on it). Tests that need a server, a socket or a process
belong in ``tests/integration``.
"""

from __future__ import annotations

import multiprocessing.process
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

MESSAGE = "unit tests may not open sockets/start processes: move this test to tests/integration"


class ImpureUnitTest(RuntimeError):
    pass


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


def _is_network(sock: socket.socket) -> bool:
    return sock.family != socket.AF_UNIX


@pytest.fixture(autouse=True)
def _pure(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[None]:
    violations: list[str] = []

    def refuse(what: str) -> ImpureUnitTest:
        violations.append(what)
        return ImpureUnitTest(f"{MESSAGE} ({what})")

    def guard_socket(name: str, allowed: Callable[..., bool] = lambda *a: False) -> None:
        original = getattr(socket.socket, name)

        def guarded(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
            if _is_network(self) and not allowed(*args):
                raise refuse(f"socket.{name}{args!r}")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(socket.socket, name, guarded)

    for name in ("connect", "connect_ex", "listen", "sendto"):
        guard_socket(name)
    guard_socket("bind", lambda address, *rest: isinstance(address, tuple) and address[1] == 0)

    def guard_call(owner: Any, name: str) -> None:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            raise refuse(f"{getattr(owner, '__name__', owner)}.{name}")

        monkeypatch.setattr(owner, name, guarded)

    guard_call(subprocess.Popen, "__init__")
    guard_call(multiprocessing.process.BaseProcess, "start")
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve"):
        if hasattr(os, name):
            guard_call(os, name)

    yield
    # code that caught the error does not make the test pass (a failed test is not reported twice)
    if violations and not request.node.stash.get(_CALL_FAILED, False):
        pytest.fail(f"{MESSAGE}: {', '.join(violations)}", pytrace=False)

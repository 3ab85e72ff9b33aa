"""Which extras are installed (aicloud.client.extras) and the system-metrics sampler's numbers."""

from __future__ import annotations

import os
from importlib import metadata

import pytest

from aicloud.client import extras
from aicloud.client.extras import MissingExtraError, extra_packages, require_extra
from aicloud.training.tracking import process_tree_usage

REQUIRES = [
    "httpx>=0.27",
    'uvicorn[standard]>=0.29; extra == "server"',
    "sqlalchemy>=2.0.28 ; extra == 'server'",
    'torch>=2.4; extra == "train"',
    'aicloud[server,train]; extra == "all"',
    'pytest>=8; python_version >= "3.11" and extra == "test"',
]


def test_extra_packages_read_the_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras.metadata, "requires", lambda name: REQUIRES)
    assert extra_packages("server") == ["uvicorn", "sqlalchemy"]
    assert extra_packages("train") == ["torch"]
    assert extra_packages("test") == ["pytest"]
    assert extra_packages("all") == []  # itself: nothing of its own
    assert extra_packages("nope") == []


def test_without_metadata_nothing_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(name: str) -> list[str]:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(extras.metadata, "requires", gone)
    assert extra_packages("server") == []
    require_extra("server", "aicloud server")


def test_require_extra_names_the_extra_and_the_missing_packages() -> None:
    require_extra("server", "aicloud server", packages=["httpx", "pydantic"])
    with pytest.raises(MissingExtraError) as caught:
        require_extra("server", "aicloud up", packages=["httpx", *(f"aicloud-absent-{i}" for i in range(5))])
    err = caught.value
    assert isinstance(err, ImportError)
    assert err.extra == "server" and err.missing == [f"aicloud-absent-{i}" for i in range(5)]
    assert str(err) == (
        "aicloud up needs aicloud[server] (aicloud-absent-0, aicloud-absent-1, aicloud-absent-2 and 2 more"
        " not installed): pip install 'aicloud[server]'"
    )


def test_process_tree_usage_of_this_process_and_of_a_gone_one() -> None:
    busy = sum(i * i for i in range(200_000))  # some CPU time of our own
    cpu, rss = process_tree_usage(os.getpid())
    assert busy and cpu > 0 and rss > 10_000_000
    assert process_tree_usage(2**22 + 12345) == (0.0, 0)  # above pid_max's default: no such process

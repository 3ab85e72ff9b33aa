"""Runtime envs without a server: the spec's checks, requirements files, the cache key and the GC."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from aicloud.executors.envrun import LAST_USED, BuildError, check_python, collect, spec_hash
from aicloud.schemas.runtime_env import RuntimeEnv, expand_runtime_env

DAY = 86400.0


def _env(ws: Path, key: str, age_days: float, now: float) -> Path:
    env = ws / key
    (env / "bin").mkdir(parents=True)
    (env / LAST_USED).touch()
    os.utime(env / LAST_USED, (now - age_days * DAY,) * 2)
    return env


def test_gc_removes_old_envs_and_leftover_builds_but_not_recent_or_locked(tmp_path: Path) -> None:
    now = time.time()
    ws = tmp_path / "ws1"
    old = _env(ws, "aaa", 20, now)
    recent = _env(ws, "bbb", 1, now)
    locked = _env(ws, "ccc", 30, now)
    leftover = ws / "ddd.building-123"
    leftover.mkdir()
    os.utime(leftover, (now - 20 * DAY,) * 2)
    (ws / ".pip-cache").mkdir()
    os.utime(ws / ".pip-cache", (now - 99 * DAY,) * 2)
    (ws / "aaa.lock").touch()
    fd = os.open(ws / "ccc.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a workload waits for or builds ccc
    try:
        removed = collect(tmp_path, 14 * DAY, now=now)
    finally:
        os.close(fd)
    assert sorted(removed) == sorted([old, leftover])
    assert not old.exists() and not leftover.exists() and not (ws / "aaa.lock").exists()
    assert recent.is_dir() and locked.is_dir() and (ws / ".pip-cache").is_dir()
    assert collect(tmp_path / "missing", DAY) == []
    # a workload's symlinks are never followed by the control plane's clean-up
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "eee").symlink_to(outside)
    (ws / "fff.lock").symlink_to(tmp_path / "created-by-root")
    os.utime(outside, (now - 99 * DAY,) * 2)
    assert collect(tmp_path, 14 * DAY, now=now) == [locked]  # its lock is free now
    assert outside.is_dir() and not (tmp_path / "created-by-root").exists()


def test_the_cache_key_ignores_order_and_duplicates_but_not_versions() -> None:
    a = spec_hash(["lightgbm", "onnxmltools"], "3.11", "aicloud 1")
    assert a == spec_hash(["onnxmltools", "lightgbm", "lightgbm "], "3.11", "aicloud 1")
    assert a != spec_hash(["lightgbm==4.7.0", "onnxmltools"], "3.11", "aicloud 1")
    assert a != spec_hash(["lightgbm", "onnxmltools"], "3.11", "aicloud 2")


def test_another_python_fails_saying_what_is_installed() -> None:
    with pytest.raises(BuildError, match=r"python 3\.99 is not installed on this node; installed: "):
        check_python("3.99")


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"requirements": ["-e ."]}, "requirements"),
        ({"requirements": ["--extra-index-url x"]}, "requirements"),
        ({"requirements": ["not a requirement!"]}, "requirements"),
        ({"requirements": ["pkg @ file:///etc/passwd"]}, "requirements"),
        ({"requirements": ["x"] * 201}, "requirements"),
        ({"python": "banana"}, "python"),
        ({"python": "3"}, "python"),
        ({"pip": "-U"}, "pip"),
    ],
)
def test_bad_specs_name_their_field(value: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        RuntimeEnv.model_validate(value)
    assert exc.value.errors()[0]["loc"][0] == field


def test_edge_placement_refuses_a_runtime_env() -> None:
    from aicloud.schemas.serving import DeploymentSpec

    spec = {"model": "m", "placement": {"edge": {"site": "shop1"}}, "runtime_env": {"requirements": ["x"]}}
    with pytest.raises(ValidationError, match="runtime_env is not supported on edge nodes"):
        DeploymentSpec.model_validate(spec)


def test_requirements_are_normalized_and_files_expand(tmp_path: Path) -> None:
    env = RuntimeEnv.model_validate({"requirements": ["LightGBM >= 4", "pkg[extra]==1.0"], "python": "3.11"})
    assert env.requirements == ["LightGBM>=4", "pkg[extra]==1.0"]
    (tmp_path / "requirements.txt").write_text("# comment\nxgboost>=2  # trees\n\n  tabulate\n")
    assert expand_runtime_env({"requirements_file": "requirements.txt", "python": "3.11"}, base=tmp_path) == {
        "python": "3.11",
        "requirements": ["xgboost>=2", "tabulate"],
    }
    assert expand_runtime_env(None, ["a"], tmp_path / "requirements.txt") == {
        "requirements": ["xgboost>=2", "tabulate", "a"]
    }
    assert expand_runtime_env(None) is None
    with pytest.raises(ValueError, match="requirements_file"):
        expand_runtime_env({"requirements_file": "missing.txt"}, base=tmp_path)

"""The in-job session's environment, cleared for a test: import ``clean_env`` into a test module
(an autouse fixture) so no ``AICLOUD_*`` variable of the machine or an earlier test leaks in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aicloud.training import session

SESSION_VARIABLES = (
    "AICLOUD_URL",
    "AICLOUD_TOKEN",
    "AICLOUD_RUN_ID",
    "AICLOUD_JOB_ID",
    "AICLOUD_JOB_SPEC",
    "AICLOUD_OUTPUT_DIR",
    "AICLOUD_DATASETS",
    "AICLOUD_DATASET_TRAIN",
    "AICLOUD_DATASET_EVAL",
    "AICLOUD_CPUS",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No session variables, a private AICLOUD_HOME, the test's folder as the working folder, and no
    session left over from another test."""
    for key in SESSION_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AICLOUD_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    session.use_session(None)
    yield
    session.use_session(None)

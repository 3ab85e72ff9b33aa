"""The pure parts of "fail fast, say why": which replica start-up failures are retried, the exit codes
the replica and the controller agree on, and how the CLI reads a spec file."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from aicloud.cli.common import UsageError, int_field, read_spec_file
from aicloud.controllers import replicas as controller
from aicloud.errors import UnavailableError, ValidationError
from aicloud.executors.base import ExitInfo
from aicloud.serving import replica


def test_the_replica_and_the_controller_agree_on_the_transient_exit_code() -> None:
    assert replica.TRANSIENT_EXIT == controller.TRANSIENT_EXIT == 75


@pytest.mark.parametrize(
    ("info", "transient"),
    [
        (ExitInfo("exited", exit_code=1), False),  # a traceback: it would fail again
        (ExitInfo("exited", exit_code=2), False),
        (ExitInfo("exited", exit_code=75), True),  # the control plane did not answer
        (ExitInfo("exited", exit_code=-9), True),  # the OOM killer
        (ExitInfo("exited", exit_code=None), True),
        (ExitInfo("lost"), True),
    ],
)
def test_which_ends_are_retried(info: ExitInfo, transient: bool) -> None:
    assert controller.is_transient(info) is transient


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (RuntimeError("no weights"), False),
        (ModuleNotFoundError("No module named 'torchvision'"), False),
        (ValidationError.field("service.entrypoint", "not a file"), False),
        (UnavailableError("connection to http://127.0.0.1:8420 failed"), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (httpx.ReadTimeout("slow"), True),
    ],
)
def test_a_startup_error_exits_with_the_code_that_says_whether_to_retry(
    exc: Exception, transient: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        raise exc
    except Exception as raised:
        code = replica._startup_failed(raised)
    assert code == (replica.TRANSIENT_EXIT if transient else replica.STARTUP_ERROR_EXIT)
    out = capsys.readouterr()
    assert "Traceback (most recent call last)" in out.err
    assert "[aicloud replica] could not start" in out.out and type(exc).__name__ in out.out


def test_a_spec_file_that_is_not_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "job.yaml"
    bad.write_text("kind: command\nspec:\n  command: [echo\n")
    with pytest.raises(UsageError, match=r"not valid YAML at line \d+, column \d+"):
        read_spec_file(bad, "the job spec")


def test_a_spec_file_must_be_a_readable_mapping(tmp_path: Path) -> None:
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n")
    with pytest.raises(UsageError, match="must be a mapping of fields, not list"):
        read_spec_file(listed, "the job spec")
    with pytest.raises(UsageError, match="cannot read the job spec"):
        read_spec_file(tmp_path / "missing.yaml", "the job spec")
    ok = tmp_path / "ok.json"
    ok.write_text('{"kind": "command", "priority": 3}')
    doc = read_spec_file(ok, "the job spec")
    assert int_field(doc, "priority", 0, ok) == 3 and int_field(doc, "other", 7, ok) == 7
    with pytest.raises(UsageError, match="kind must be a whole number"):
        int_field(doc, "kind", 0, ok)

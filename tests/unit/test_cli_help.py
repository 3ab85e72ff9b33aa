"""Every CLI command, argument and option says what it is for (`--help` is the CLI's manual)."""

from __future__ import annotations

from typing import Any

import typer.main

from aicloud.cli.main import app


def _root() -> Any:
    return typer.main.get_command(app)


def _commands(group: Any, prefix: str = "aicloud") -> list[tuple[str, Any]]:
    """(``aicloud deploy create``, its command), every group and command, depth first."""
    found: list[tuple[str, Any]] = []
    for name, command in sorted(getattr(group, "commands", {}).items()):
        path = f"{prefix} {name}"
        found.append((path, command))
        found += _commands(command, path)
    return found


def test_every_command_argument_and_option_has_help() -> None:
    root = _root()
    missing = []
    for path, command in _commands(root):
        if not (command.help or command.short_help):
            missing.append(f"{path}: no help text (a docstring or help=)")
        for param in command.params:
            if param.name == "help":
                continue
            if not getattr(param, "help", None):
                missing.append(f"{path}: {param.name} has no help=")
    assert not missing, "\n".join(missing)


def test_replica_flags_are_spelled_alike_with_aliases() -> None:
    root = _root()
    deploy = root.commands["deploy"]
    for name in ("create", "scale", "update"):
        opts = {o for p in deploy.commands[name].params for o in p.opts}
        assert {"--min-replicas", "--max-replicas", "--min", "--max"} <= opts, name


def test_the_cli_can_call_a_service_handler_and_start_on_a_port() -> None:
    root = _root()
    assert {"name", "handler", "body"} <= {p.name for p in root.commands["call"].params}
    assert "--port" in {o for p in root.commands["up"].params for o in p.opts}

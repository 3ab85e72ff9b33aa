"""What every CLI command shares: the client, output as tables or JSON, error printing."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from aicloud.client import Client

console = Console()
err_console = Console(stderr=True)


class Output(enum.StrEnum):
    table = "table"
    json = "json"


OutputOpt = typer.Option(Output.table, "--output", "-o", help="table (default) or json")


def client() -> Client:
    return Client()


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return {
            k: to_jsonable(getattr(value, k)) for k in value.__dataclass_fields__ if not k.startswith("_")
        }
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(to_jsonable(value), indent=2, default=str))


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    return t


def emit(value: Any, output: Output, render: Callable[[Any], None]) -> None:
    """JSON for ``--output json``; otherwise the command's own Rich rendering."""
    if output is Output.json:
        print_json(value)
    else:
        render(value)


def fmt_num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def split_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name:version`` → (name, version or None)."""
    name, _, version = ref.partition(":")
    if not version or version == "latest":
        return name, None
    if not (version.isascii() and version.isdigit()):
        raise typer.BadParameter(f"{ref!r}: the version after ':' must be a number or 'latest'")
    return name, int(version)

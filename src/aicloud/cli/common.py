"""What every CLI command shares: the client, output as tables or JSON, spec files, error printing.

Errors: :func:`run` runs the whole command line and turns every error that is the user's to fix
into one red line on stderr, never a traceback: a typed error from the server or the SDK
(:class:`~aicloud.errors.AicloudError`: ``error (code): message``, exit 1), and a mistake in what
was given to the CLI (:class:`UsageError`: a spec file that is missing, not YAML, or not a mapping; a
bad value in it; a file that cannot be read: ``error: ...``, exit 2). Typer reports bad flags
itself (exit 2). Anything else is a bug in aicloud and keeps its traceback.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from aicloud.client import Client
from aicloud.client.extras import MissingExtraError
from aicloud.errors import AicloudError

console = Console()
err_console = Console(stderr=True)


class UsageError(Exception):
    """Something given to the CLI (a spec file, a value in it) is wrong; the message says what to fix."""


def run(app: typer.Typer, prog_name: str) -> None:
    """Run the command line; user errors become one red line and exit code 1 or 2 (module docstring)."""
    try:
        app(prog_name=prog_name)
    except AicloudError as exc:
        err_console.print(f"[red]error ({exc.code}):[/] {escape(exc.message)}", highlight=False)
        raise SystemExit(1) from None
    except UsageError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise SystemExit(2) from None
    except MissingExtraError as exc:  # `aicloud server` on the thin install: which extra to install
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise SystemExit(1) from None
    except OSError as exc:  # a file named on the command line that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(f"[red]error:[/] {escape(where + (exc.strerror or str(exc)))}", highlight=False)
        raise SystemExit(2) from None


def read_spec_file(path: Path, what: str) -> dict[str, Any]:
    """The mapping in a YAML or JSON file (``what`` names it in errors: "the job spec"); a
    :class:`UsageError` saying what to fix when it cannot be read, does not parse or is no mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot read {what} {path}: {reason}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{path} is not valid YAML{where}: {problem}; fix {what} and try again") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: {what} must be a mapping of fields, not {type(doc).__name__}")
    return doc


def int_field(doc: dict[str, Any], key: str, default: int, path: Path) -> int:
    """``doc[key]`` as a whole number (``default`` when absent); a :class:`UsageError` otherwise."""
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{path}: {key} must be a whole number, not {value!r}")
    return value


class Output(enum.StrEnum):
    table = "table"
    json = "json"


OutputOpt = typer.Option(Output.table, "--output", "-o", help="table (default) or json")
OffsetOpt = typer.Option(0, "--offset", min=0, help="skip this many (the start of a page)")
LimitOpt = typer.Option(100, "--limit", min=1, max=1000, help="show at most this many (up to 1,000)")


def page_hint(shown: int, offset: int, limit: int) -> None:
    """Say how to see the next page when a list filled its page (stderr: JSON output stays clean)."""
    if shown >= limit:
        nxt = f"--offset {offset + limit} --limit {limit}"
        Console(stderr=True).print(f"[dim]{shown} shown from {offset}; the next page: {nxt}[/dim]")


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
    """A table of data: its cells are text, never Rich markup (a name or a CSV column with ``[/]`` in
    it is printed as it is)."""
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(Text(c))
    for r in rows:
        t.add_row(*(Text("" if v is None else str(v)) for v in r))
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

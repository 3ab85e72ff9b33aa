"""``aicloud secret|token|workspace ...`` and ``aicloud admin rotate-key``."""

from __future__ import annotations

import sys

import typer

from aicloud.cli.common import Output, OutputOpt, client, console, emit, table

secret_app = typer.Typer(
    help="Encrypted values injected into workloads; never shown again.", no_args_is_help=True
)
token_app = typer.Typer(help="Bearer tokens of this workspace (admin).", no_args_is_help=True)
workspace_app = typer.Typer(help="Workspaces (tenants).", no_args_is_help=True)


@secret_app.command("create")
def secret_create(
    name: str = typer.Argument(..., help="the secret's name: a job gets it as an env var of that name"),
    value: str | None = typer.Option(None, help="the value; default: read from stdin or prompt (hidden)"),
) -> None:
    """Create a secret. Prefer stdin or the prompt over --value (shell history keeps arguments)."""
    if value is None:
        value = (
            sys.stdin.read().rstrip("\n")
            if not sys.stdin.isatty()
            else typer.prompt("value", hide_input=True)
        )
    s = client().secrets.create(name, value)
    console.print(f"created secret {s.name}")


@secret_app.command("list")
def secret_list(output: Output = OutputOpt) -> None:
    """Names of the workspace's secrets (values are never returned)."""
    items = client().secrets.list()
    emit(
        items,
        output,
        lambda xs: console.print(
            table(
                "secrets",
                ["name", "created"],
                [[s.name, s.created_at.isoformat(timespec="seconds")] for s in xs],
            )
        ),
    )


@secret_app.command("delete")
def secret_delete(name: str = typer.Argument(..., help="the secret")) -> None:
    """Delete a secret; jobs started later no longer get it."""
    client().secrets.delete(name)
    console.print(f"deleted secret {name}")


@token_app.command("create")
def token_create(
    name: str = typer.Argument(..., help="a name for the token (shown in usage by user)"),
    role: str = typer.Option("member", help="viewer, member or admin"),
    expires_in_days: int | None = typer.Option(None, help="days until it expires (default: never)"),
    scope: str | None = typer.Option(
        None, help="metrics: a scrape token for Prometheus only (docs/metrics.md)"
    ),
    output: Output = OutputOpt,
) -> None:
    """Create a token. It is printed once; only its hash is stored."""
    t = client().tokens.create(name, role=role, expires_in_days=expires_in_days, scope=scope)

    def render(_: object) -> None:
        console.print(f"token {t.name} ({t.role.value}) id {t.id}")
        console.print("[bold]Save it now; it cannot be shown again:[/]")
        typer.echo(t.token)

    emit(t, output, render)


@token_app.command("list")
def token_list(output: Output = OutputOpt) -> None:
    """The workspace's tokens: id, name, role, scope, expiry (never the secret)."""
    items = client().tokens.list()
    emit(
        items,
        output,
        lambda xs: console.print(
            table(
                "tokens",
                ["id", "name", "role", "created", "expires"],
                [
                    [
                        t.id,
                        t.name,
                        t.role.value,
                        t.created_at.isoformat(timespec="seconds"),
                        t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never",
                    ]
                    for t in xs
                ],
            )
        ),
    )


@token_app.command("delete")
def token_delete(
    token_id: str = typer.Argument(..., help="the token's id (see `aicloud token list`)"),
) -> None:
    """Revoke a token by id."""
    client().tokens.delete(token_id)
    console.print(f"deleted token {token_id}")


@workspace_app.command("create")
def workspace_create(
    name: str = typer.Argument(..., help="the new workspace"), output: Output = OutputOpt
) -> None:
    """Create a workspace and its first admin token (needs an admin token of 'default')."""
    created = client().workspaces.create(name)

    def render(_: object) -> None:
        console.print(
            f"workspace {created.workspace.name} ({created.workspace.id}); admin token, shown once:"
        )
        typer.echo(created.admin_token.token)

    emit(created, output, render)


@workspace_app.command("list")
def workspace_list(output: Output = OutputOpt) -> None:
    """Every workspace (needs an admin token of 'default')."""
    items = client().workspaces.list()
    emit(
        items,
        output,
        lambda xs: console.print(
            table(
                "workspaces",
                ["id", "name", "created"],
                [[w.id, w.name, w.created_at.isoformat(timespec="seconds")] for w in xs],
            )
        ),
    )


def rotate_key() -> None:
    """Make a new master key current and rewrap every data key; data is not re-encrypted."""
    out = client().admin.rotate_key()
    console.print(f"rewrapped {out.blobs_rewrapped} blob keys and {out.secrets_rewrapped} secrets")

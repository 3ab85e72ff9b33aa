"""``aicloud bundle create | verify | key`` and ``aicloud edge serve`` (docs/edge.md).

``bundle create`` asks the control plane for a signed bundle of a version; ``bundle verify`` and
``edge serve`` check one offline against a public key given with ``--key`` (a file, or the key's
text: ``ed25519:<base64>`` or PEM, as ``aicloud bundle key`` prints it). ``edge serve`` needs
``aicloud[edge]`` and no control plane.
"""

from __future__ import annotations

from pathlib import Path

import typer

from aicloud.cli.common import Output, OutputOpt, UsageError, client, console, emit
from aicloud.client.extras import MissingExtraError

bundle_app = typer.Typer(help="Signed model bundles for the edge (docs/edge.md).", no_args_is_help=True)
edge_app = typer.Typer(help="Serve bundles on an edge machine, offline.", no_args_is_help=True)

KEY_HELP = "the workspace's public key: a file, or 'ed25519:<base64>' (`aicloud bundle key`)"


def _bundle_module():  # type: ignore[no-untyped-def]
    try:
        from aicloud.artifacts import bundle
    except ModuleNotFoundError as exc:  # pragma: no cover - cryptography is in [edge] and [server]
        raise MissingExtraError("aicloud bundle verify", "edge", [exc.name or str(exc)]) from exc
    return bundle


@bundle_app.command("create")
def bundle_create(
    ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS"),
    out: Path = typer.Option(..., "-o", "--output-file", help="where to write the bundle"),
) -> None:
    """Write a version as a signed bundle: its ONNX model (a built-in version is exported on the
    server first), config, signature and a manifest of sha256 digests signed by the workspace."""
    with console.status(f"bundling {ref} on the server…"):
        path = client().models.bundle(ref, out)
    console.print(f"[green]wrote[/] {path} ({path.stat().st_size:,} bytes)")


@bundle_app.command("verify")
def bundle_verify(
    file: Path = typer.Argument(..., help="the bundle"),
    key: str = typer.Option(..., "--key", help=KEY_HELP),
    output: Output = OutputOpt,
) -> None:
    """Check a bundle's signature and every member's digest (offline); exit 1 naming what failed."""
    b = _bundle_module()
    verified = b.open_bundle(file, b.read_public_key(key))
    m = verified.manifest
    emit(
        m,
        output,
        lambda _: console.print(
            f"[green]verified[/] {file}: {m.get('model')}:{m.get('version')} of workspace "
            f"{(m.get('workspace') or {}).get('name')}, signed by key {m.get('key_id')}, "
            f"{len(m.get('files') or {})} members"
        ),
    )


@bundle_app.command("key")
def bundle_key(
    out: Path | None = typer.Option(None, "-o", "--output-file", help="write the key to this file"),
    output: Output = OutputOpt,
) -> None:
    """The public key that signs this workspace's bundles (for `--key`)."""
    info = client().workspaces.signing_key()
    if out is not None:
        out.write_text(info.public_key + "\n")
    emit(info, output, lambda _: console.print(info.public_key, highlight=False, soft_wrap=True))


@edge_app.command("serve")
def edge_serve(
    file: Path = typer.Argument(..., help="the bundle"),
    key: str = typer.Option(..., "--key", help=KEY_HELP),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="the port to listen on"),
    host: str = typer.Option("127.0.0.1", "--host", help="the address to listen on"),
    token: str | None = typer.Option(None, "--token", help="require 'Authorization: Bearer TOKEN'"),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="as --token, read from this file (kept out of the process list)"
    ),
) -> None:
    """Verify a bundle and serve it offline: /predict and the Open Inference Protocol (/v2)."""
    if token_file is not None:
        if token is not None:
            raise UsageError("give --token or --token-file, not both")
        token = token_file.read_text().strip()
        if not token:
            raise UsageError(f"{token_file} is empty")
    b = _bundle_module()
    public_key = b.read_public_key(key)
    try:
        from aicloud.edge.serve import load_edge, run
    except ModuleNotFoundError as exc:
        raise MissingExtraError("aicloud edge serve", "edge", [exc.name or str(exc)]) from exc
    server = load_edge(file, public_key, token)
    m = server.bundle.manifest
    console.print(
        f"serving {m.get('model')}:{m.get('version')} (verified, key {m.get('key_id')}) on "
        f"http://{host}:{port} ({'token required' if token else 'no token'})",
        highlight=False,
    )
    run(server, host, port)

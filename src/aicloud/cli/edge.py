"""``aicloud bundle create | verify | key`` and ``aicloud edge serve`` (docs/edge.md).

``bundle create`` asks the control plane for a signed bundle of a version; ``bundle verify`` and
``edge serve`` check one offline against a public key given with ``--key`` (a file, or the key's
text: ``ed25519:<base64>`` or PEM, as ``aicloud bundle key`` prints it). ``edge serve`` needs
``aicloud[edge]`` and no control plane.
"""

from __future__ import annotations

from pathlib import Path

import typer

from aicloud.cli.common import Output, OutputOpt, UsageError, client, console, emit, table
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
    key: str | None = typer.Option(
        None, "--key", help=f"{KEY_HELP}; default: the key pinned by `aicloud edge join`"
    ),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="the port to listen on"),
    host: str = typer.Option("127.0.0.1", "--host", help="the address to listen on"),
    token: str | None = typer.Option(None, "--token", help="require 'Authorization: Bearer TOKEN'"),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="as --token, read from this file (kept out of the process list)"
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="the model's intra-op threads (default: this machine's CPUs)"
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
    public_key = b.read_public_key(key) if key is not None else _pinned()
    try:
        from aicloud.edge.serve import load_edge, run
    except ModuleNotFoundError as exc:
        raise MissingExtraError("aicloud edge serve", "edge", [exc.name or str(exc)]) from exc
    server = load_edge(file, public_key, token, threads=threads)
    m = server.bundle.manifest
    console.print(
        f"serving {m.get('model')}:{m.get('version')} (verified, key {m.get('key_id')}) on "
        f"http://{host}:{port} ({'token required' if token else 'no token'})",
        highlight=False,
    )
    run(server, host, port)


# --- edge nodes: join, pull, list (docs/edge.md)


def _pinned() -> bytes:
    from aicloud.edge.node import edge_home, pinned_key

    key = pinned_key()
    if key is None:
        raise UsageError(f"give --key (no key pinned at {edge_home()}: this machine has not joined)")
    return key


def _labels(values: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            k, sep, v = item.partition("=")
            if not sep or not k.strip():
                raise UsageError(f"--labels: expected KEY=VALUE[,KEY=VALUE...], got {item!r}")
            labels[k.strip()] = v.strip()
    return labels


def _default_name() -> str:
    import re
    import socket

    return re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower()).strip("-")[:63] or "edge"


@edge_app.command("join")
def edge_join(
    url: str = typer.Argument(..., help="the control plane's URL"),
    token: str = typer.Option(..., "--token", help="a member token of the workspace (used once)"),
    labels: list[str] = typer.Option([], "--labels", help="KEY=VALUE[,KEY=VALUE...], e.g. site=shop1"),
    name: str | None = typer.Option(None, "--name", help="the node's name (default: the host name)"),
) -> None:
    """Register this machine as an edge node: keeps its own token and pins the workspace's key."""
    from aicloud.edge.node import edge_home, join

    state = join(url, token, name or _default_name(), _labels(labels))
    shown = ",".join(f"{k}={v}" for k, v in state.labels.items()) or "no labels"
    console.print(
        f"[green]joined[/] {state.url} as edge node {state.name} ({state.node_id}, {shown}); "
        f"pinned signing key {state.key_id} in {edge_home()}",
        highlight=False,
    )


@edge_app.command("pull")
def edge_pull(ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS")) -> None:
    """Pull a model's signed bundle as this node, verify it with the pinned key, keep it on disk."""
    from aicloud.edge.node import pull

    with console.status(f"pulling {ref}…"):
        path, manifest = pull(ref)
    console.print(
        f"[green]pulled[/] {manifest.get('model')}:{manifest.get('version')} (verified) to {path}",
        highlight=False,
    )


@edge_app.command("list")
def edge_list() -> None:
    """The bundles this node holds and whether each verifies with the pinned key; with an agent, what
    it was assigned and on which port."""
    from aicloud.edge.agent_state import NodeDisk
    from aicloud.edge.node import local_bundles

    rows = [
        [
            p.name,
            f"{m.get('model')}:{m.get('version')}" if m else "-",
            "yes" if m else "NO",
            f"{p.stat().st_size:,}",
        ]
        for p, m in local_bundles()
    ]
    console.print(table(None, ["file", "model", "verified", "bytes"], rows))
    disk = NodeDisk()
    if disk.agent_file.exists():
        placed = disk.load().assignments.values()
        rows = [
            [
                p.deployment,
                f"{p.model}:{p.version}",
                p.replica_id,
                str(p.port),
                disk.bundle_path(p.version_id).name,
            ]
            for p in placed
        ]
        console.print(table("agent assignments", ["deployment", "model", "replica", "port", "bundle"], rows))


@edge_app.command("agent")
def edge_agent(
    advertise: str | None = typer.Option(
        None,
        "--advertise",
        help="http://HOST where the control plane's gateway reaches this node's replicas, each on its "
        "port (with --host 0.0.0.0 or that address); default: none, the replicas serve local traffic only",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="the address the replicas listen on"),
    ports: str = typer.Option("18100-18199", "--ports", help="LOW-HIGH: the ports the replicas are given"),
) -> None:
    """Run this node's agent in the foreground: serve the deployments placed on this node (each
    replica an `edge serve` child with its serve key), keep serving from disk while the control plane
    is unreachable, re-sync when it answers, report status. Ctrl-C or SIGTERM stops it and its
    replicas; a revoked node deletes its bundles and exits 1."""
    import re

    from aicloud.edge.agent_state import parse_ports

    if advertise is not None and not re.fullmatch(r"https?://(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+)", advertise):
        raise UsageError(
            f"--advertise: expected http://HOST (no port: each replica has its own), got {advertise!r}"
        )
    try:
        from aicloud.edge.agent import Agent
    except ModuleNotFoundError as exc:
        raise MissingExtraError("aicloud edge agent", "edge", [exc.name or str(exc)]) from exc
    code = Agent(advertise=advertise, host=host, ports=parse_ports(ports)).run()
    raise typer.Exit(code)


@edge_app.command("nodes")
def edge_nodes(output: Output = OutputOpt) -> None:
    """The edge nodes registered in this workspace (from the control plane)."""
    nodes = client().edge.nodes()
    rows = [
        [
            n.id,
            n.name,
            ",".join(f"{k}={v}" for k, v in n.labels.items()),
            n.status,
            str(n.last_seen_at or "-"),
            n.address or "-",
            f"{n.requests} ({n.errors} errors)",
        ]
        for n in nodes
    ]
    columns = ["id", "name", "labels", "status", "last seen", "address", "requests"]
    emit(nodes, output, lambda _: console.print(table(None, columns, rows)))


@edge_app.command("remove")
def edge_remove(node_id: str = typer.Argument(..., help="the node's id (`aicloud edge nodes`)")) -> None:
    """Remove a node and revoke its token: at its next pull it deletes its bundles."""
    client().edge.remove(node_id)
    console.print(f"[green]removed[/] edge node {node_id}")

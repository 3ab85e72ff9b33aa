"""``aicloud deploy ...`` and ``aicloud predict``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import typer

from aicloud.cli.common import Output, OutputOpt, UsageError, client, console, emit, print_json, table
from aicloud.client import Deployment

deploy_app = typer.Typer(
    help="Serve models and your own code as autoscaled HTTP endpoints.", no_args_is_help=True
)


def render_deployment(d: Deployment) -> None:
    info = d.info
    spec = info.spec
    source = spec.get("model") or (spec.get("service") or {}).get("entrypoint")
    console.print(f"[bold]{info.name}[/] {info.status.value}  {source}  generation {info.generation}")
    console.print(f"  url {d.url}")
    console.print(
        f"  replicas {len(info.replicas)} (desired {info.desired_replicas}, "
        f"min {spec.get('min_replicas')}, max {spec.get('max_replicas')}), "
        f"batch ≤ {spec.get('max_batch_size')}"
        f" within {spec.get('max_wait_ms')} ms, cpus {spec.get('cpus')}"
        f" ({spec.get('batch_workers') or 1} batch worker(s))"
    )
    for r in info.replicas:
        console.print(f"    {r.id} gen {r.generation} {r.state.value}")
    if info.message:  # not markup: a replica's log lines hold brackets ("[aicloud replica] ...")
        console.print("  " + info.message, style="red", markup=False, highlight=False)


@deploy_app.command("create")
def deploy_create(
    name: str,
    model: str | None = typer.Option(None, help="NAME, NAME:VERSION or NAME@ALIAS of a registered model"),
    service: Path | None = typer.Option(None, help="file or folder with your Service class"),
    entrypoint: str | None = typer.Option(None, help="file.py:ClassName inside --service"),
    min_replicas: int = typer.Option(1, help="0 lets it scale to zero when idle"),
    max_replicas: int = typer.Option(1),
    target_inflight: float = typer.Option(8, help="in-flight requests per replica the autoscaler aims for"),
    max_batch_size: int = typer.Option(32),
    max_wait_ms: float = typer.Option(5),
    idle_timeout_s: float = typer.Option(300),
    cpus: int = typer.Option(1, help="cpus of each replica (its intra-op threads)"),
    batch_workers: int = typer.Option(
        1,
        help="batches a replica runs at once, its cpus split among them (1: latency; --cpus: throughput)",
    ),
    wait: bool = typer.Option(True, help="wait until it serves"),
    output: Output = OutputOpt,
) -> None:
    """Deploy a model or a Service; prints the endpoint URL."""
    d = client().deployments.create(
        name,
        model=model,
        service=service,
        entrypoint=entrypoint,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_inflight=target_inflight,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        idle_timeout_s=idle_timeout_s,
        cpus=cpus,
        batch_workers=batch_workers,
    )
    if wait:
        with console.status(f"starting {name} …"):
            d.wait_ready()
    emit(d.info, output, lambda _: render_deployment(d))


@deploy_app.command("list")
def deploy_list(output: Output = OutputOpt) -> None:
    """The workspace's deployments: status, source, replicas."""
    items = client().deployments.list()
    emit(
        [d.info for d in items],
        output,
        lambda _: console.print(
            table(
                "deployments",
                ["name", "status", "source", "replicas", "generation"],
                [
                    [
                        d.name,
                        d.info.status.value,
                        d.info.spec.get("model") or "service",
                        len(d.info.replicas),
                        d.info.generation,
                    ]
                    for d in items
                ],
            )
        ),
    )


@deploy_app.command("show")
def deploy_show(name: str, output: Output = OutputOpt) -> None:
    """One deployment: its spec, endpoint URL and replicas."""
    d = client().deployments.get(name)
    emit(d.info, output, lambda _: render_deployment(d))


@deploy_app.command("scale")
def deploy_scale(
    name: str,
    min_replicas: int | None = typer.Option(None, "--min"),
    max_replicas: int | None = typer.Option(None, "--max"),
) -> None:
    """Change the replica range; the autoscaler works inside it."""
    d = client().deployments.get(name).scale(min_replicas, max_replicas)
    render_deployment(d)


@deploy_app.command("update")
def deploy_update(name: str, model: str = typer.Option(..., help="the model version to roll to")) -> None:
    """Roll replicas over to another model version with zero failed requests."""
    d = client().deployments.get(name).update(model=model)
    render_deployment(d)


@deploy_app.command("token")
def deploy_token(name: str, token_name: str = typer.Argument("endpoint")) -> None:
    """A token that can call only this endpoint (shown once)."""
    t = client().deployments.get(name).create_token(token_name)
    typer.echo(t.token)


@deploy_app.command("logs")
def deploy_logs(
    name: str,
    replica: str | None = typer.Option(None, help="one replica's id (see `aicloud deploy show`)"),
    lines: int = typer.Option(200, min=1, max=100_000, help="lines from the end of each log"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing what the replicas write"),
) -> None:
    """The end of each replica's log: the Service's prints and logging, handler tracebacks."""
    d = client().deployments.get(name)
    if follow:
        if replica is not None:
            raise typer.BadParameter("--follow shows every replica; leave out --replica")
        shown = None
        with contextlib.suppress(KeyboardInterrupt):
            for replica_id, text in d.iter_logs(follow=True, lines=lines):
                if replica_id != shown:
                    console.rule(f"replica {replica_id}")
                    shown = replica_id
                typer.echo(text, nl=False)
        return
    logs = d.logs(lines=lines, replica=replica)
    if not logs:
        console.print(f"{name} has no replicas now (scaled to zero?)")
    for replica_id, text in logs.items():
        console.rule(f"replica {replica_id}")
        typer.echo(text or "(empty)")


@deploy_app.command("delete")
def deploy_delete(name: str) -> None:
    """Drain and stop the replicas, then remove the deployment."""
    client().deployments.get(name).delete()
    console.print(f"deleting {name}")


def predict(
    name: str,
    input: Path = typer.Option(
        ...,
        "--input",
        "-i",
        exists=True,
        dir_okay=False,
        help='JSON: {"inputs": [...]} or a bare list of rows',
    ),
) -> None:
    """Send rows to a deployment's /predict and print the outputs as JSON."""
    try:
        data: Any = json.loads(input.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f'{input} is not JSON ({exc}); give {{"inputs": [...]}} or a list of rows') from None
    rows = data["inputs"] if isinstance(data, dict) and "inputs" in data else data
    print_json({"outputs": client().deployments.get(name).predict(rows)})

"""``aicloud deploy ...`` and ``aicloud predict``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import typer

from aicloud.cli.common import Output, OutputOpt, UsageError, client, console, emit, print_json, table
from aicloud.cli.deploy_file import given_flags, parse_env, read_deploy_file
from aicloud.cli.deployview import parse_placement, parse_traffic, render_deployment, source, wait_rolled
from aicloud.client import Deployment

deploy_app = typer.Typer(
    help="Serve models and your own code as autoscaled HTTP endpoints.", no_args_is_help=True
)

#: One spelling everywhere: --min-replicas/--max-replicas, with --min/--max accepted as aliases.
MIN_FLAGS = ("--min-replicas", "--min")
MAX_FLAGS = ("--max-replicas", "--max")


@deploy_app.command("create")
def deploy_create(
    ctx: typer.Context,
    name: str | None = typer.Argument(
        None, help="the deployment's name: its endpoint is /v1/endpoints/NAME (default: the file's name)"
    ),
    file: Path | None = typer.Option(
        None,
        "-f",
        "--file",
        dir_okay=False,
        help="a deployment file (YAML; docs/serving.md); flags override it",
    ),
    model: str | None = typer.Option(
        None,
        help="NAME, NAME:VERSION or NAME@ALIAS of a registered model (with --service: its self.model)",
    ),
    service: Path | None = typer.Option(None, help="file or folder with your Service class"),
    entrypoint: str | None = typer.Option(None, help="file.py:ClassName inside --service"),
    min_replicas: int = typer.Option(
        1, *MIN_FLAGS, help="fewest replicas; 0 lets it scale to zero when idle"
    ),
    max_replicas: int = typer.Option(1, *MAX_FLAGS, help="most replicas the autoscaler starts"),
    target_inflight: float = typer.Option(8, help="in-flight requests per replica the autoscaler aims for"),
    max_batch_size: int = typer.Option(32, help="rows one batch of the model (or a batched handler) takes"),
    max_wait_ms: float = typer.Option(5, help="how long a batch waits for more requests to fill up"),
    idle_timeout_s: float = typer.Option(300, help="idle seconds before it scales down to min-replicas"),
    cpus: int = typer.Option(1, help="cpus of each replica (its intra-op threads)"),
    batch_workers: int = typer.Option(
        1,
        help="batches a replica runs at once, its cpus split among them (1: latency; --cpus: throughput)",
    ),
    runtime: str | None = typer.Option(
        None,
        help="what runs the model (a Service's self.model too): auto (the fastest that matches, "
        "measured at start), torch, onnxruntime or numpy (the built-in MLP); unset: the version's own",
    ),
    placement: str | None = typer.Option(
        None,
        help="edge:site=shop1,zone=eu: run one replica on each edge node with these labels, "
        "not here (docs/edge.md)",
    ),
    env: list[str] = typer.Option(
        [], "--env", "-e", help="NAME=VALUE: an environment variable of each replica (repeatable)"
    ),
    secrets: list[str] = typer.Option(
        [], "--secret", help="a workspace secret, set as a variable of each replica (repeatable)"
    ),
    gpus: int = typer.Option(0, help="GPUs of each replica (more than this machine has is refused)"),
    memory: str | None = typer.Option(
        None, help="memory of each replica: MiB, or 512Mi, 2Gi (a sandbox limit)"
    ),
    requirements: Path | None = typer.Option(
        None,
        "--requirements",
        exists=True,
        dir_okay=False,
        help="requirements.txt installed into each replica's runtime env (docs/runtime-envs.md)",
    ),
    wait: bool = typer.Option(True, help="wait until it serves"),
    output: Output = OutputOpt,
) -> None:
    """Deploy a model or a Service (from flags or `-f deploy.yaml`); prints the endpoint URL.

    A name that exists already is refused: change it with `aicloud deploy update NAME --model ...`,
    or keep a file and run `aicloud deploy apply -f deploy.yaml`.
    """
    flags: dict[str, Any] = {
        "model": model,
        "service": service,
        "entrypoint": entrypoint,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "target_inflight": target_inflight,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "idle_timeout_s": idle_timeout_s,
        "cpus": cpus,
        "batch_workers": batch_workers,
        "runtime": runtime,
        "placement": _placement(placement),
        "env": parse_env(env),
        "secrets": secrets,
        "gpus": gpus,
        "memory": memory,
    }
    if file is not None:
        spec = {**read_deploy_file(file), **given_flags(ctx, flags)}
    else:
        spec = {k: v for k, v in flags.items() if v is not None}
    spec["name"] = name or spec.get("name")
    if not spec["name"]:
        raise typer.BadParameter("give the deployment's NAME, or a file with `name:` (-f deploy.yaml)")
    if requirements is not None:
        spec["requirements_file"] = requirements
    d = client().deployments.create(**spec)
    if wait:
        with console.status(f"starting {d.name} …"):
            d.wait_ready()
    emit(d.info, output, lambda _: render_deployment(d))


@deploy_app.command("apply")
def deploy_apply(
    file: Path = typer.Option(
        ..., "-f", "--file", dir_okay=False, help="the deployment file (YAML; docs/serving.md)"
    ),
    wait: bool = typer.Option(True, help="wait until it serves as the file says (new replicas ready)"),
    timeout: float = typer.Option(300, help="seconds to wait with --wait"),
    output: Output = OutputOpt,
) -> None:
    """Create the deployment a file describes, or update it to match the file (idempotent).

    The same file twice changes nothing; a new model, code or replica setting rolls the replicas
    over with zero failed requests; a scaling change alone keeps them.
    """
    spec = read_deploy_file(file)
    name = spec.pop("name", None)
    if not name:
        raise UsageError(f"{file}: the deployment file needs `name:` (its endpoint is /v1/endpoints/NAME)")
    d = client().deployments.apply(str(name), **spec)
    _show_changed(d, wait, timeout, output)


def _show_changed(d: Deployment, wait: bool, timeout: float, output: Output) -> None:
    """After a change: with ``wait``, show the roll until it is done; then the deployment."""
    if wait and output is Output.table:
        wait_rolled(d, timeout)
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
                        source(d.info),
                        sum(r.state.value != "failed" for r in d.info.replicas),
                        d.info.generation,
                    ]
                    for d in items
                ],
            )
        ),
    )


@deploy_app.command("show")
def deploy_show(name: str = typer.Argument(..., help="the deployment"), output: Output = OutputOpt) -> None:
    """One deployment: its spec, endpoint URL, replicas and, per version served, its share of the
    traffic and its request count, errors and p50/p99 latency (a canary side by side)."""
    d = client().deployments.get(name)
    emit(d.info, output, lambda _: render_deployment(d, d.metrics()))


@deploy_app.command("scale")
def deploy_scale(
    name: str = typer.Argument(..., help="the deployment"),
    min_replicas: int | None = typer.Option(None, *MIN_FLAGS, help="fewest replicas (0: scale to zero)"),
    max_replicas: int | None = typer.Option(None, *MAX_FLAGS, help="most replicas"),
) -> None:
    """Change the replica range; the autoscaler works inside it. Running replicas are kept."""
    if min_replicas is None and max_replicas is None:
        raise typer.BadParameter("give --min-replicas and/or --max-replicas")
    d = client().deployments.get(name).scale(min_replicas, max_replicas)
    render_deployment(d)


@deploy_app.command("update")
def deploy_update(
    name: str = typer.Argument(..., help="the deployment"),
    model: str | None = typer.Option(
        None, help="roll to this model (NAME, NAME:VERSION or NAME@ALIAS), with zero failed requests"
    ),
    min_replicas: int | None = typer.Option(None, *MIN_FLAGS, help="fewest replicas (0: scale to zero)"),
    max_replicas: int | None = typer.Option(None, *MAX_FLAGS, help="most replicas"),
    target_inflight: float | None = typer.Option(None, help="in-flight requests per replica to aim for"),
    max_batch_size: int | None = typer.Option(None, help="rows one batch takes"),
    max_wait_ms: float | None = typer.Option(None, help="how long a batch waits to fill up"),
    idle_timeout_s: float | None = typer.Option(None, help="idle seconds before scaling down"),
    traffic: str | None = typer.Option(
        None,
        help="canary: VERSION=WEIGHT pairs of the model's versions, e.g. 3=90,4=10 (see promote/rollback)",
    ),
    track_alias: bool | None = typer.Option(
        None, "--track-alias/--no-track-alias", help="with NAME@ALIAS: follow the alias when it moves"
    ),
    cpus: int | None = typer.Option(None, help="cpus of each replica"),
    batch_workers: int | None = typer.Option(None, help="batches a replica runs at once"),
    runtime: str | None = typer.Option(None, help="auto, torch, onnxruntime or numpy"),
    placement: str | None = typer.Option(
        None, help="edge:site=shop1,zone=eu: the edge nodes it runs on (a deployment placed on the edge)"
    ),
    env: list[str] = typer.Option(
        [], "--env", "-e", help="NAME=VALUE: replaces the replicas' environment variables (repeatable)"
    ),
    secrets: list[str] = typer.Option(
        [], "--secret", help="replaces the secrets set as variables of each replica (repeatable)"
    ),
    gpus: int | None = typer.Option(None, help="GPUs of each replica"),
    memory: str | None = typer.Option(None, help="memory of each replica: MiB, or 512Mi, 2Gi"),
    startup_timeout_s: float | None = typer.Option(None, help="seconds a replica may take to become ready"),
    wait: bool = typer.Option(True, help="wait until the new replicas serve and the old ones are gone"),
    timeout: float = typer.Option(300, help="seconds to wait with --wait"),
    output: Output = OutputOpt,
) -> None:
    """Change an existing deployment: its model, canary traffic, scaling, batching or replica settings.

    A new model or replica setting (batching, cpus, env, secrets, gpus, memory) starts replicas of a
    new generation and retires the old ones once the new serve; scaling and traffic alone keep the
    running replicas. `--traffic 3=90,4=10` starts a canary: version 4 gets replicas of its own and
    a tenth of the requests; end it with `aicloud deploy promote` or `aicloud deploy rollback`.
    """
    try:
        weights = parse_traffic(traffic) if traffic is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    changes = {
        k: v
        for k, v in {
            "model": model,
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_inflight": target_inflight,
            "max_batch_size": max_batch_size,
            "max_wait_ms": max_wait_ms,
            "idle_timeout_s": idle_timeout_s,
            "traffic": weights,
            "track_alias": track_alias,
            "cpus": cpus,
            "batch_workers": batch_workers,
            "runtime": runtime,
            "placement": _placement(placement),
            "env": parse_env(env) if env else None,
            "secrets": secrets or None,
            "gpus": gpus,
            "memory": memory,
            "startup_timeout_s": startup_timeout_s,
        }.items()
        if v is not None
    }
    if not changes:
        raise typer.BadParameter("nothing to change: give --model, --traffic or another setting to change")
    d = client().deployments.get(name).update(**changes)
    _show_changed(d, wait, timeout, output)


@deploy_app.command("promote")
def deploy_promote(
    name: str = typer.Argument(..., help="the deployment with a canary"),
    version: int | None = typer.Option(None, help="the version to keep (default: the canary)"),
    wait: bool = typer.Option(True, help="wait until the other version's replicas are gone"),
    timeout: float = typer.Option(300, help="seconds to wait with --wait"),
    output: Output = OutputOpt,
) -> None:
    """End a canary: serve its new version alone. Its replicas keep serving; the old version's are
    drained once enough are ready, with no failed request. A deployment of NAME@ALIAS moves the alias."""
    d = client().deployments.get(name).promote(version)
    _show_changed(d, wait, timeout, output)


@deploy_app.command("rollback")
def deploy_rollback(
    name: str = typer.Argument(..., help="the deployment with a canary"),
    wait: bool = typer.Option(True, help="wait until the canary's replicas are gone"),
    timeout: float = typer.Option(300, help="seconds to wait with --wait"),
    output: Output = OutputOpt,
) -> None:
    """End a canary: every request goes to the version the model names again; the canary's replicas
    are drained, with no failed request."""
    d = client().deployments.get(name).rollback()
    _show_changed(d, wait, timeout, output)


@deploy_app.command("token")
def deploy_token(
    name: str = typer.Argument(..., help="the deployment"),
    token_name: str = typer.Argument("endpoint", help="a name for the token"),
) -> None:
    """A token that can call only this endpoint (shown once)."""
    t = client().deployments.get(name).create_token(token_name)
    typer.echo(t.token)


@deploy_app.command("logs")
def deploy_logs(
    name: str = typer.Argument(..., help="the deployment"),
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
def deploy_delete(name: str = typer.Argument(..., help="the deployment")) -> None:
    """Drain and stop the replicas, then remove the deployment."""
    client().deployments.get(name).delete()
    console.print(f"deleting {name}")


def predict(
    name: str = typer.Argument(..., help="the deployment"),
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


def call(
    name: str = typer.Argument(..., help="the deployment serving a Service"),
    handler: str = typer.Argument(..., help="the handler (a @handler method's name)"),
    body: str = typer.Option(
        "{}", "--json", "-j", help='the handler\'s arguments as a JSON object, e.g. \'{"text": "hi"}\''
    ),
) -> None:
    """Call a Service handler (POST /v1/endpoints/NAME/HANDLER) and print its JSON answer."""
    try:
        args = json.loads(body)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(
            f'--json is not JSON ({exc.msg}); give an object such as \'{{"text": "hi"}}\''
        ) from None
    if not isinstance(args, dict):
        raise typer.BadParameter(
            '--json must be an object of the handler\'s parameters, e.g. \'{"text": "hi"}\''
        )
    print_json(client().deployments.get(name).call(handler, args))


def _placement(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        return parse_placement(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

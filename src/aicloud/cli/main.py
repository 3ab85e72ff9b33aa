"""The ``aicloud`` command (Typer + Rich). It talks to the control plane through the SDK only."""

from __future__ import annotations

import typer

from aicloud import __version__
from aicloud.cli import (
    alerts,
    compression,
    datasets,
    demo,
    edge,
    evaluation,
    jobs,
    local,
    monitoring,
    resources,
    runs,
    serving,
    sweeps,
    usage,
    zoo,
)
from aicloud.cli.common import err_console, run
from aicloud.errors import AicloudError

app = typer.Typer(
    help="aicloud: a self-hosted AI cloud. Start with `aicloud up`, then `aicloud demo`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
admin_app = typer.Typer(help="Server administration.", no_args_is_help=True)

app.command("server")(local.server)
app.command("up")(local.up)
app.command("down")(local.down)
app.command("status")(local.status)
app.command("login")(local.login)
app.command("demo")(demo.demo)
app.add_typer(datasets.app, name="dataset")
app.add_typer(resources.secret_app, name="secret")
app.add_typer(resources.token_app, name="token")
app.add_typer(resources.workspace_app, name="workspace")
app.add_typer(jobs.job_app, name="job")
app.add_typer(sweeps.sweep_app, name="sweep")
app.add_typer(serving.deploy_app, name="deploy")
app.command("predict")(serving.predict)
app.command("call")(serving.call)
app.command("usage")(usage.usage)
app.add_typer(monitoring.monitoring_app, name="monitoring")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(runs.run_app, name="run")
app.add_typer(jobs.model_app, name="model")
jobs.model_app.command("export")(compression.model_export)
jobs.model_app.command("quantize")(compression.model_quantize)
jobs.model_app.command("prune")(compression.model_prune)
jobs.model_app.command("compare")(compression.model_compare)
jobs.model_app.command("evaluate")(evaluation.model_evaluate)
jobs.model_app.command("predict")(evaluation.model_predict)
app.add_typer(edge.bundle_app, name="bundle")
app.add_typer(edge.edge_app, name="edge")
app.add_typer(zoo.zoo_app, name="zoo")
app.add_typer(admin_app, name="admin")
admin_app.command("rotate-key")(resources.rotate_key)
admin_app.command("migrate")(local.migrate)


@app.command("version")
def version() -> None:
    """Print the aicloud version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point: typed errors become one red line and exit code 1, never a traceback."""
    try:
        run(app, "aicloud")  # user errors: one red line, exit 1 or 2 (cli/common.py)
    except AicloudError as exc:
        err_console.print(f"[red]error ({exc.code}):[/] {exc.message}")
        raise SystemExit(1) from None

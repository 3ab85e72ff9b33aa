"""Waiting on an ``evaluate`` or ``batch_predict`` job (docs/evaluation.md): a Rich bar of rows scored
(the job's ``rows_done`` metric against the dataset's row count), its failure as an error, and the
predictions dataset version it wrote. Used by :meth:`aicloud.client.models.ModelsAPI.evaluate` and
``batch_predict`` and by the CLI."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aicloud.client._specs import TERMINAL
from aicloud.client.progress import steps_bar
from aicloud.errors import AicloudError

if TYPE_CHECKING:
    from aicloud.client import Client
    from aicloud.client.datasets import DatasetVersion
    from aicloud.client.jobs import Job

__all__ = ["job_failed", "predictions_of", "wait_rows"]


def _rows_done(job: Job) -> int:
    values = job.metrics("rows_done").get("rows_done", {}).get("values") or []
    return int(values[-1]) if values else 0


def wait_rows(client: Client, job: Job, progress: bool, timeout: float | None, poll_s: float = 0.5) -> Job:
    """Block until the job ends; with ``progress``, a bar of the rows done out of the dataset's."""
    deadline = None if timeout is None else time.monotonic() + timeout
    total: int | None = None
    data = (job.info.spec.get("resolved_datasets") or {}).get("data") or {}
    if progress and data:
        total = client.datasets.get(str(data["name"]), int(data["version"])).num_rows
    with steps_bar(progress) as bar:
        task = bar.add_task(job.name, total=total, info="pending")
        while job.status not in TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                raise AicloudError(f"job {job.id} did not finish within {timeout} s (it is {job.status})")
            if progress and job.info.run_id:
                bar.update(task, completed=_rows_done(job), info=f"{job.status} rows")
            time.sleep(poll_s)
        done = _rows_done(job) if progress and job.info.run_id else None
        bar.update(task, completed=done, info=job.status)
    return job


def job_failed(job: Job) -> AicloudError:
    """The error of a job that did not succeed: its status and last message."""
    message = job.info.message or job.info.reason or ""
    return AicloudError(f"job {job.id} ({job.name}) {job.status}: {message}".strip().rstrip(":"))


def predictions_of(client: Client, job: Job) -> DatasetVersion:
    """The dataset version a ``batch_predict`` job uploaded (its lineage names the job)."""
    name = str(job.info.spec.get("output"))
    for version in client.datasets.versions(name, limit=50, newest_first=True):
        if version.lineage.get("job_id") == job.id:
            return version
    raise AicloudError(f"job {job.id} succeeded but dataset {name!r} has no version from it")


def metrics_table(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, value) rows for a table, in a stable order."""
    order = ["accuracy", "f1_macro", "roc_auc", "rmse", "mae", "r2"]
    keys = sorted(metrics, key=lambda k: (order.index(k) if k in order else len(order), k))
    return [(k, f"{float(metrics[k]):.4f}") for k in keys]

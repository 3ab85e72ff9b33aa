"""Runs in the SDK: params, metric series, and side-by-side comparison; the calls a job's run is
tracked with (params, metric batches, finish)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aicloud.client.extras import MissingExtraError
from aicloud.schemas.jobs import MetricsOut, RunCompareOut, RunOut

if TYPE_CHECKING:
    import pandas as pd

    from aicloud.client import Client

RUNS = "/api/v1/runs"


def _run(run_id: str) -> str:
    return f"{RUNS}/{run_id}"


@dataclass(frozen=True)
class RunPage:
    """A page of runs and how many match in all (``Client.runs.page``)."""

    total: int
    runs: list[RunOut]


class RunsAPI:
    """``client.runs``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, run_id: str) -> RunOut:
        return RunOut.model_validate(self._client._transport.json("GET", _run(run_id)))

    def metrics(
        self, run_id: str, name: str | None = None, *, max_points: int | None = None
    ) -> dict[str, dict[str, list[Any]]]:
        """``{name: {"steps": [...], "values": [...], "timestamps": [...]}}``: every point, or at
        most ``max_points`` per series picked on the server by LTTB (the shape of the curve,
        spikes included)."""
        params: dict[str, Any] = {"name": name} if name else {}
        if max_points is not None:
            params["max_points"] = max_points
        out = MetricsOut.model_validate(
            self._client._transport.json("GET", f"{_run(run_id)}/metrics", params=params)
        )
        return {k: v.model_dump() for k, v in out.metrics.items()}

    def compare_series(
        self, run_ids: list[str], metrics: list[str] | None = None, *, max_points: int = 2000
    ) -> RunCompareOut:
        """Up to 10 runs side by side: their params, the names of the params that differ, and
        each run's ``metrics`` (default: all) downsampled to ``max_points`` points per series."""
        params: dict[str, Any] = {"ids": ",".join(run_ids), "max_points": max_points}
        if metrics is not None:
            params["metrics"] = ",".join(metrics)
        return RunCompareOut.model_validate(
            self._client._transport.json("GET", f"{RUNS}/compare", params=params)
        )

    def compare(self, run_ids: list[str]) -> pd.DataFrame:
        """One row per run: its params (``param.*``) and the last value of each metric (a pandas
        DataFrame: pandas comes with ``aicloud[server]`` or ``aicloud[train]``)."""
        try:
            import pandas as pd
        except ModuleNotFoundError as exc:
            raise MissingExtraError("Client.runs.compare", "train", ["pandas"]) from exc

        rows = []
        for run_id in run_ids:
            run = self.get(run_id)
            row: dict[str, Any] = {"run_id": run.id, "name": run.name, "status": run.status.value}
            row.update(
                {f"param.{k}": v if not isinstance(v, list | dict) else str(v) for k, v in run.params.items()}
            )
            row.update({k: v for k, v in run.summary.items() if not k.startswith("system/")})
            rows.append(row)
        return pd.DataFrame(rows).set_index("run_id")

    def list(
        self,
        job_id: str | None = None,
        limit: int = 100,
        *,
        job: str | None = None,
        model: str | None = None,
        status: str | None = None,
        metric: str | None = None,
        order: str = "best",
        offset: int = 0,
        name: str | None = None,
        filter: str | None = None,
        sort: str | None = None,
        columns: Sequence[str] | None = None,
        experiment: str | None = None,
    ) -> list[RunOut]:
        """Runs, newest first; the server filters, sorts and pages.

        ``job`` is a job id or name; ``model`` keeps the runs that train that model (or
        registered a version of it); ``status`` is running, succeeded, failed or cancelled;
        ``name`` keeps the runs whose name contains it; ``filter`` is comparisons joined by
        ``and``: ``"metrics.val_loss < 0.5 and params.optimizer = 'adam'"``. ``sort`` is
        ``metrics.<name>`` (its last value), ``params.<name>`` or ``created_at``; ``metric`` is
        short for ``sort="metrics.<metric>"``. ``order`` is best first (highest for
        accuracy-like metric names, lowest otherwise; newest for ``created_at``), ``"asc"`` or
        ``"desc"``; runs without the sort's metric or param come last. ``columns``
        (``["params.lr", "metrics.val_loss"]``) keeps only those params and metrics in each
        run's ``params`` and ``summary``. ``offset`` skips that many runs (the next page is
        ``offset + limit``); :meth:`page` also says how many runs match. ``experiment`` keeps
        the runs of that experiment (the MLflow tracking API's, docs/mlflow.md).
        """
        return self.page(
            job_id,
            limit,
            job=job,
            model=model,
            status=status,
            metric=metric,
            order=order,
            offset=offset,
            name=name,
            filter=filter,
            sort=sort,
            columns=columns,
            experiment=experiment,
        ).runs

    def page(
        self,
        job_id: str | None = None,
        limit: int = 100,
        *,
        job: str | None = None,
        model: str | None = None,
        status: str | None = None,
        metric: str | None = None,
        order: str = "best",
        offset: int = 0,
        name: str | None = None,
        filter: str | None = None,
        sort: str | None = None,
        columns: Sequence[str] | None = None,
        experiment: str | None = None,
    ) -> RunPage:
        """:meth:`list`'s page and ``total``, how many runs match the filters in all."""
        given = {
            "job_id": job_id,
            "job": job,
            "model": model,
            "status": status,
            "metric": metric,
            "name": name,
            "filter": filter,
            "sort": sort,
            "columns": None if columns is None else ",".join(columns),
            "experiment": experiment,
        }
        params: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        params.update(limit=limit, offset=offset, order=order)
        response = self._client._transport.request("GET", RUNS, params=params)
        runs = [RunOut.model_validate(r) for r in response.json()]
        return RunPage(total=int(response.headers.get("X-Total-Count", len(runs))), runs=runs)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Merge ``params`` (JSON values) into the run's params."""
        self._client._transport.json("POST", f"{_run(run_id)}/params", json={"params": dict(params)})

    def log_metrics(self, run_id: str, points: Sequence[Mapping[str, Any]]) -> None:
        """Append one batch of metric points (``{"name", "step", "value", "timestamp"}``, at most
        10,000). Tried once, whatever the transport's retry policy: the caller batches and retries
        (:class:`aicloud.training.tracking.BatchingSink`)."""
        self._client._transport.request(
            "POST", f"{_run(run_id)}/metrics", retry=False, json={"points": list(points)}
        )

    def finish(self, run_id: str, status: str) -> None:
        """Close the run as ``succeeded``, ``failed`` or ``cancelled``."""
        self._client._transport.json("POST", f"{_run(run_id)}/finish", json={"status": status})

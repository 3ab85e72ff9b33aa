"""Sweeps in the SDK: ``client.jobs.sweep(...)`` submits one, :class:`Sweep` follows it.

sweep = client.jobs.sweep(
    {"lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-1},
     "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]}},
    task="image-classification", dataset=train, eval_dataset=test, target="label",
    params={"epochs": 10}, model_name="digits-best", max_trials=20, parallelism=2,
)
sweep.wait(progress=True)
sweep.best.params, sweep.best.value        # the winner; its model is "digits-best"
sweep.trials().trials                      # every trial: state (complete, pruned...), values

Over your own code (trials are command jobs; the code reads its params with aicloud.training.params()
and logs the objective with aicloud.training.log_metric):

sweep = client.jobs.sweep(
    {"lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-1}},
    command="python train.py", code="./src", datasets={"train": digits},
    metric="val_loss", max_trials=8, parallelism=2,
)
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aicloud.client._specs import TERMINAL, dataset_ref, pack_code
from aicloud.client.jobs import Job
from aicloud.client.progress import steps_bar
from aicloud.errors import AicloudError
from aicloud.schemas.jobs import JobOut
from aicloud.schemas.runtime_env import expand_runtime_env
from aicloud.schemas.sweeps import SweepTrialsOut, TrialOut

if TYPE_CHECKING:
    from aicloud.client import Client

__all__ = ["Sweep", "submit_sweep"]


class Sweep(Job):
    """A submitted ``sweep`` job; its trials are ``train`` jobs (``command`` jobs over your own code)."""

    def __repr__(self) -> str:
        return f"Sweep(id={self.id!r}, name={self.name!r}, status={self._out.status.value!r})"

    def trials(self) -> SweepTrialsOut:
        """Every trial so far (number, job, state incl. ``pruned``, params, values, epochs) and the best."""
        out = self._client._transport.json("GET", f"/api/v1/jobs/{self.id}/trials")
        return SweepTrialsOut.model_validate(out)

    @property
    def best(self) -> TrialOut | None:
        """The complete trial with the best objective so far (None before one completes)."""
        return self.trials().best

    @property
    def best_params(self) -> dict[str, Any]:
        best = self.best
        return dict(best.params) if best is not None else {}

    def trial_job(self, number: int) -> Job:
        """Trial ``number``'s job (logs, metrics, its own model version)."""
        for trial in self.trials().trials:
            if trial.number == number:
                return self._client.jobs.get(trial.job_id)
        raise AicloudError(f"sweep {self.id} has no trial {number}")

    def wait(self, timeout: float | None = None, progress: bool = False, poll_s: float = 1.0) -> Sweep:
        """Block until the sweep ends; with ``progress`` a bar of trials ended and the best value.

        Raises AicloudError on timeout. A failed sweep is returned, not raised: check ``status``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        total = int(self._out.spec.get("max_trials") or 0) or None
        bar = steps_bar(progress)
        with bar:
            task = bar.add_task(self.name, total=total, info="pending")
            while self.status not in TERMINAL:
                if deadline is not None and time.monotonic() > deadline:
                    raise AicloudError(
                        f"sweep {self.id} did not finish within {timeout} s (it is {self.status})"
                    )
                if progress:
                    table = self.trials()
                    ended = sum(
                        t.state in ("complete", "pruned", "failed", "cancelled") for t in table.trials
                    )
                    pruned = sum(t.state == "pruned" for t in table.trials)
                    info = f"{pruned} pruned"
                    if table.best is not None and table.best.value is not None:
                        info += f"  best {table.metric}={table.best.value:.4g} (trial {table.best.number})"
                    bar.update(task, total=table.max_trials, completed=ended, info=info)
                time.sleep(poll_s)
            bar.update(task, info=self.status)
        return self


def _typed(value: str | dict[str, Any] | None, **extra: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    out = {"type": value} if isinstance(value, str) else dict(value)
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def submit_sweep(
    client: Client,
    space: dict[str, dict[str, Any]],
    *,
    task: str | None = None,
    dataset: Any = None,
    eval_dataset: Any = None,
    command: str | None = None,
    code: str | os.PathLike[str] | None = None,
    datasets: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    runtime_env: dict[str, Any] | None = None,
    args: bool = False,
    target: str = "label",
    params: dict[str, Any] | None = None,
    model_name: str | None = None,
    metric: str | None = None,
    direction: str | None = None,
    max_trials: int = 10,
    parallelism: int = 1,
    sampler: str | dict[str, Any] = "tpe",
    seed: int | None = None,
    pruner: str | dict[str, Any] = "asha",
    name: str | None = None,
    cpus: int = 1,
    priority: int = 0,
    features: list[str] | None = None,
    exclude: list[str] | None = None,
) -> Sweep:
    """Submit a sweep; see :meth:`aicloud.client.jobs.JobsAPI.sweep`."""
    if command is not None:
        base: dict[str, Any] = {
            "command": command,
            "code": None if code is None else os.fspath(code),
            "datasets": {k: dataset_ref(v) for k, v in (datasets or {}).items()},
            "params": params or {},
            "env": env or {},
            "cpus": cpus,
        }
        if runtime_env is not None:
            base["runtime_env"] = runtime_env
        spec: dict[str, Any] = {"command": base, "space": space, "args": args}
        return submit_sweep_spec(client, _search(spec, **_fields(locals())), name=name, priority=priority)
    if task is None:
        raise AicloudError("a sweep needs task=, dataset=, eval_dataset= (built-in) or command= (your code)")
    train: dict[str, Any] = {
        "task": task,
        "dataset": dataset_ref(dataset),
        "eval_dataset": dataset_ref(eval_dataset),
        "target": target,
        "params": params or {},
        "model_name": model_name,
        "cpus": cpus,
        "exclude": exclude or [],
    }
    if features is not None:
        train["features"] = features
    spec = {"train": train, "space": space}
    return submit_sweep_spec(client, _search(spec, **_fields(locals())), name=name, priority=priority)


def _fields(scope: dict[str, Any]) -> dict[str, Any]:
    keys = ("metric", "direction", "max_trials", "parallelism", "sampler", "seed", "pruner")
    return {k: scope[k] for k in keys}


def _search(
    spec: dict[str, Any],
    *,
    metric: str | None,
    direction: str | None,
    max_trials: int,
    parallelism: int,
    sampler: str | dict[str, Any],
    seed: int | None,
    pruner: str | dict[str, Any],
) -> dict[str, Any]:
    """The search fields of a sweep spec, added to ``spec``."""
    spec.update(
        max_trials=max_trials,
        parallelism=parallelism,
        sampler=_typed(sampler, seed=seed),
        pruner=_typed(pruner),
    )
    if metric is not None:
        spec["metric"] = metric
    if direction is not None:
        spec["direction"] = direction
    return spec


_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def prepare_command(client: Client, command: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """A sweep's command spec as the server takes it: ``code`` a local file or folder (relative to
    ``base``: the sweep file's folder) packed and uploaded as a command job's code, and a
    ``runtime_env`` with ``requirements_file`` expanded. A blob digest is kept as it is."""
    out = dict(command)
    code = out.get("code")
    if code is not None and not (isinstance(code, str) and _DIGEST.fullmatch(code)):
        path = Path(os.fspath(code))
        if base is not None and not path.is_absolute():
            path = base / path
        out["code"] = client.blobs.upload(pack_code(path), "application/gzip")
    if out.get("runtime_env") is not None:
        out["runtime_env"] = expand_runtime_env(out["runtime_env"], base=base)
    return out


def submit_sweep_spec(
    client: Client,
    spec: dict[str, Any],
    name: str | None = None,
    priority: int = 0,
    base: Path | None = None,
) -> Sweep:
    """Submit a sweep from a full spec (as in a ``kind: sweep`` file); a ``command`` spec's ``code``
    may be a local path (relative to ``base``), uploaded first (:func:`prepare_command`)."""
    if isinstance(spec.get("command"), dict):
        spec = {**spec, "command": prepare_command(client, spec["command"], base)}
    body = {"kind": "sweep", "name": name, "priority": priority, "spec": spec}
    return Sweep(client, JobOut.model_validate(client._transport.json("POST", "/api/v1/jobs", json=body)))

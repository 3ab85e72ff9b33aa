"""Jobs in the SDK: submit built-in training or your own code, wait with a progress bar, read logs."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aicloud.client._specs import TERMINAL, dataset_ref, pack_code
from aicloud.client.progress import steps_bar
from aicloud.errors import AicloudError, NotFoundError
from aicloud.schemas.jobs import JobOut
from aicloud.schemas.runtime_env import expand_runtime_env

if TYPE_CHECKING:
    from aicloud.client import Client
    from aicloud.client.models import RegisteredModel
    from aicloud.client.sweeps import Sweep

JOBS = "/api/v1/jobs"


def _job(job_id: str) -> str:
    return f"{JOBS}/{job_id}"


def _checkpoint(job_id: str) -> str:
    return f"{_job(job_id)}/checkpoint"


class Job:
    """A submitted job. Attributes reflect the last refresh; ``status`` refreshes while it is live."""

    def __init__(self, client: Client, out: JobOut) -> None:
        self._client = client
        self._out = out

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, name={self.name!r}, status={self._out.status.value!r})"

    @property
    def id(self) -> str:
        return self._out.id

    @property
    def name(self) -> str:
        return self._out.name

    @property
    def info(self) -> JobOut:
        return self._out

    @property
    def status(self) -> str:
        if self._out.status.value not in TERMINAL:
            self.refresh()
        return self._out.status.value

    @property
    def run_id(self) -> str | None:
        if self._out.run_id is None:
            self.refresh()
        return self._out.run_id

    @property
    def attempt(self) -> int:
        """Restarts so far (``max_restarts``)."""
        return self.refresh()._out.attempt

    @property
    def checkpoint(self) -> dict[str, Any]:
        """The latest checkpoint's record (``{"digest", "epoch", "step", ...}``); ``{}`` when none."""
        return self.refresh()._out.checkpoint

    def download_checkpoint(self, dest: str | os.PathLike[str]) -> Path:
        """Save the latest checkpoint file (safetensors; read it with
        :func:`aicloud.training.checkpoint.unpack`) to ``dest``."""
        path = Path(dest)
        with (
            self._client._transport.stream("GET", _checkpoint(self.id)) as r,
            open(path, "wb") as f,
        ):
            for chunk in r.iter_bytes(1 << 20):
                f.write(chunk)
        return path

    def refresh(self) -> Job:
        self._out = JobOut.model_validate(self._client._transport.json("GET", _job(self.id)))
        return self

    def cancel(self) -> Job:
        self._out = JobOut.model_validate(self._client._transport.json("POST", f"{_job(self.id)}/cancel"))
        return self

    def metrics(self, name: str | None = None) -> dict[str, dict[str, list[float]]]:
        """Metric series of the run: ``{name: {"steps", "values", "timestamps"}}``."""
        if self.run_id is None:
            return {}
        return self._client.runs.metrics(self.run_id, name)

    def logs(self) -> str:
        """The whole log so far."""
        return "".join(self.iter_logs(follow=False))

    def iter_logs(self, follow: bool = True, poll_s: float = 0.5) -> Iterator[str]:
        """Log text as it arrives; with ``follow`` it ends when the job has ended."""
        offset = 0
        while True:
            r = self._client._transport.request("GET", f"{_job(self.id)}/logs", params={"offset": offset})
            offset = int(r.headers.get("x-aicloud-log-offset", offset))
            if r.text:
                yield r.text
                continue  # more may be waiting right away
            if not follow or r.headers.get("x-aicloud-log-complete") == "1":
                return
            time.sleep(poll_s)

    @property
    def model_version(self) -> RegisteredModel | None:
        """The model version this job registered, if any."""
        if self._out.model_version_id is None:
            self.refresh()
        if self._out.model_version_id is None:
            return None
        return self._client.models.get_by_id(self._out.model_version_id)

    def wait(self, timeout: float | None = None, progress: bool = False, poll_s: float = 0.5) -> Job:
        """Block until the job ends; with ``progress`` draw a Rich bar with live metrics.

        Raises AicloudError on timeout. A failed job is returned, not raised: check ``status``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        spec = self._out.spec
        epochs = int((spec.get("params") or {}).get("epochs") or spec.get("epochs") or 0) or None
        bar = steps_bar(progress)
        env_phase = _EnvPhase(self) if progress and spec.get("runtime_env") else None
        with bar:
            task = bar.add_task(self.name, total=epochs, info="pending")
            while self.status not in TERMINAL:
                if deadline is not None and time.monotonic() > deadline:
                    raise AicloudError(
                        f"job {self.id} did not finish within {timeout} s (it is {self.status})"
                    )
                if env_phase is not None and self.status == "running" and not env_phase.done:
                    bar.update(task, description=f"{self.name} ({env_phase.poll()})")
                    if env_phase.done:
                        bar.update(task, description=self.name)
                elif progress and self._out.run_id:
                    run = self._client.runs.get(self._out.run_id)
                    shown = {k: v for k, v in run.summary.items() if not k.startswith("system/")}
                    info = "  ".join(f"{k}={v:.4g}" for k, v in list(shown.items())[:4])
                    done = len(self.metrics("train_loss").get("train_loss", {}).get("steps", []))
                    bar.update(task, completed=done, info=info or self.status)
                time.sleep(poll_s)
            bar.update(task, completed=epochs if self.status == "succeeded" else None, info=self.status)
        return self


class _EnvPhase:
    """The runtime-env phase of a job, read from its log (``[aicloud] runtime env ...`` lines) for the
    progress bar: ``building environment``, then done once it is built or cached."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.offset = 0
        self.done = False
        self.phase = "preparing environment"

    def poll(self) -> str:
        r = self.job._client._transport.request(
            "GET", f"{_job(self.job.id)}/logs", params={"offset": self.offset}
        )
        self.offset = int(r.headers.get("x-aicloud-log-offset", self.offset))
        for line in r.text.splitlines():
            if line.startswith("[aicloud] runtime env"):
                text = line.split(":", 1)[-1].strip()
                self.phase = "environment " + text.rstrip(".")
                self.done = text.startswith(("built", "cached", "build failed"))
            elif line and not line.startswith("  "):  # the workload's own output: the env is ready
                self.done = True
        return self.phase


class JobsAPI:
    """``client.jobs``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _submit(self, body: dict[str, Any]) -> Job:
        return Job(
            self._client,
            JobOut.model_validate(self._client._transport.json("POST", JOBS, json=body)),
        )

    def submit(
        self,
        kind: str,
        spec: dict[str, Any],
        *,
        name: str | None = None,
        priority: int = 0,
        code: str | os.PathLike[str] | None = None,
    ) -> Job:
        """Submit a job from its spec as a job file writes it (``kind`` ``train`` or ``command``; the
        fields of docs/training.md). The server checks every field: a wrong or unknown one is a
        :class:`~aicloud.errors.ValidationError` naming it (``spec.<field>``). ``code`` (a file or
        folder) is uploaded as a command job's code. A ``runtime_env`` may name a
        ``requirements_file`` (read here, relative to the current folder)."""
        spec = dict(spec)
        if spec.get("runtime_env") is not None:
            spec["runtime_env"] = expand_runtime_env(spec["runtime_env"])
        if code is not None:
            spec["code"] = self._client.blobs.upload(pack_code(code), "application/gzip")
        return self._submit({"kind": kind, "name": name, "priority": priority, "spec": spec})

    def train(
        self,
        task: str,
        dataset: Any,
        eval_dataset: Any,
        target: str,
        params: dict[str, Any] | None = None,
        model_name: str | None = None,
        name: str | None = None,
        cpus: int = 1,
        secrets: list[str] | None = None,
        priority: int = 0,
        workers: int = 1,
        gpus: int = 0,
        precision: str = "fp32",
        features: list[str] | None = None,
        exclude: list[str] | None = None,
        max_restarts: int = 0,
        checkpoint_every: int | None = None,
        limits: dict[str, int] | None = None,
    ) -> Job:
        """Train a built-in task (``tabular-classification``, ``tabular-regression``,
        ``image-classification``) and register the model as ``model_name``.

        ``workers`` > 1 trains with DistributedDataParallel (``cpus``/``gpus`` are per worker);
        ``precision="bf16"`` autocasts the forward passes; with ``max_restarts`` a failed job
        restarts from its latest checkpoint (every ``checkpoint_every`` epochs; default 1 then).
        ``limits`` (``memory_mb``, ``cpu_seconds``, ``processes``, ``open_files``) bound each worker
        in its sandbox. The model's inputs are every column but ``target``, or only ``features``, or
        all but ``exclude`` (an id, a leaky column); the model's signature lists exactly those.
        """
        spec: dict[str, Any] = {
            "task": task,
            "dataset": dataset_ref(dataset),
            "eval_dataset": dataset_ref(eval_dataset),
            "target": target,
            "params": params or {},
            "model_name": model_name,
            "cpus": cpus,
            "secrets": secrets or [],
            "workers": workers,
            "gpus": gpus,
            "precision": precision,
            "max_restarts": max_restarts,
            "limits": limits or {},
            "exclude": exclude or [],
        }
        if features is not None:
            spec["features"] = features
        if checkpoint_every is not None:
            spec["checkpoint_every"] = checkpoint_every
        return self._submit({"kind": "train", "name": name, "priority": priority, "spec": spec})

    def finetune(
        self,
        base: str,
        dataset: Any,
        eval_dataset: Any,
        *,
        task: str = "text-classification",
        text: str = "text",
        target: str = "label",
        method: str = "head",
        epochs: int | None = None,
        lr: float | None = None,
        name: str | None = None,
        model_name: str | None = None,
        priority: int = 0,
        **more: Any,
    ) -> Job:
        """Fine-tune a pretrained model version (``zoo/minilm``, ``zoo/digits-cnn``, your own
        ``name:3``) on a labelled dataset; the result registers as ``model_name`` (default: the job
        name) with lineage to its base (docs/finetuning.md).

        ``task="text-classification"``: ``method`` ``head`` (a linear head on the frozen encoder's
        embeddings: seconds), ``full`` (the whole encoder) or ``lora`` (low-rank adapters);
        ``text``/``target`` name the dataset's columns. ``task="image-classification"``: the CNN's
        last layer replaced for the new labels (``freeze=True`` trains only its head). Epochs and
        ``lr`` default by method; ``more``: ``batch_size``, ``max_length``, ``lora_rank``,
        ``lora_alpha``, ``freeze``, ``seed``, ``cpus``, ``limits``. A wrong field or a dataset
        without the text column is a :class:`~aicloud.errors.ValidationError` naming it.
        """
        spec: dict[str, Any] = {
            "base": base,
            "task": task,
            "dataset": dataset_ref(dataset),
            "eval_dataset": dataset_ref(eval_dataset),
            "text": text,
            "target": target,
            "method": method,
            "epochs": epochs,
            "lr": lr,
            "model_name": model_name,
            **more,
        }
        return self._submit({"kind": "finetune", "name": name, "priority": priority, "spec": spec})

    def run(
        self,
        command: str,
        code: str | os.PathLike[str] | None = None,
        datasets: dict[str, Any] | None = None,
        name: str | None = None,
        cpus: int = 1,
        secrets: list[str] | None = None,
        env: dict[str, str] | None = None,
        priority: int = 0,
        workers: int = 1,
        gpus: int = 0,
        max_restarts: int = 0,
        limits: dict[str, int] | None = None,
        runtime_env: dict[str, Any] | None = None,
        requirements: list[str] | None = None,
        requirements_file: str | os.PathLike[str] | None = None,
    ) -> Job:
        """Run your own command; ``code`` (a file or folder) is uploaded and becomes its working folder.

        ``requirements`` (``["lightgbm"]``), the lines of ``requirements_file``, or ``runtime_env``
        (``{"requirements": [...], "python": "3.11"}``) are installed into an environment of the job's
        own before it starts, on top of aicloud's packages (docs/runtime-envs.md).

        ``workers`` > 1 runs that many copies with the torchrun variables (``RANK``, ``WORLD_SIZE``,
        ``MASTER_ADDR``...); ``max_restarts`` restarts a failed job (resume with
        ``aicloud.training.load_checkpoint``). ``limits`` (``memory_mb``, ``cpu_seconds``,
        ``processes``, ``open_files``) bound each worker in its sandbox (docs/security.md)."""
        digest = None
        if code is not None:
            packed = pack_code(code)
            digest = self._client.blobs.upload(packed, "application/gzip")
        spec = {
            "command": command,
            "code": digest,
            "cpus": cpus,
            "secrets": secrets or [],
            "env": env or {},
            "datasets": {k: dataset_ref(v) for k, v in (datasets or {}).items()},
            "workers": workers,
            "gpus": gpus,
            "max_restarts": max_restarts,
            "limits": limits or {},
        }
        if env_spec := expand_runtime_env(runtime_env, requirements, requirements_file):
            spec["runtime_env"] = env_spec
        return self._submit({"kind": "command", "name": name, "priority": priority, "spec": spec})

    def sweep(self, space: dict[str, dict[str, Any]], **kwargs: Any) -> Sweep:
        """Search ``space`` (param → ``{"type": "uniform" | "log_uniform" | "int" | "categorical", ...}``)
        with trials of a built-in task; the best trial's model is registered as ``model_name``.

        Keywords: ``task``, ``dataset``, ``eval_dataset``, ``target``, ``params`` (the base params),
        ``model_name``, ``metric`` (default eval_accuracy / eval_loss), ``direction``, ``max_trials``,
        ``parallelism``, ``sampler`` (``tpe``, ``random``, ``grid`` or a dict), ``seed``, ``pruner``
        (``asha``, ``median``, ``none`` or a dict), ``name``, ``cpus``, ``priority``, ``features`` or
        ``exclude`` (the trials' input columns, as in :meth:`train`). See docs/sweeps.md.

        Over your own code: ``command`` (and ``code``, a file or folder uploaded as :meth:`run` does,
        ``datasets``, ``env``, ``runtime_env``, ``params``: the base params) in place of ``task`` and
        its datasets, with ``metric`` (required: what the code logs) and ``args=True`` to append
        ``--name=value`` per param; each trial is a command job that reads its params with
        ``aicloud.training.params()``.
        """
        from aicloud.client.sweeps import submit_sweep

        return submit_sweep(self._client, space, **kwargs)

    def get_sweep(self, job_id: str) -> Sweep:
        from aicloud.client.sweeps import Sweep

        out = JobOut.model_validate(self._client._transport.json("GET", _job(job_id)))
        return Sweep(self._client, out)

    def get(self, job_id: str) -> Job:
        return Job(self._client, JobOut.model_validate(self._client._transport.json("GET", _job(job_id))))

    def list(
        self, status: str | None = None, limit: int = 100, *, offset: int = 0, kind: str | None = None
    ) -> list[Job]:
        """Jobs, newest first, of a status or a kind (``sweep``): ``limit`` (up to 1,000) after ``offset``."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        params.update({k: v for k, v in (("status", status), ("kind", kind)) if v})
        items = self._client._transport.json("GET", JOBS, params=params)
        return [Job(self._client, JobOut.model_validate(j)) for j in items]

    def put_checkpoint(
        self, job_id: str, data: bytes, *, epoch: int | None = None, step: int | None = None
    ) -> dict[str, Any]:
        """Store ``data`` (a checkpoint file, :mod:`aicloud.training.checkpoint`) as the job's latest
        checkpoint; returns its record (``{"digest", "size", "epoch", "step", "attempt", "created_at"}``).
        A job token may do this only for its own job, and only while the job runs."""
        query = {k: v for k, v in (("epoch", epoch), ("step", step)) if v is not None}
        record: dict[str, Any] = self._client._transport.json(
            "PUT",
            _checkpoint(job_id),
            params=query,
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return record

    def get_checkpoint(self, job_id: str) -> bytes | None:
        """The job's latest checkpoint file, in memory; None when it has none."""
        try:
            return self._client._transport.request("GET", _checkpoint(job_id)).content
        except NotFoundError:
            return None

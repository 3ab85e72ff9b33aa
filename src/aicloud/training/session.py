"""The in-job session: tracking helpers for user code and the built-in tasks (params, metrics, models,
checkpoints), over the SDK's typed client (:class:`aicloud.client.Client`) and its transport.

    from aicloud.training import log_metric, log_params, save_model

    log_params({"lr": 1e-3, "epochs": 5})
    for epoch in range(5):
        ...
        log_metric("loss", loss, step=epoch)
    save_model(model, example_input=torch.zeros(1, 64))   # the one added line

Inside an aicloud job (``AICLOUD_RUN_ID`` and ``AICLOUD_URL`` set) metrics are buffered and posted to
``POST /api/v1/runs/{id}/metrics`` in batches (every second, or at 1000 points, on :func:`flush` and at
exit), and :func:`save_model` uploads the files as blobs and registers a model version.

Outside aicloud the same calls work offline: metrics are printed and appended to
``./aicloud-run/metrics.jsonl``, params to ``./aicloud-run/params.json``, and the model is written to
``./aicloud-model/``. So a plain PyTorch script runs unchanged in both places.

In a multi-worker job (``RANK`` > 0) params, metrics, models and checkpoints are rank 0's business:
on the other ranks these calls do nothing, so every rank can run the same script.
:func:`save_checkpoint` / :func:`load_checkpoint` keep a job's latest checkpoint on the control plane
(``PUT``/``GET /api/v1/jobs/{id}/checkpoint``; offline: ``./aicloud-run/checkpoint.safetensors``);
a job restarted after a failure (``max_restarts``) resumes from it.

One-off calls (params, model files, checkpoints, finishing the run) wait out a control plane that is
restarting: the session's transport retries them for :data:`aicloud.client.retry.RETRY_SECONDS`.
Metric batches are tried once each; :class:`aicloud.training.tracking.BatchingSink` retries them.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import operator
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsIndex

from aicloud.client import Client
from aicloud.client.http import Transport
from aicloud.client.retry import RETRY_SECONDS, retrying
from aicloud.errors import UnavailableError, ValidationError
from aicloud.training.env import WorkloadEnv
from aicloud.training.session_checkpoints import OFFLINE_RUN_DIR, SessionCheckpoints
from aicloud.training.tracking import BatchingSink, LocalSink, Point, SystemSampler

OFFLINE_MODEL_DIR = "aicloud-model"
MODEL_FILES = ("config.json", "model.safetensors", "model.onnx", "tokenizer.json", "adapter.safetensors")

if TYPE_CHECKING:
    from aicloud.training.checkpoint import Checkpoint


class Session(SessionCheckpoints):
    """The tracking state of one process: where metrics go, step counters, the API client."""

    def __init__(self, env: WorkloadEnv, *, workdir: Path | None = None, flush_interval: float = 1.0) -> None:
        self.env = env
        self.workdir = workdir or Path.cwd()
        self._steps: dict[str, int] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._samplers: list[SystemSampler] = []
        self.transport: Transport | None = None
        self._client: Client | None = None
        self.sink: BatchingSink | LocalSink
        if env.online:
            assert env.url is not None
            self.transport = Transport(env.url, env.token, timeout=60.0, retry_seconds=RETRY_SECONDS)
            self._client = Client(transport=self.transport)
            self.sink = BatchingSink(self._post_metrics, interval=flush_interval)
        else:
            self.sink = LocalSink(self.workdir / OFFLINE_RUN_DIR / "metrics.jsonl")
        self.closed = False

    @property
    def online(self) -> bool:
        return self.transport is not None

    @property
    def client(self) -> Client:
        """The typed API client over this session's transport (one-off calls retried while the control
        plane is unreachable); offline there is none: UnavailableError."""
        if self._client is None:
            raise UnavailableError("offline: AICLOUD_URL and AICLOUD_RUN_ID are not set")
        return self._client

    @property
    def run_id(self) -> str:
        """The job's run (online sessions only)."""
        if self.env.run_id is None:
            raise UnavailableError("offline: AICLOUD_URL and AICLOUD_RUN_ID are not set")
        return self.env.run_id

    @property
    def chief(self) -> bool:
        """Rank 0 (or a single-process job): the process whose params, metrics and models count."""
        return self.env.chief

    # --- params and metrics

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.chief:
            return
        clean = json.loads(json.dumps(dict(params), default=str))
        if self.transport is not None:
            self.client.runs.log_params(self.run_id, clean)
            return
        path = self.workdir / OFFLINE_RUN_DIR / "params.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged.update(clean)
        path.write_text(json.dumps(merged, indent=1) + "\n")
        print(f"[aicloud] params {json.dumps(clean)}", flush=True)

    def log_metric(self, name: str, value: Any, step: SupportsIndex | None = None) -> None:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValidationError.field(
                "name", "a metric name is a non-empty string of at most 200 characters"
            )
        number = float(value.item() if hasattr(value, "item") else value)
        index: int | None = None
        if step is not None:
            try:
                index = operator.index(step)
            except TypeError:
                index = -1
            if index < 0 or isinstance(step, bool):
                raise ValidationError.field("step", f"a step is an integer ≥ 0, got {step!r}")
        if not self.chief:
            return
        if not math.isfinite(number):
            if name not in self._warned:
                self._warned.add(name)
                print(
                    f"[aicloud] warning: metric {name!r} is {number}; non-finite values are skipped",
                    file=sys.stderr,
                )
            return
        with self._lock:
            if index is None:
                index = self._steps.get(name, -1) + 1
            self._steps[name] = max(index, self._steps.get(name, -1))
        self.sink.add({"name": name, "step": index, "value": number, "timestamp": time.time()})

    def _post_metrics(self, points: list[Point]) -> None:
        self.client.runs.log_metrics(self.run_id, points)

    def flush(self) -> None:
        self.sink.flush()

    def epoch_end(self) -> None:
        """An epoch's metrics are all logged: send them now, in the background."""
        self.sink.send_soon()

    def start_system_metrics(self, pid: int | None = None, interval: float = 5.0) -> SystemSampler:
        """Sample CPU and memory of ``pid``'s process tree (default: this process) every ``interval`` s."""
        sampler = SystemSampler(lambda n, v: self.log_metric(n, v), pid=pid, interval=interval).start()
        self._samplers.append(sampler)
        return sampler

    # --- models

    def save_model(
        self,
        module: Any,
        signature: Mapping[str, Any] | None = None,
        *,
        example_input: Any = None,
        dynamic_axes: Mapping[str, Any] | None = None,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        from aicloud.artifacts.architectures import is_builtin
        from aicloud.artifacts.format import save_builtin, save_onnx
        from aicloud.artifacts.keras_export import export_keras, final_metrics, is_keras_model

        if not self.chief:
            return {}
        cfg = dict(config or {})
        if signature is not None:
            cfg["signature"] = dict(signature)
        tmp = Path(tempfile.mkdtemp(prefix="aicloud-model-")) if self.online else None
        folder = tmp or self.workdir / OFFLINE_MODEL_DIR
        try:
            if is_keras_model(module):  # Keras' own ONNX export, checked against model.predict
                if dynamic_axes:
                    raise ValidationError.field(
                        "dynamic_axes", "a Keras model's free axes are its inputs' None dimensions"
                    )
                export_keras(module, folder, example_input, cfg)
                metrics = final_metrics(module) if metrics is None else metrics
            elif is_builtin(module):
                save_builtin(folder, module, cfg)
            else:
                example = example_input if example_input is not None else _example_from_signature(cfg)
                save_onnx(folder, module, example, cfg, dynamic_axes=dynamic_axes)
            return self.register_model(folder, name=name, metrics=metrics)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def register_model(
        self, folder: str | Path, *, name: str | None = None, metrics: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Register a model folder (config.json + weights) as a new version; returns the version JSON."""
        from aicloud.artifacts.format import read_config

        if not self.chief:
            return {}
        folder = Path(folder)
        config = read_config(folder)
        files = [f for f in MODEL_FILES if (folder / f).exists()]
        clean = {k: float(v) for k, v in (metrics or {}).items() if _finite(v)}
        name = name or self.env.default_model_name()
        if self.transport is None:
            digests = {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in files}
            print(f"[aicloud] model {name!r} saved to {folder} (offline: not registered)", flush=True)
            return {
                "name": name,
                "version": None,
                "path": str(folder),
                "files": digests,
                "config": config,
                "signature": config.get("signature") or {},
                "metrics": clean,
            }
        api = self.client
        uploaded = {f: api.blobs.upload((folder / f).read_bytes()) for f in files}
        version = api.models.register_version(
            name,
            uploaded,
            signature=config.get("signature") or {},
            config=config,
            metrics=clean,
            run_id=self.env.run_id,
            job_id=self.env.job_id,
        )
        print(f"[aicloud] registered model {name!r} version {version.get('version')}", flush=True)
        return version

    # --- the end

    def finish(self, status: str | None = "succeeded") -> None:
        """Send the remaining metrics and mark the run ``succeeded``, ``failed`` or ``cancelled``.

        With ``status`` None (or on ranks > 0) the run is left open: the control plane closes it
        with the job's final status (a job that will be restarted keeps its run).
        """
        for sampler in self._samplers:
            sampler.stop()
        self.sink.flush()
        if self.sink.pending:  # the control plane is unreachable: wait for it, as for the other calls
            retrying(self._drain, "sending the last metrics")
        if self.transport is not None and status is not None and self.chief:
            self.client.runs.finish(self.run_id, status)

    def _drain(self) -> None:
        self.sink.flush(retries=0)
        if self.sink.pending:
            raise UnavailableError(f"{self.sink.pending} metric points not sent yet")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sampler in self._samplers:
            sampler.stop()
        self.sink.close()
        if self.transport is not None:
            self.transport.close()


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _example_from_signature(config: Mapping[str, Any]) -> Any:
    import torch

    inputs = (config.get("signature") or {}).get("inputs") or []
    if len(inputs) == 1 and isinstance(inputs[0], Mapping) and inputs[0].get("shape"):
        return torch.zeros([1 if (d is None or int(d) < 0) else int(d) for d in inputs[0]["shape"]])
    if inputs:
        return torch.zeros(1, len(inputs))
    raise ValidationError.field(
        "example_input",
        "save_model needs example_input (one batch of the model's input, e.g. torch.zeros(1, 64)) "
        "or a signature with inputs, to export a custom nn.Module to ONNX",
    )


# -----------------------------------------------------------------------------------------------------
# the process-wide session behind the module functions

_session: Session | None = None
_session_lock = threading.Lock()
_atexit_registered = False


def session() -> Session:
    """The process's tracking session, created from the environment on first use."""
    global _session, _atexit_registered
    with _session_lock:
        if _session is None or _session.closed:
            _session = Session(WorkloadEnv.from_environ())
            if not _atexit_registered:
                atexit.register(_close_at_exit)
                _atexit_registered = True
        return _session


def use_session(new: Session | None) -> Session | None:
    """Replace the process's session (closing the old one); for the bootstrap and tests."""
    global _session, _atexit_registered
    with _session_lock:
        old, _session = _session, new
        if new is not None and not _atexit_registered:
            atexit.register(_close_at_exit)
            _atexit_registered = True
    if old is not None and old is not new:
        old.close()
    return new


def _close_at_exit() -> None:
    current = _session
    if current is not None:
        try:
            current.close()
        except Exception as exc:  # exiting anyway
            print(f"[aicloud] warning: could not send the last metrics: {exc}", file=sys.stderr)


def log_params(params: Mapping[str, Any]) -> None:
    """Record hyperparameters of the run (merged with earlier ones)."""
    session().log_params(params)


def log_metric(name: str, value: Any, step: SupportsIndex | None = None) -> None:
    """Record one metric point; ``step`` defaults to the metric's previous step + 1 (first: 0)."""
    session().log_metric(name, value, step)


def flush() -> None:
    """Send (or write) every buffered metric point now."""
    session().flush()


def save_model(
    module: Any,
    signature: Mapping[str, Any] | None = None,
    *,
    example_input: Any = None,
    dynamic_axes: Mapping[str, Any] | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Save a model and, inside a job, register it as a new model version; returns the version JSON.

    Built-in aicloud architectures are saved as safetensors + config.json; any other ``nn.Module`` is
    exported to ONNX, which needs ``example_input`` (one batch of its input, e.g. ``X[:2]``; for a
    ``forward`` of several tensors a dict of them by parameter name) or a ``signature`` with inputs.
    Its endpoint then takes rows of the input's shape, or objects of named tensors (docs/serving.md).
    ``dynamic_axes`` names the axes besides the batch that may take any length, e.g.
    ``{"input_ids": [1], "attention_mask": [1]}`` for an encoder of token sequences. The export is
    checked: ONNX Runtime's outputs on ``example_input`` must match the module's within 1e-4, else a
    ValidationError names the difference and nothing is registered; small examples are kept in the
    signature for every later check (compression, ``runtime: auto``).
    A Keras 3 model is exported with Keras' own ONNX export (:func:`aicloud.artifacts.keras_export.
    export_keras`: one input named ``input``, several by their names; ``example_input`` optional),
    checked against ``model.predict`` within 1e-4, with the last epoch's ``fit`` metrics as the
    version's metrics unless ``metrics`` is given (docs/keras.md).
    ``name`` defaults to the job spec's ``model_name``, else the job name.
    """
    return session().save_model(
        module,
        signature,
        example_input=example_input,
        dynamic_axes=dynamic_axes,
        name=name,
        config=config,
        metrics=metrics,
    )


def register_model(
    folder: str | Path, *, name: str | None = None, metrics: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Register an already saved model folder as a new version."""
    return session().register_model(folder, name=name, metrics=metrics)


def start_system_metrics(pid: int | None = None, interval: float = 5.0) -> SystemSampler:
    """Log ``system/cpu_percent`` and ``system/rss_mb`` of a process tree every ``interval`` seconds."""
    return session().start_system_metrics(pid, interval)


def save_checkpoint(
    state: Any,
    *,
    epoch: int | None = None,
    step: int | None = None,
    extra: Mapping[str, Any] | None = None,
    rng: bool = True,
) -> dict[str, Any]:
    """Save ``state`` (e.g. ``{"model": m.state_dict(), "optimizer": opt.state_dict()}``) as the job's
    latest checkpoint, with the RNG states unless ``rng=False``; returns its record.

    The format is safetensors + JSON (:mod:`aicloud.training.checkpoint`), never pickle. On ranks > 0
    of a multi-worker job it does nothing (returns ``{}``).
    """
    return session().save_checkpoint(state, epoch=epoch, step=step, extra=extra, rng=rng)


def load_checkpoint(*, restore_rng: bool = True) -> Checkpoint | None:
    """The job's latest checkpoint (``.state``, ``.epoch``, ``.step``, ``.extra``), or None.

    It restores the saved RNG states unless ``restore_rng=False``. Every rank may call it.
    """
    return session().load_checkpoint(restore_rng=restore_rng)

"""``aicloud.Model``: a Keras model trained, evaluated and run remotely (docs/keras.md, "The remote API").

    model = aicloud.Model(keras_model, target="rating")
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    history = model.fit(train, epochs=10, validation_data=test)   # a ``keras`` job; Keras' progress line
    model.evaluate(test)            # [loss, mae], as Keras returns it
    preds = model.predict(test)     # a numpy array, rows in the dataset's order
    model.deploy("recommender")     # a deployment of the version fit registered

The model travels as its JSON config (``model.to_json()``), never pickled; its trained weights stay
remote (a blob the fit job wrote) and evaluate/predict jobs load them. keras and numpy are imported
only when a Model is used, so ``import aicloud`` stays light.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aicloud.client._specs import TERMINAL
from aicloud.errors import AicloudError

if TYPE_CHECKING:
    from aicloud.client import Client
    from aicloud.client.deployments import Deployment
    from aicloud.client.jobs import Job

__all__ = ["History", "Model"]

WEIGHTS_PARAM = "keras_weights"  # as aicloud.schemas.keras_job names them
RESULT_PARAM = "keras_result"
_LOG_LINES = 30


class History:
    """What ``fit`` returns, as Keras' History: ``history`` (name → value per epoch) and ``epoch``."""

    def __init__(self, history: dict[str, list[float]], params: dict[str, Any], job: Job) -> None:
        self.history = history
        self.params = params
        self.epoch = list(range(max((len(v) for v in history.values()), default=0)))
        self.job = job

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


def _ref(data: Any) -> str:
    """A DatasetVersion or a ``name:version`` ref, as a ref."""
    ref = getattr(data, "ref", data)
    if not isinstance(ref, str) or not ref:
        raise TypeError(f"expected a DatasetVersion or a 'name:version' ref, got {type(data).__name__}")
    return ref


def _keras() -> Any:
    """keras, on the torch backend unless ``KERAS_BACKEND`` says otherwise (as in jobs)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def _jsonable(value: Any) -> Any:
    """A compile setting as JSON: strings as they are, Keras objects serialized (no code, no pickle)."""
    if value is None or isinstance(value, str | int | float | bool | dict):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    keras = _keras()
    with warnings.catch_warnings():  # numpy 2's copy= note on a variable's __array__
        warnings.simplefilter("ignore", DeprecationWarning)
        return json.loads(json.dumps(keras.saving.serialize_keras_object(value)))


class Model:
    """A ``keras.Model`` whose fit, evaluate and predict run as ``keras`` jobs on the control plane."""

    def __init__(
        self,
        model: Any,
        target: str | None = None,
        *,
        features: Sequence[str] | None = None,
        name: str | None = None,
        client: Client | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        cpus: int = 1,
    ) -> None:
        if client is None:
            from aicloud.client import Client

            client = Client()
        self.keras_model = model
        self.target = target
        self.features = list(features) if features is not None else None
        self.name = name
        self.runtime_env = dict(runtime_env) if runtime_env is not None else None
        self.cpus = cpus
        self._client = client
        self._compile: dict[str, Any] = {}
        self.weights: str | None = None  # the blob digest of the trained weights
        self.job: Job | None = None  # the last fit's job
        self.model_version: Any = None  # what the last fit registered

    # --- specs

    def compile(
        self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Sequence[Any] | None = None
    ) -> None:
        """Keep the compile settings (strings, or Keras objects serialized to JSON)."""
        self._compile = {
            "optimizer": _jsonable(optimizer),
            "loss": _jsonable(loss),
            "metrics": [_jsonable(m) for m in metrics or []],
        }

    def _spec(
        self, action: str, datasets: dict[str, str], target: str | None, **extra: Any
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "action": action,
            "model_config": self.keras_model.to_json(),
            "compile": self._compile,
            "datasets": datasets,
            "target": target or self.target,
            "cpus": self.cpus,
            **extra,
        }
        if self.features is not None:
            spec["features"] = self.features
        if self.runtime_env is not None:
            spec["runtime_env"] = self.runtime_env
        if action != "fit" or self.weights:
            spec["weights"] = self._trained()
        return spec

    def _trained(self) -> str:
        if not self.weights:
            raise AicloudError("the model has no trained weights yet: call fit first")
        return self.weights

    # --- running

    def _submit(self, spec: dict[str, Any], name: str | None = None) -> Job:
        return self._client.jobs.submit("keras", spec, name=name)

    def _finish(self, job: Job, timeout: float | None) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.status not in TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                raise AicloudError(f"job {job.id} did not finish within {timeout} s (it is {job.status})")
            time.sleep(0.5)
        return self._check(job)

    def _check(self, job: Job) -> Job:
        if job.status == "succeeded":
            return job
        tail = "\n".join(job.logs().splitlines()[-_LOG_LINES:])
        message = job.info.message or job.info.reason or ""
        raise AicloudError(
            f"keras job {job.id} {job.status}: {message}\n--- last lines of its log ---\n{tail}"
        )

    def _param(self, job: Job, name: str) -> str:
        run_id = job.refresh().run_id
        params = self._client.runs.get(run_id).params if run_id else {}
        if not params.get(name):
            raise AicloudError(f"keras job {job.id} succeeded but left no {name!r} on its run")
        return str(params[name])

    def fit(
        self,
        x: Any,
        epochs: int = 1,
        batch_size: int | None = None,
        validation_data: Any = None,
        validation_split: float = 0.0,
        verbose: Any = "auto",
        callbacks: Sequence[Any] | None = None,
        *,
        target: str | None = None,
        seed: int | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> History:
        """Train remotely on dataset version ``x`` (``validation_data`` another); Keras' progress line
        shows each epoch as the run logs it. Returns a History; the trained weights stay remote."""
        if callbacks:
            raise AicloudError("callbacks run in the job, not here: aicloud logs every epoch itself")
        datasets = {"train": _ref(x)}
        if validation_data is not None:
            datasets["validation"] = _ref(validation_data)
        fit = {"epochs": epochs, "batch_size": batch_size, "validation_split": validation_split, "seed": seed}
        spec = self._spec("fit", datasets, target, fit=fit, model_name=self.name or name)
        job = self._submit(spec, name)
        self.job = job
        history = self._follow(job, epochs, verbose, timeout)
        self._check(job)
        self.weights = self._param(job, WEIGHTS_PARAM)
        self.model_version = job.model_version
        return History(history, {"epochs": epochs, "verbose": verbose, "steps": None}, job)

    def _follow(self, job: Job, epochs: int, verbose: Any, timeout: float | None) -> dict[str, list[float]]:
        show = verbose not in (0, False)
        bar = None
        if show:
            bar = _keras().utils.Progbar(epochs, unit_name="epoch")
        deadline = None if timeout is None else time.monotonic() + timeout
        done = 0
        history: dict[str, list[float]] = {}
        while True:
            ended = job.status in TERMINAL
            if job.run_id:
                history = self._history(job)
                count = min((len(v) for v in history.values()), default=0)
                if bar is not None and count > done:
                    bar.update(count, values=[(k, v[count - 1]) for k, v in history.items()])
                done = max(done, count)
            if ended:
                return history
            if deadline is not None and time.monotonic() > deadline:
                raise AicloudError(f"job {job.id} did not finish within {timeout} s (it is {job.status})")
            time.sleep(1.0)

    def _history(self, job: Job) -> dict[str, list[float]]:
        series = job.metrics()
        out: dict[str, list[float]] = {}
        for name, points in series.items():
            if name.startswith(("system/", "eval_")):
                continue
            pairs = sorted(zip(points.get("steps") or [], points.get("values") or [], strict=False))
            out[name] = [float(v) for _, v in pairs]
        return out

    def evaluate(
        self,
        x: Any,
        batch_size: int | None = None,
        verbose: Any = "auto",
        return_dict: bool = False,
        *,
        target: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Evaluate the trained weights remotely on dataset version ``x``: the loss alone, a list
        ``[loss, metric...]``, or with ``return_dict`` a dict, as Keras returns it."""
        job = self._finish(
            self._submit(self._spec("evaluate", {"data": _ref(x)}, target, batch_size=batch_size)), timeout
        )
        body = json.loads(self._client.blobs.read(self._param(job, RESULT_PARAM)))
        result = dict(zip(body["names"], body["values"], strict=True))
        if return_dict:
            return result
        values = list(body["values"])
        return values[0] if len(values) == 1 else values

    def predict(
        self, x: Any, batch_size: int | None = None, verbose: Any = "auto", *, timeout: float | None = None
    ) -> Any:
        """Predict remotely on dataset version ``x``: a numpy array, one row per row of the dataset."""
        import numpy as np

        spec = self._spec("predict", {"data": _ref(x)}, None, batch_size=batch_size)
        job = self._finish(self._submit(spec), timeout)
        data = self._client.blobs.read(self._param(job, RESULT_PARAM))
        return np.load(io.BytesIO(data), allow_pickle=False)

    def deploy(self, name: str, **spec: Any) -> Deployment:
        """A deployment of the version the last fit registered (``spec``: client.deployments.create's)."""
        version = self.model_version
        if version is None:
            raise AicloudError("nothing to deploy: call fit first (it registers the model)")
        ref = f"{version.name}:{version.version}"
        return self._client.deployments.create(name, model=ref, **spec)

    def summary(self, *args: Any, **kwargs: Any) -> Any:
        return self.keras_model.summary(*args, **kwargs)

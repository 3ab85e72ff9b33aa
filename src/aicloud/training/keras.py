"""Keras 3 in aicloud jobs: per-epoch metrics of ``fit`` on the run (docs/keras.md).

    from aicloud.training.keras import MetricsCallback, autolog

    model.fit(X, y, epochs=100, callbacks=[MetricsCallback()])   # this fit's metrics
    autolog()                                                      # every fit of the process

:class:`MetricsCallback` logs each epoch's ``logs`` (``loss``, ``mae``, ``val_loss``, ``val_mae``,
``accuracy``...) with :func:`aicloud.training.log_metric` at ``step`` = the epoch (0-based), and
sends them at the end of the epoch (batched as every metric). :func:`autolog` makes every
``keras.Model.fit`` of the process add one (unless its callbacks already have one) and log the fit's
params (epochs, batch_size, validation_split, optimizer, learning_rate, loss).

In a ``command`` job autolog is on without a line in the script: the bootstrap puts a folder with a
``sitecustomize.py`` (:mod:`aicloud.training.keras_site`, stdlib only) first on the command's
``PYTHONPATH``, which calls :func:`autolog` when the script first imports keras.
``AICLOUD_AUTOLOG=0`` in the job's env turns that off. Outside a job the metrics go where
:mod:`aicloud.training.session` sends them offline (stdout and ``./aicloud-run/``).

keras is imported only when a callback is made or :func:`autolog` runs; in jobs ``KERAS_BACKEND``
defaults to ``torch`` (:func:`default_backend`), which aicloud[train] installs.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

#: The environment variable that turns autolog off in a job (``0``, ``false``, ``no``, ``off``).
AUTOLOG_ENV = "AICLOUD_AUTOLOG"
_OFF = ("0", "false", "no", "off")
_MARK = "_aicloud_autolog"

_callback_class: type | None = None
_original_fit: Callable[..., Any] | None = None
_owned_fit = False  # whether keras.Model had a fit of its own (else it is its trainer's)


def default_backend(environ: Any = None) -> str:
    """Set ``KERAS_BACKEND`` to ``torch`` where it is unset (before keras' import); returns it."""
    env = os.environ if environ is None else environ
    return str(env.setdefault("KERAS_BACKEND", "torch"))


def autolog_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether autolog is on: ``AICLOUD_AUTOLOG`` is unset or not one of 0/false/no/off."""
    env = os.environ if environ is None else environ
    return env.get(AUTOLOG_ENV, "1").strip().lower() not in _OFF


def epoch_metrics(logs: Mapping[str, Any] | None) -> dict[str, float]:
    """An epoch's ``logs`` as metric name → float (values that are not finite numbers are left out)."""
    out: dict[str, float] = {}
    for key, value in (logs or {}).items():
        try:
            number = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[str(key)] = number
    return out


def _make_callback_class() -> type:
    import keras

    from aicloud.training.session import session

    class MetricsCallback(keras.callbacks.Callback):
        """Logs each epoch's ``logs`` to the aicloud run (step: the epoch), then sends them."""

        def __init__(self, prefix: str = "") -> None:
            super().__init__()
            self.prefix = prefix

        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            sess = session()
            for name, value in epoch_metrics(logs).items():
                sess.log_metric(self.prefix + name, value, step=int(epoch))
            sess.epoch_end()

        def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
            session().flush()

    return MetricsCallback


def _callback() -> type:
    global _callback_class
    if _callback_class is None:
        _callback_class = _make_callback_class()
    return _callback_class


def __getattr__(name: str) -> Any:
    if name == "MetricsCallback":  # a keras.callbacks.Callback: made on first use, importing keras
        return _callback()
    raise AttributeError(f"module 'aicloud.training.keras' has no attribute {name!r}")


def fit_params(model: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The params a fit logs: its own arguments and the compiled optimizer and loss."""
    params: dict[str, Any] = {
        "epochs": kwargs.get("epochs", 1),
        "batch_size": kwargs.get("batch_size") if kwargs.get("batch_size") is not None else 32,
    }
    if kwargs.get("validation_split"):
        params["validation_split"] = kwargs["validation_split"]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        params["optimizer"] = type(optimizer).__name__
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            params["learning_rate"] = float(optimizer.learning_rate)
    loss = getattr(model, "loss", None)
    if loss is not None:
        params["loss"] = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
    return params


_FIT_ARGS = ("x", "y", "batch_size", "epochs")


def _patched(fit: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fit)
    def fit_with_metrics(self: Any, *args: Any, **kwargs: Any) -> Any:
        cls = _callback()
        callbacks = list(kwargs.get("callbacks") or [])
        if not any(isinstance(c, cls) for c in callbacks):
            callbacks.append(cls())
        kwargs["callbacks"] = callbacks
        try:
            named = {**dict(zip(_FIT_ARGS, args, strict=False)), **kwargs}
            from aicloud.training.session import session

            session().log_params(fit_params(self, named))
        except Exception as exc:  # never the user's fit's failure
            print(f"[aicloud] warning: autolog could not log the fit's params: {exc}", flush=True)
        return fit(self, *args, **kwargs)

    setattr(fit_with_metrics, _MARK, True)
    return fit_with_metrics


def autolog(enable: bool = True) -> None:
    """Make every ``keras.Model.fit`` of this process log its per-epoch metrics and params to the run
    (``enable=False``: undo). Idempotent; imports keras."""
    global _original_fit, _owned_fit
    import keras

    current = keras.Model.fit
    if enable:
        if getattr(current, _MARK, False):
            return
        _original_fit, _owned_fit = current, "fit" in vars(keras.Model)
        keras.Model.fit = _patched(current)
    elif getattr(current, _MARK, False) and _original_fit is not None:
        if _owned_fit:
            keras.Model.fit = _original_fit
        else:
            del keras.Model.fit
        _original_fit = None

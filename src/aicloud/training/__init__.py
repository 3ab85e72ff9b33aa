"""The in-job runtime: tracking helpers, the built-in tasks, checkpoints.

    from aicloud.training import log_metric, log_params, save_model, load_model
    from aicloud.training import save_checkpoint, load_checkpoint
    from aicloud.training import params      # a sweep trial's params (training/params.py)

``log_params``/``log_metric``/``flush``/``save_model`` work inside an aicloud job (they talk to the
control plane) and outside it (offline: stdout, ``./aicloud-run/``, ``./aicloud-model/``); see
:mod:`aicloud.training.session`. ``load_model`` loads a model folder (re-exported from
:mod:`aicloud.artifacts.loader`, the home of the model artifact);
``save_checkpoint``/``load_checkpoint`` keep a job's latest checkpoint (safetensors + JSON, see
:mod:`aicloud.training.checkpoint`) so that a restarted job resumes. torch is imported only when a
model or checkpoint is saved or loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aicloud.training.params import params
from aicloud.training.session import (
    flush,
    load_checkpoint,
    log_metric,
    log_params,
    register_model,
    save_checkpoint,
    save_model,
)

if TYPE_CHECKING:
    from aicloud.artifacts.loader import LoadedModel, load_model

__all__ = [
    "LoadedModel",
    "flush",
    "load_checkpoint",
    "load_model",
    "log_metric",
    "log_params",
    "params",
    "register_model",
    "save_checkpoint",
    "save_model",
]


def __getattr__(name: str) -> Any:
    if name in ("load_model", "LoadedModel"):
        from aicloud.artifacts import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'aicloud.training' has no attribute {name!r}")

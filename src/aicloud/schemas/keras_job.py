"""The spec of the ``keras`` job (docs/keras.md, "The remote API"): what :class:`aicloud.Model` submits.

A Keras model travels as its JSON config (``model.to_json()``: no pickle, no code) with the compile
settings (strings or ``keras.saving.serialize_keras_object`` dicts), the fit arguments and the dataset
versions by role (``train``, ``validation`` for ``fit``; ``data`` for ``evaluate`` and ``predict``).
Trained weights are a blob (a Keras ``.weights.h5`` file, by digest). The server resolves the datasets
to exact versions (``resolved_datasets``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aicloud.schemas.api import Name, ResourceLimits
from aicloud.schemas.runtime_env import RuntimeEnv

__all__ = ["MAX_MODEL_CONFIG", "KerasCompile", "KerasFit", "KerasSpec"]

#: The largest model config accepted, in characters of JSON.
MAX_MODEL_CONFIG = 1_000_000

#: The run param where a keras job leaves what the client reads back (a blob digest each).
WEIGHTS_PARAM = "keras_weights"
RESULT_PARAM = "keras_result"


class KerasCompile(BaseModel):
    """``model.compile(...)``'s JSON-able arguments."""

    model_config = ConfigDict(extra="forbid")

    optimizer: str | dict[str, Any] = "rmsprop"
    loss: str | dict[str, Any] | None = None
    metrics: list[str | dict[str, Any]] = Field(default_factory=list, max_length=50)


class KerasFit(BaseModel):
    """``model.fit(...)``'s arguments (the data comes from ``datasets``)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=1, ge=1, le=100_000)
    batch_size: int | None = Field(default=None, ge=1, le=1_000_000)
    validation_split: float = Field(default=0.0, ge=0.0, lt=1.0)
    shuffle: bool = True
    seed: int | None = Field(default=None, description="keras.utils.set_random_seed first")


class KerasSpec(BaseModel):
    """``keras``: fit, evaluate or predict with a Keras model rebuilt from its JSON config."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    action: Literal["fit", "evaluate", "predict"] = "fit"
    model_config_json: str = Field(
        alias="model_config",
        min_length=2,
        max_length=MAX_MODEL_CONFIG,
        description="model.to_json(): a JSON object with a class_name",
    )
    compile: KerasCompile = Field(default_factory=KerasCompile)
    fit: KerasFit = Field(default_factory=KerasFit)
    datasets: dict[str, str] = Field(description='{"train", "validation"} for fit, {"data"} otherwise')
    target: str | None = Field(default=None, max_length=200, description="The label column.")
    features: list[str] | None = Field(default=None, max_length=10_000, description="Feature columns.")
    model_name: Name | None = Field(default=None, description="The version fit registers; default: job name.")
    weights: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="Blob digest of a .weights.h5 to start from."
    )
    batch_size: int | None = Field(default=None, ge=1, le=1_000_000, description="evaluate/predict batch.")
    cpus: int = Field(default=1, ge=1, le=1024)
    limits: ResourceLimits = Field(default_factory=ResourceLimits)
    runtime_env: RuntimeEnv | None = None
    resolved_datasets: dict[str, dict[str, object]] | None = Field(default=None, description="By the server.")

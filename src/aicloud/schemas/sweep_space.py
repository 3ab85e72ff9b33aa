"""The search space of a sweep (``spec.space.<param>``), its sampler and its pruner: the parts of
:class:`~aicloud.schemas.sweeps.SweepSpec` that describe how params are drawn and trials stopped.

Re-exported by :mod:`aicloud.schemas.sweeps`; see there for the entries' YAML.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

__all__ = [
    "CategoricalSpace",
    "Choice",
    "IntSpace",
    "LogUniformSpace",
    "ParamSpace",
    "PrunerSpec",
    "SamplerSpec",
    "UniformSpace",
    "type_shorthand",
]

Choice = StrictBool | StrictInt | StrictFloat | StrictStr | list[StrictInt]


class _Space(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UniformSpace(_Space):
    """A float drawn uniformly from ``[low, high]``."""

    type: Literal["uniform"]
    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _bounds(self) -> UniformSpace:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        return self


class LogUniformSpace(_Space):
    """A float drawn uniformly in log space from ``[low, high]`` (``low > 0``): learning rates."""

    type: Literal["log_uniform"]
    low: float = Field(gt=0, allow_inf_nan=False)
    high: float = Field(gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _bounds(self) -> LogUniformSpace:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        return self


class IntSpace(_Space):
    """An integer from ``low, low + step, ... ≤ high``; ``log`` samples in log space (``step`` 1)."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> IntSpace:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("a log int space needs low ≥ 1 and step 1")
        return self

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


class CategoricalSpace(_Space):
    """One of ``choices`` (strings, numbers, booleans, or lists of ints for ``hidden``)."""

    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _distinct(self) -> CategoricalSpace:
        keys = [json.dumps(c) for c in self.choices]
        if len(set(keys)) != len(keys):
            raise ValueError("choices must be distinct")
        return self


ParamSpace = Annotated[
    UniformSpace | LogUniformSpace | IntSpace | CategoricalSpace, Field(discriminator="type")
]


def type_shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class SamplerSpec(BaseModel):
    """How trials' params are chosen: Optuna's TPE (seeded), random search, or a grid."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    n_startup_trials: int = Field(
        default=10, ge=0, le=10_000, description="TPE: random trials before the model takes over."
    )


class PrunerSpec(BaseModel):
    """How poor trials stop early on their per-epoch objective: ASHA, the median rule, or not at all."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["asha", "median", "none"] = "asha"
    min_resource: int = Field(default=1, ge=1, le=100_000, description="ASHA: epochs of the first rung.")
    reduction_factor: int = Field(default=3, ge=2, le=100, description="ASHA: 1/factor promoted per rung.")
    n_startup_trials: int = Field(default=3, ge=0, description="median: trials before pruning starts.")
    warmup_steps: int = Field(default=1, ge=0, description="median: epochs before a trial can be pruned.")

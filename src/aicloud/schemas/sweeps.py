"""Specs of sweeps (``kind: sweep``): a search space over the built-in tasks' params, and its results.

A sweep runs trials of one base ``train`` spec (:class:`TrainSpec`), each with params sampled from
``space`` merged into ``train.params``; or, over your own code, trials of one base ``command`` spec
(:class:`CommandSpec`), each a command job whose ``params`` (``AICLOUD_PARAMS``,
``AICLOUD_PARAM_<NAME>``, :func:`aicloud.training.params`) are the sampled values merged into
``command.params``, its objective a metric the code logs (``metric``, required then).

The server validates a sweep's ``spec`` with these models (422
naming the field, e.g. ``spec.space.lr``), then checks the space against :class:`TrainParams` and the
objective against the metrics the task reports with :func:`check_sweep_spec` (a pure function).

Space entries (``spec.space.<param>``)::

    lr:        {type: log_uniform, low: 1.0e-4, high: 1.0e-1}
    dropout:   {type: uniform, low: 0.0, high: 0.5}
    batch_size: {type: int, low: 16, high: 128, step: 16}
    optimizer: {type: categorical, choices: [adam, sgd]}
    hidden:    {type: categorical, choices: [[64], [128, 64]]}   # or {type: int, ...}: every layer's width

Unknown fields are refused (``extra="forbid"``), as in the train spec.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex
from typing import Any, Literal

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from aicloud.errors import ValidationError
from aicloud.schemas.sweep_space import (
    CategoricalSpace,
    IntSpace,
    LogUniformSpace,
    ParamSpace,
    PrunerSpec,
    SamplerSpec,
    UniformSpace,
    type_shorthand,
)
from aicloud.schemas.training import CommandSpec, ResolvedDataset, TrainParams, TrainSpec

CLASSIFICATION_METRICS = ("eval_accuracy", "eval_loss", "train_loss")
REGRESSION_METRICS = ("eval_loss", "eval_rmse", "eval_mae", "eval_r2", "train_loss")
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "tabular-classification": CLASSIFICATION_METRICS,
    "image-classification": CLASSIFICATION_METRICS,
    "tabular-regression": REGRESSION_METRICS,
}
"""The per-epoch metrics each built-in task reports (``training.loop.fit``): an objective is one."""

MAXIMIZED = frozenset({"eval_accuracy", "eval_r2"})
"""Metrics where higher is better; the default direction of every other metric is ``minimize``."""

MAXIMIZED_WORDS = frozenset({"accuracy", "acc", "auc", "f1", "r2", "precision", "recall", "reward", "score"})
"""A metric a command logs is maximized by default when one of its ``_``-separated words is one of these
(``val_accuracy``, ``roc_auc``); every other one is minimized (``val_loss``, ``rmse``)."""

_PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}\Z")

MAX_GRID = 100_000
TRIAL_STATES = ("pending", "running", "complete", "pruned", "failed", "cancelled")

Direction = Literal["maximize", "minimize"]


class SweepSpec(BaseModel):
    """The spec of a ``sweep`` job."""

    model_config = ConfigDict(extra="forbid")

    train: TrainSpec | None = Field(
        default=None, description="The base train spec; the space's params override its params."
    )
    command: CommandSpec | None = Field(
        default=None,
        description="Or the base command spec (your own code); each trial is a command job with the "
        "space's values merged into its params (AICLOUD_PARAMS, AICLOUD_PARAM_<NAME>).",
    )
    args: bool = Field(
        default=False,
        description="command sweeps: also append each trial param to the command as --name=value.",
    )
    space: dict[str, ParamSpace] = Field(description="Param name → search space (at least one).")
    metric: str | None = Field(
        default=None,
        description="The objective, a metric the task reports each epoch; default eval_accuracy "
        "(classification) or eval_loss (regression). Required with command: a metric the code logs.",
    )
    direction: Direction | None = Field(
        default=None, description="maximize or minimize; default by metric (accuracy, r2: maximize)."
    )
    max_trials: int = Field(default=10, ge=1, le=1000, description="Trials to run (pruned ones count).")
    parallelism: int = Field(default=1, ge=1, le=64, description="Trials pending or running at once.")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    resolved_datasets: dict[str, ResolvedDataset] | None = Field(
        default=None, description="Filled by the server, as for train jobs."
    )

    @pydantic.field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _type_shorthand(cls, value: Any) -> Any:
        return type_shorthand(value)

    @model_validator(mode="after")
    def _one_base(self) -> SweepSpec:
        if (self.train is None) == (self.command is None):
            raise ValueError(
                "give exactly one of train (trials of a built-in task) or command (trials that run your "
                "own code), not " + ("both" if self.train is not None else "neither")
            )
        if self.args and self.command is None:
            raise ValueError("args: true appends the params to a command; it needs command, not train")
        return self

    @property
    def objective(self) -> str:
        """The metric, defaulted by task."""
        if self.metric:
            return self.metric
        if self.train is None:  # a command sweep without one is refused by check_sweep_spec
            return ""
        return "eval_loss" if self.train.task == "tabular-regression" else "eval_accuracy"

    @property
    def maximize(self) -> bool:
        if self.direction is not None:
            return self.direction == "maximize"
        if self.objective in MAXIMIZED:
            return True
        return self.command is not None and bool(MAXIMIZED_WORDS & set(self.objective.lower().split("_")))

    @property
    def base(self) -> TrainSpec | CommandSpec:
        """The base spec each trial copies: ``train`` or ``command``."""
        base = self.train if self.train is not None else self.command
        assert base is not None  # _one_base
        return base

    @property
    def base_params(self) -> dict[str, Any]:
        """The base spec's params (JSON values) the sampled ones are merged into."""
        if self.train is not None:
            return self.train.params.model_dump(mode="json")
        assert self.command is not None
        return dict(self.command.params)

    def grid_size(self) -> int:
        """How many points the grid has (categorical and int spaces only; 0 otherwise)."""
        sizes = []
        for space in self.space.values():
            if isinstance(space, CategoricalSpace):
                sizes.append(len(space.choices))
            elif isinstance(space, IntSpace):
                sizes.append(len(space.values()))
            else:
                return 0
        return math.prod(sizes)

    def effective_max_trials(self) -> int:
        """``max_trials``, capped at the grid's size for the grid sampler."""
        if self.sampler.type == "grid":
            return min(self.max_trials, self.grid_size())
        return self.max_trials


# -----------------------------------------------------------------------------------------------------
# params: a sampled value → the train spec's value


def train_value(name: str, value: Any, base: TrainParams | None) -> Any:
    """What a sampled ``value`` of param ``name`` becomes in the trial's train params.

    ``hidden`` takes a list of layer widths: a list choice is used as is, a number sets the width of
    every layer of the base spec's ``hidden`` (its depth kept; one layer when it has none). With no
    train params (a command sweep) every value is used as it is.
    """
    if base is None:
        return value
    if name == "hidden" and not isinstance(value, list):
        return [value] * max(1, len(base.hidden))
    return value


def base_train_params(spec: SweepSpec) -> TrainParams | None:
    """The train sweep's base params (None for a command sweep)."""
    return spec.train.params if spec.train is not None else None


def trial_params(spec: SweepSpec, sampled: dict[str, Any]) -> dict[str, Any]:
    """The full params of a trial: the base params with the sampled values merged in."""
    params = spec.base_params
    for name, value in sampled.items():
        params[name] = train_value(name, value, base_train_params(spec))
    return params


def _arg_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def trial_command(spec: SweepSpec, params: dict[str, Any]) -> str:
    """A command sweep's trial command: the base command, with ``--name=value`` per param if ``args``."""
    assert spec.command is not None
    if not spec.args:
        return spec.command.command
    args = [shlex.quote(f"--{k}={_arg_text(v)}") for k, v in params.items()]
    return " ".join([spec.command.command, *args])


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every point of the grid, in a fixed order (names sorted)."""
    names = sorted(spec.space)
    axes: list[list[Any]] = []
    for name in names:
        space = spec.space[name]
        if isinstance(space, CategoricalSpace):
            axes.append(list(space.choices))
        elif isinstance(space, IntSpace):
            axes.append(list(space.values()))
        else:
            raise ValueError(f"{name}: the grid sampler takes categorical and int spaces only")
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]


# -----------------------------------------------------------------------------------------------------
# checking a sweep spec


def _field_kind(name: str) -> str:
    annotation = TrainParams.model_fields[name].annotation
    if name == "hidden":
        return "list"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return "choice"


def _samples(space: UniformSpace | LogUniformSpace | IntSpace | CategoricalSpace) -> list[Any]:
    if isinstance(space, CategoricalSpace):
        return list(space.choices)
    if isinstance(space, IntSpace):
        return [space.low, space.values()[-1]]
    return [space.low, space.high]


def _check_command_param(spec: SweepSpec, name: str, seen: dict[str, str]) -> None:
    field = f"spec.space.{name}"
    if not _PARAM_NAME_RE.fullmatch(name):
        raise ValidationError.field(
            field, f"{name!r} is not a param name: a letter or '_', then letters, digits or '_'"
        )
    other = seen.setdefault(name.upper(), name)
    if other != name:
        raise ValidationError.field(
            field, f"{name!r} and {other!r} are both AICLOUD_PARAM_{name.upper()}: rename one"
        )


def _check_command_sweep(spec: SweepSpec) -> None:
    seen: dict[str, str] = {}
    for name in [*(spec.command.params if spec.command else {}), *spec.space]:
        if name in spec.space:
            _check_command_param(spec, name, seen)
        else:
            seen.setdefault(name.upper(), name)
    if not spec.metric:
        raise ValidationError.field(
            "spec.metric",
            "a sweep over a command needs metric: the name of the metric your code logs each step "
            "with aicloud.training.log_metric(name, value, step=...), e.g. metric: val_loss",
        )


def _check_param(spec: SweepSpec, name: str) -> None:
    field = f"spec.space.{name}"
    assert spec.train is not None
    params = sorted(TrainParams.model_fields)
    if name not in TrainParams.model_fields:
        raise ValidationError.field(
            field,
            f"{name!r} is not a parameter of task {spec.train.task}; the parameters are: {', '.join(params)}",
        )
    space = spec.space[name]
    kind = _field_kind(name)
    if kind == "int" and isinstance(space, UniformSpace | LogUniformSpace):
        raise ValidationError.field(field, f"{name} is an integer: use an int or categorical space")
    if kind == "choice" and not isinstance(space, CategoricalSpace):
        raise ValidationError.field(field, f"{name} takes one of a set of values: use a categorical space")
    if kind == "list" and isinstance(space, UniformSpace | LogUniformSpace):
        raise ValidationError.field(
            field, "hidden is a list of layer widths: use a categorical space of lists, or an int space"
        )
    if (
        kind != "list"
        and isinstance(space, CategoricalSpace)
        and any(isinstance(c, list) for c in space.choices)
    ):
        raise ValidationError.field(field, f"{name} takes a single value, not a list")
    base = spec.train.params.model_dump()
    for value in _samples(space):
        try:
            TrainParams.model_validate({**base, name: train_value(name, value, spec.train.params)})
        except pydantic.ValidationError as exc:
            problem = "; ".join(str(e["msg"]) for e in exc.errors())
            raise ValidationError.field(field, f"{value!r} is not a valid {name}: {problem}") from None


def check_sweep_spec(spec: SweepSpec) -> None:
    """Check a sweep spec beyond its types (a pure function).

    Raises:
        ValidationError: naming ``spec.space`` when it is empty, ``spec.space.<param>`` for a param the
            task does not have or a range it does not accept, ``spec.metric`` for a metric the task never
            reports (listing those it does), ``spec.sampler`` for a grid over continuous spaces.
    """
    if not spec.space:
        raise ValidationError.field(
            "spec.space",
            "the search space is empty: give at least one parameter to search, "
            "e.g. {lr: {type: log_uniform, low: 1.0e-4, high: 1.0e-1}}",
        )
    if spec.train is None:
        _check_command_sweep(spec)
    else:
        for name in spec.space:
            _check_param(spec, name)
    reported = TASK_METRICS[spec.train.task] if spec.train is not None else (spec.objective,)
    if spec.train is not None and spec.objective not in reported:
        raise ValidationError.field(
            "spec.metric",
            f"task {spec.train.task} never reports {spec.objective!r}; it reports: {', '.join(reported)}",
        )
    if spec.sampler.type == "grid":
        continuous = [n for n, s in spec.space.items() if isinstance(s, UniformSpace | LogUniformSpace)]
        if continuous:
            raise ValidationError.field(
                "spec.sampler",
                f"the grid sampler takes categorical and int spaces only; {', '.join(continuous)} "
                "is continuous (use a categorical space of the values to try)",
            )
        if spec.grid_size() > MAX_GRID:
            raise ValidationError.field(
                "spec.space", f"the grid has {spec.grid_size()} points (max {MAX_GRID})"
            )


# -----------------------------------------------------------------------------------------------------
# trial jobs: names and prune markers (persisted, so a restarted control plane reads them back)

_TRIAL_RE = re.compile(r"-trial-(\d+)$")
_PRUNED_RE = re.compile(r"^pruned at epoch (\d+)")


def trial_name(sweep_name: str, number: int) -> str:
    """The name of trial ``number``'s job; the number is read back from it (:func:`trial_number`)."""
    return f"{sweep_name[:80]}-trial-{number}"


def trial_number(job_name: str) -> int | None:
    match = _TRIAL_RE.search(job_name)
    return int(match.group(1)) if match else None


def pruned_message(epoch: int, metric: str, value: float) -> str:
    return f"pruned at epoch {epoch}: {metric}={value:.6g} was not among the best trials at that epoch"


def pruned_epoch(message: str | None) -> int | None:
    """The epoch a trial was pruned at, from its job message; None when it was not pruned."""
    match = _PRUNED_RE.match(message or "")
    return int(match.group(1)) if match else None


def trials_model_name(model_name: str) -> str:
    """Where trials register their models; the best one is registered again under ``model_name``."""
    return f"{model_name[:93]}-trials"


# -----------------------------------------------------------------------------------------------------
# wire models of results


class TrialOut(BaseModel):
    number: int
    job_id: str
    status: str = Field(description="The trial job's status.")
    state: Literal["pending", "running", "complete", "pruned", "failed", "cancelled"]
    params: dict[str, Any] = Field(description="The searched params' values in this trial.")
    value: float | None = Field(default=None, description="The final objective (complete trials).")
    intermediate: dict[int, float] = Field(default_factory=dict, description="Epoch → objective.")
    epochs: int = Field(default=0, description="Epochs the trial ran.")
    pruned_at: int | None = None
    run_id: str | None = None
    model_version_id: str | None = None
    note: str | None = None


class SweepTrialsOut(BaseModel):
    sweep_id: str
    status: str
    metric: str
    direction: Direction
    max_trials: int
    trials: list[TrialOut]
    best: TrialOut | None = None
    epochs: int = Field(description="Epochs spent by all trials together.")


__all__ = [
    "MAXIMIZED",
    "MAXIMIZED_WORDS",
    "TASK_METRICS",
    "CategoricalSpace",
    "IntSpace",
    "LogUniformSpace",
    "ParamSpace",
    "PrunerSpec",
    "SamplerSpec",
    "SweepSpec",
    "SweepTrialsOut",
    "TrialOut",
    "UniformSpace",
    "check_sweep_spec",
    "grid_points",
    "pruned_epoch",
    "pruned_message",
    "train_value",
    "trial_command",
    "trial_name",
    "trial_number",
    "trial_params",
    "trials_model_name",
]

"""Specs of training jobs (``kind: train`` and ``kind: command``), shared by the server and the runtime.

The server validates a job's ``spec`` with these models at submission (422 naming the field, e.g.
``spec.params.epochs``) and then checks it against the dataset's schema with :func:`check_train_spec`.
The in-job runtime (:mod:`aicloud.training`) parses the same spec again from ``AICLOUD_JOB_SPEC``.

Unknown fields are refused (``extra="forbid"``), so that a typo such as ``"epoch": 5`` is an error,
not a silently ignored setting. The server adds ``resolved_datasets`` after validation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aicloud.errors import ValidationError
from aicloud.schemas.api import Name, ResourceLimits, SecretName
from aicloud.schemas.runtime_env import RuntimeEnv

TASKS: tuple[str, ...] = ("tabular-classification", "tabular-regression", "image-classification")
"""The built-in tasks of ``train`` jobs."""

Task = Literal["tabular-classification", "tabular-regression", "image-classification"]
Optimizer = Literal["adam", "adamw", "sgd"]
Precision = Literal["fp32", "bf16"]

MAX_WORKERS = 64
"""The most worker processes one job may ask for (``workers``)."""
MAX_RESTARTS = 10
"""The most automatic restarts one job may ask for (``max_restarts``)."""
MAX_COLUMNS = 100_000
"""The most column names one ``features`` or ``exclude`` list may hold."""

_ROLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,49}\Z")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}\Z")
_NUMERIC_PREFIXES = ("int", "uint", "float", "decimal", "double")
_MAX_CLASSES = 1000


class ResolvedDataset(BaseModel):
    """A dataset reference resolved by the server to one exact version (the job's lineage)."""

    id: str
    name: str
    version: int
    format: str


class TrainParams(BaseModel):
    """Hyperparameters of the built-in tasks."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=10, ge=1, le=100_000, description="Passes over the training data.")
    batch_size: int = Field(default=64, ge=1, le=1_000_000, description="Rows per optimizer step.")
    lr: float = Field(default=1e-3, gt=0, le=10, description="Learning rate.")
    optimizer: Optimizer = Field(default="adam", description="adam, adamw, or sgd (momentum 0.9).")
    hidden: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        default_factory=lambda: [128, 64],
        max_length=32,
        description="Sizes of the hidden fully connected layers (MLP; the CNN's head).",
    )
    dropout: float = Field(default=0.1, ge=0, lt=1, description="Dropout after each hidden layer.")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="Seed of weights, shuffling and dropout.")
    patience: int = Field(
        default=0, ge=0, description="Early stopping: epochs without a better eval loss; 0 = off."
    )
    weight_decay: float = Field(default=0.0, ge=0, description="L2 penalty (decoupled for adamw).")


class TrainSpec(BaseModel):
    """The spec of a ``train`` job: a built-in task on a dataset."""

    model_config = ConfigDict(extra="forbid")

    task: Task = Field(description="One of: " + ", ".join(TASKS) + ".")
    dataset: str = Field(min_length=1, description="Training data, `name:version` or `name` (latest).")
    eval_dataset: str = Field(min_length=1, description="Evaluation data, `name:version` or `name`.")
    target: str = Field(default="label", min_length=1, description="The column to predict.")
    features: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_COLUMNS,
        description="Only these columns are the model's inputs (default: every column but the target).",
    )
    exclude: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        max_length=MAX_COLUMNS,
        description="Columns left out of the model's inputs (ids, leaky columns); not with `features`.",
    )
    params: TrainParams = Field(default_factory=TrainParams)
    model_name: Name | None = Field(
        default=None, max_length=100, description="Registry name of the model; default: the job name."
    )
    cpus: int = Field(default=1, ge=1, le=1024, description="CPU cores (torch threads) per worker.")
    gpus: int = Field(default=0, ge=0, le=16, description="GPUs per worker (0: train on the CPU).")
    workers: int = Field(
        default=1,
        ge=1,
        le=MAX_WORKERS,
        description="Worker processes training together (DistributedDataParallel); "
        "`params.batch_size` is the global batch, split between them.",
    )
    precision: Precision = Field(
        default="fp32", description="fp32, or bf16 (autocast of the forward passes, CPU and GPU)."
    )
    checkpoint_every: int | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description="Save a checkpoint every N epochs; 0 = never; default: 1 when max_restarts > 0, else 0.",
    )
    max_restarts: int = Field(
        default=0,
        ge=0,
        le=MAX_RESTARTS,
        description="Restart a failed job (from its latest checkpoint) up to this many times.",
    )
    secrets: list[SecretName] = Field(default_factory=list, description="Secrets injected as env vars.")
    limits: ResourceLimits = Field(default_factory=ResourceLimits, description="Sandbox limits per worker.")
    resolved_datasets: dict[str, ResolvedDataset] | None = Field(
        default=None, description="Filled by the server: role (train, eval) → exact dataset version."
    )

    @field_validator("task", mode="before")
    @classmethod
    def _known_task(cls, value: Any) -> Any:
        if value not in TASKS:
            raise ValueError(f"unknown task {value!r}; the tasks are: {', '.join(TASKS)}")
        return value

    @model_validator(mode="after")
    def _one_column_choice(self) -> TrainSpec:
        if self.features is not None and self.exclude:
            raise ValueError("give either `features` (the columns to use) or `exclude` (those to leave out)")
        return self

    @model_validator(mode="after")
    def _default_checkpoints(self) -> TrainSpec:
        if self.checkpoint_every is None:
            self.checkpoint_every = 1 if self.max_restarts > 0 else 0
        return self

    @property
    def checkpoint_interval(self) -> int:
        """``checkpoint_every`` with its default applied (0 = no checkpoints)."""
        return int(self.checkpoint_every or 0)


class CommandSpec(BaseModel):
    """The spec of a ``command`` job: user code (a ``.tar.gz`` blob) and a shell command."""

    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, max_length=10_000, description="Run with /bin/sh -c in code/.")
    code: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="Blob digest of a .tar.gz of the code."
    )
    datasets: dict[str, str] = Field(
        default_factory=dict, description="Role → dataset reference (`name:version` or `name`)."
    )
    cpus: int = Field(default=1, ge=1, le=1024, description="CPU cores per worker.")
    gpus: int = Field(default=0, ge=0, le=16, description="GPUs per worker.")
    workers: int = Field(
        default=1,
        ge=1,
        le=MAX_WORKERS,
        description="Copies of the command, each with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and "
        "MASTER_PORT set as torchrun sets them.",
    )
    max_restarts: int = Field(
        default=0,
        ge=0,
        le=MAX_RESTARTS,
        description="Restart a failed job up to this many times (it resumes with load_checkpoint).",
    )
    secrets: list[SecretName] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")
    params: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")], Any] = Field(
        default_factory=dict,
        description="Params handed to the code as AICLOUD_PARAMS (JSON) and AICLOUD_PARAM_<NAME>, read "
        "with aicloud.training.params() and recorded on the run; a sweep's trials get theirs here.",
    )
    limits: ResourceLimits = Field(default_factory=ResourceLimits, description="Sandbox limits per worker.")
    runtime_env: RuntimeEnv | None = Field(
        default=None, description="Extra packages installed before the job starts (docs/runtime-envs.md)."
    )
    resolved_datasets: dict[str, ResolvedDataset] | None = Field(
        default=None, description="Filled by the server: role → exact dataset version."
    )

    @field_validator("command")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the command is empty")
        return value

    @field_validator("datasets")
    @classmethod
    def _roles(cls, value: dict[str, str]) -> dict[str, str]:
        for role, ref in value.items():
            if not _ROLE_RE.fullmatch(role):
                raise ValueError(
                    f"dataset role {role!r} must be a letter then letters, digits or '_' "
                    "(it becomes AICLOUD_DATASET_<ROLE>)"
                )
            if not ref.strip():
                raise ValueError(f"dataset role {role!r} has an empty reference")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return check_env_names(value)


#: The AICLOUD_* variables a workload's env may set: the user's switches (docs/keras.md: autolog).
USER_SETTABLE = frozenset({"AICLOUD_AUTOLOG"})


def check_env_names(value: dict[str, str]) -> dict[str, str]:
    """``value`` when its keys are environment variable names a workload may set (not ``AICLOUD_*``);
    raises ``ValueError`` naming the first that is not (a pydantic validator's error)."""
    for name in value:
        if not _ENV_RE.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
        if name.upper().startswith("AICLOUD_") and name not in USER_SETTABLE:
            raise ValueError(f"{name!r}: AICLOUD_* variables are set by aicloud and cannot be overridden")
    return value


class CheckpointOut(BaseModel):
    """A job's latest checkpoint (``Job.checkpoint``): a blob of safetensors + JSON."""

    digest: str
    size: int
    epoch: int | None = None
    step: int | None = None
    attempt: int = 0
    created_at: str


# -----------------------------------------------------------------------------------------------------
# checking a train spec against the dataset


def is_numeric_dtype(dtype: str) -> bool:
    """Whether a profile dtype name (``int64``, ``float32``, ``string``...) is a number."""
    return str(dtype).lower().startswith(_NUMERIC_PREFIXES)


def _is_pixel_dtype(dtype: str) -> bool:
    return is_numeric_dtype(dtype) or str(dtype).lower() == "bool"


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def feature_columns(spec: TrainSpec, schema: list[dict[str, Any]]) -> list[str]:
    """The dataset columns (schema names, in dataset order) that are the model's inputs.

    Every column but the target, narrowed by ``spec.features`` or ``spec.exclude``.

    Raises:
        ValidationError: naming ``spec.features`` or ``spec.exclude`` when they name a column the
            dataset lacks (listing its columns) or the target, or leave no feature column.
    """
    names = [str(c.get("name")) for c in schema]
    field, chosen = (
        ("spec.features", spec.features) if spec.features is not None else ("spec.exclude", spec.exclude)
    )
    unknown = [n for n in dict.fromkeys(chosen) if n not in names]
    if unknown:
        raise ValidationError.field(
            field,
            f"no column(s) {_listing(unknown)} in dataset {spec.dataset!r}; "
            f"its columns are: {_listing(names)}",
        )
    if spec.features is not None and spec.target in spec.features:
        raise ValidationError.field(field, f"the target {spec.target!r} cannot also be a feature")
    picked = set(spec.features) if spec.features is not None else set(names) - set(spec.exclude)
    features = [n for n in names if n in picked and n != spec.target]
    if not features:
        raise ValidationError.field(field, f"no feature column is left besides the target {spec.target!r}")
    return features


def image_shape_of(schema: list[dict[str, Any]], target: str, features: list[str] | None = None) -> list[int]:
    """The per-row image shape (``[H, W]`` or ``[C, H, W]``) of a dataset's feature columns.

    The feature columns are ``features`` (schema names), default every column but the target. One NPZ
    array with a 2-D or 3-D per-row shape gives it directly; otherwise the flat numeric feature
    columns must be a square count (64 → 8x8). Raises ``ValueError`` with what is wrong.
    """
    chosen = set(features) if features is not None else None
    columns = [c for c in schema if c.get("name") != target and (chosen is None or c.get("name") in chosen)]
    if not columns:
        raise ValueError("the dataset has no feature columns besides the target")
    bad = [str(c.get("name")) for c in columns if not _is_pixel_dtype(str(c.get("dtype", "")))]
    if bad:
        raise ValueError(f"image-classification needs numeric pixel columns; not numeric: {_listing(bad)}")
    if len(columns) == 1 and len(columns[0].get("shape") or []) in (2, 3):
        shape = [int(s) for s in columns[0]["shape"]]
        if min(shape) < 1:
            raise ValueError(f"the image array {columns[0]['name']!r} has an empty shape {shape}")
        return shape
    count = 0
    for c in columns:
        count += math.prod(int(s) for s in (c.get("shape") or []))
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(
            f"image-classification needs square images: the {count} numeric feature values per row "
            f"are not a square number (e.g. 64 → 8x8, 784 → 28x28)"
        )
    return [side, side]


def check_train_spec(spec: TrainSpec, schema: list[dict[str, Any]], stats: Mapping[str, Any] | None) -> None:
    """Check a train spec against its training dataset's schema and statistics (a pure function).

    Raises:
        ValidationError: naming ``spec.target`` when the target is not a column, is not numeric for
            tabular-regression, has one class or more than 1000 for a classification, or when
            image-classification cannot shape the features into square images (the message says why);
            naming ``spec.features`` or ``spec.exclude`` as :func:`feature_columns` does.
    """
    names = [str(c.get("name")) for c in schema]
    by_name = {str(c.get("name")): c for c in schema}
    if spec.target not in by_name:
        raise ValidationError.field(
            "spec.target",
            f"column {spec.target!r} is not in dataset {spec.dataset!r}; its columns are: {_listing(names)}",
        )
    column = by_name[spec.target]
    dtype = str(column.get("dtype", ""))
    if len(column.get("shape") or []) > 0:
        raise ValidationError.field(
            "spec.target",
            f"column {spec.target!r} has shape {column['shape']}: the target needs one value a row",
        )
    if len(names) < 2:
        raise ValidationError.field(
            "spec.target",
            f"dataset {spec.dataset!r} has no feature columns besides the target {spec.target!r}",
        )
    features = feature_columns(spec, schema)
    target_stats = (stats or {}).get(spec.target) or {}
    if spec.task == "tabular-regression":
        if not is_numeric_dtype(dtype):
            raise ValidationError.field(
                "spec.target",
                f"tabular-regression needs a numeric target; column {spec.target!r} is {dtype} "
                "(use tabular-classification for labels)",
            )
        return
    distinct = target_stats.get("distinct")
    if isinstance(distinct, int) and not target_stats.get("distinct_approx") and distinct < 2:
        raise ValidationError.field(
            "spec.target", f"column {spec.target!r} has {distinct} distinct value(s); a classifier needs ≥ 2"
        )
    if isinstance(distinct, int) and distinct > _MAX_CLASSES:
        raise ValidationError.field(
            "spec.target",
            f"column {spec.target!r} has {distinct} distinct values, too many classes "
            f"(at most {_MAX_CLASSES}); for a continuous target use tabular-regression",
        )
    if spec.task == "image-classification":
        try:
            image_shape_of(schema, spec.target, features)
        except ValueError as exc:
            raise ValidationError.field("spec.target", str(exc)) from None


__all__ = [
    "MAX_COLUMNS",
    "MAX_RESTARTS",
    "MAX_WORKERS",
    "TASKS",
    "CheckpointOut",
    "CommandSpec",
    "Optimizer",
    "Precision",
    "ResolvedDataset",
    "Task",
    "TrainParams",
    "TrainSpec",
    "check_env_names",
    "check_train_spec",
    "feature_columns",
    "image_shape_of",
    "is_numeric_dtype",
]

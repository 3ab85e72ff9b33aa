"""The specs of the ``evaluate`` and ``batch_predict`` jobs (docs/evaluation.md).

Both name a model version (``model``: ``name``, ``name:3``, ``name@alias``, ``zoo/<entry>``) and one
dataset version (``datasets: {"data": ref}``); the server resolves both to exact versions
(``resolved_model``, ``resolved_datasets``) so the metrics and the predictions say where they came from.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from aicloud.schemas.api import Name, ResourceLimits

__all__ = ["BatchPredictSpec", "EvaluateSpec", "MetricsRecord", "ResolvedModel", "metric_key"]

#: Rows read, predicted and written at a time: memory is bounded by this, not by the dataset.
DEFAULT_CHUNK_ROWS = 10_000


class ResolvedModel(BaseModel):
    """The exact version a ``model`` ref named at submission."""

    model_config = ConfigDict(extra="forbid")

    id: str
    ref: str = Field(description="name:version (zoo/<name>:<version> for the zoo)")
    name: str
    version: int


class _ModelOnData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=300, description="name, name:version, name@alias, zoo/...")
    datasets: dict[str, str] = Field(description='{"data": "name" | "name:version"}')
    chunk_rows: int = Field(default=DEFAULT_CHUNK_ROWS, ge=1, le=1_000_000, description="Rows per chunk.")
    cpus: int = Field(default=1, ge=1, le=1024, description="CPU cores (model threads).")
    limits: ResourceLimits = Field(default_factory=ResourceLimits, description="Sandbox limits.")
    text: str = Field(default="text", min_length=1, max_length=200, description="A text model's text column.")
    resolved_datasets: dict[str, dict[str, object]] | None = Field(
        default=None, description="Filled by the server."
    )
    resolved_model: ResolvedModel | None = Field(default=None, description="Filled by the server.")

    @property
    def data(self) -> str:
        return self.datasets.get("data", "")


class EvaluateSpec(_ModelOnData):
    """``evaluate``: score the version on the dataset, record the metrics on the version."""

    target: str | None = Field(
        default=None, max_length=200, description="The label column; default: the model's own target."
    )


class BatchPredictSpec(_ModelOnData):
    """``batch_predict``: predict every row, write a new version of dataset ``output``."""

    output: Name | None = Field(
        default=None, max_length=100, description="Output dataset; default: <dataset>-predictions."
    )


def metric_key(dataset: str, version: int, metric: str) -> str:
    """How an evaluation's metric is stored on the version: ``eval:<dataset>:<version>:<metric>``."""
    return f"eval:{dataset}:{version}:{metric}"


class MetricsRecord(BaseModel):
    """``POST /models/{name}/versions/{v}/metrics``: evaluation metrics merged into the version's."""

    model_config = ConfigDict(extra="forbid")

    metrics: dict[str, float] = Field(
        description="eval:<dataset>:<version>:<metric> → value; a key already there is replaced"
    )

"""Request and response bodies of model compression (docs/compression.md): export, quantize, prune,
compare."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: the largest absolute output difference an ONNX export may have against its parent
EXPORT_TOLERANCE = 1e-4


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExportRequest(_In):
    format: Literal["onnx"] = "onnx"
    tolerance: float = Field(
        default=EXPORT_TOLERANCE,
        gt=0,
        le=EXPORT_TOLERANCE,
        description="the largest absolute difference of any output allowed against the parent "
        "(stricter than the default only)",
    )


class QuantizeRequest(_In):
    method: Literal["dynamic-int8", "static-int8"] = "dynamic-int8"
    calibration: str | None = Field(
        default=None,
        description="static-int8: a dataset version (NAME or NAME:VERSION) with the model's inputs",
    )


class PruneRequest(_In):
    amount: float = Field(
        default=0.5, gt=0, lt=1, description="the share of each hidden layer's units removed"
    )
    structured: Literal[True] = Field(
        default=True, description="whole units and channels (masks of single weights speed nothing up)"
    )
    finetune_epochs: int = Field(default=3, ge=0, le=100, description="epochs of fine-tuning after pruning")
    dataset: str | None = Field(
        default=None,
        description="the fine-tuning data (NAME or NAME:VERSION); default: the version's training dataset",
    )


class CompareRequest(_In):
    versions: list[int] | None = Field(
        default=None, description="the versions to compare (default: every version, at most the newest 8)"
    )
    dataset: str | None = Field(
        default=None, description="an evaluation dataset version (NAME or NAME:VERSION)"
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="the threads each runtime (torch, ONNX Runtime) may use: 1, as a replica of cpus 1 runs",
    )


class VariantOut(BaseModel):
    """One variant's measurements; latencies are the median of one model call on prepared inputs."""

    version: int
    label: str  # ``digits:3``
    method: str  # what made it from its parent: "onnx", "dynamic-int8"...; "" for an original
    parent_version: int | None = None
    runtime: str  # torch or onnxruntime
    size_bytes: int
    p50_ms_b1: float
    p50_ms_b32: float
    accuracy: float | None = None
    cosine_to_first: float | None = None


class CompareOut(BaseModel):
    model: str
    dataset: str | None = None  # the evaluation dataset version, ``name:version``
    threads: int = 1  # the threads each runtime used
    variants: list[VariantOut]

"""The spec of a ``finetune`` job: adapt a pretrained model version (a zoo entry or the workspace's own)
to a labelled dataset, shared by the server (422 at submission) and the job (docs/finetuning.md).

* ``task: text-classification`` on a text encoder (a version whose config has a ``text`` block and
  task ``text-embedding``): ``method`` ``head`` (a linear head on the frozen encoder's embeddings),
  ``full`` (the encoder and a head trained together) or ``lora`` (low-rank adapters on the attention
  projections and a head; the encoder's weights stay frozen).
* ``task: image-classification`` on a built-in CNN (``zoo/digits-cnn``): the CNN's last layer replaced
  for the new labels; ``freeze: true`` trains only the head.

The server adds ``resolved_datasets`` and ``resolved_base`` (the exact base version: lineage).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aicloud.schemas.api import Name, ResourceLimits
from aicloud.schemas.training import ResolvedDataset

FinetuneTask = Literal["text-classification", "image-classification"]
FinetuneMethod = Literal["head", "full", "lora"]
FINETUNE_METHODS: tuple[str, ...] = ("head", "full", "lora")

#: Defaults of epochs and learning rate per method (head: full-batch steps of a linear head).
DEFAULTS: dict[str, tuple[int, float]] = {"head": (100, 0.05), "full": (4, 5e-5), "lora": (6, 1e-3)}
IMAGE_DEFAULTS: tuple[int, float] = (30, 0.003)


class ResolvedBase(BaseModel):
    """The base model version the server resolved ``base`` to."""

    id: str
    ref: str  # pinned: ``zoo/minilm:1`` or ``encoder:3``
    name: str
    version: int


class FinetuneSpec(BaseModel):
    """The spec of a ``finetune`` job."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(
        min_length=1, max_length=200, description="The pretrained model: `zoo/minilm`, `name:3`."
    )
    task: FinetuneTask = Field(default="text-classification", description="text- or image-classification.")
    dataset: str = Field(min_length=1, description="Training data, `name:version` or `name` (latest).")
    eval_dataset: str = Field(min_length=1, description="Evaluation data, `name:version` or `name`.")
    text: str = Field(default="text", min_length=1, description="The text column (text-classification).")
    target: str = Field(default="label", min_length=1, description="The label column.")
    method: FinetuneMethod = Field(default="head", description="head, full or lora (text-classification).")
    epochs: int | None = Field(default=None, ge=1, le=10_000, description="Default: by method.")
    lr: float | None = Field(default=None, gt=0, le=10, description="Learning rate; default: by method.")
    batch_size: int = Field(default=16, ge=1, le=4096, description="Rows per step (full, lora, image).")
    max_length: int = Field(default=64, ge=4, le=512, description="Tokens per text in training.")
    lora_rank: int = Field(default=8, ge=1, le=256, description="lora: the adapters' rank r.")
    lora_alpha: float = Field(default=16.0, gt=0, le=4096, description="lora: scale alpha (alpha / r).")
    freeze: bool = Field(default=False, description="image-classification: train only the new head.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the head, shuffling, dropout.")
    model_name: Name | None = Field(
        default=None, max_length=100, description="Registry name; default: job name."
    )
    cpus: int = Field(default=1, ge=1, le=1024, description="CPU cores (torch threads).")
    limits: ResourceLimits = Field(default_factory=ResourceLimits, description="Sandbox limits.")
    resolved_datasets: dict[str, ResolvedDataset] | None = Field(
        default=None, description="Filled by the server."
    )
    resolved_base: ResolvedBase | None = Field(default=None, description="Filled by the server.")

    @model_validator(mode="after")
    def _image_method(self) -> FinetuneSpec:
        if self.task == "image-classification" and self.method != "head" and self.method != "full":
            raise ValueError(
                "image-classification fine-tunes the CNN (method full, or freeze: true); not lora"
            )
        return self

    def epochs_and_lr(self) -> tuple[int, float]:
        """The epochs and learning rate, defaults by method (and task) applied."""
        epochs, lr = IMAGE_DEFAULTS if self.task == "image-classification" else DEFAULTS[self.method]
        return self.epochs or epochs, self.lr or lr


def text_block(config: dict[str, Any]) -> dict[str, Any] | None:
    """A model config's ``text`` block (contract: docs/openai.md), or None."""
    block = config.get("text")
    return block if isinstance(block, dict) else None

"""The ``finetune`` job (docs/finetuning.md): download the base version, fine-tune, register the result.

Run by the bootstrap (:mod:`aicloud.training.bootstrap`) after the datasets are downloaded:

1. log the params (base, method, epochs, lr...);
2. download the base version the server resolved (``resolved_base.ref``, e.g. ``zoo/minilm:1``);
3. ``text-classification``: :func:`aicloud.training.finetune_text.finetune_text` (head, full, lora);
   ``image-classification``: :func:`aicloud.training.finetune_image.finetune_cnn`;
4. register ``output/model`` as the next version of ``model_name`` (default: the job name); the
   server's lineage links it to its base (``parent_version``, ``derived``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aicloud.errors import ValidationError
from aicloud.schemas.finetune import FinetuneSpec

if TYPE_CHECKING:
    import pandas as pd

    from aicloud.training.env import WorkloadEnv
    from aicloud.training.finetune_text import TextData
    from aicloud.training.session import Session


def _print(line: str) -> None:
    print(line, flush=True)


def text_data(train: pd.DataFrame, evaluation: pd.DataFrame, text: str, target: str) -> TextData:
    """Texts and label indices (labels sorted, fitted on the train rows) of the two splits."""
    from aicloud.artifacts.preprocess import LabelEncoder
    from aicloud.training.finetune_text import TextData

    for role, frame in (("spec.dataset", train), ("spec.eval_dataset", evaluation)):
        missing = [c for c in (text, target) if c not in frame.columns]
        if missing:
            raise ValidationError.field(role, f"the data has no column {missing[0]!r}")
    train = train[train[text].notna() & train[target].notna()]
    labels = LabelEncoder.fit(train[target])
    if len(labels.labels) < 2:
        raise ValidationError.field(
            "spec.target", f"the train data has {len(labels.labels)} class(es); need ≥ 2"
        )
    y_eval = labels.encode(evaluation[target])
    keep = (y_eval >= 0) & evaluation[text].notna().to_numpy()
    if not keep.any():
        raise ValidationError.field(
            "spec.eval_dataset", "no eval row has a text and a label seen in training"
        )
    return TextData(
        texts_train=[str(t) for t in train[text]],
        y_train=labels.encode(train[target]),
        texts_eval=[str(t) for t in evaluation[text][keep]],
        y_eval=y_eval[keep],
        labels=list(labels.labels),
    )


def threads(spec: FinetuneSpec) -> int:
    """Torch and ONNX Runtime threads: ``AICLOUD_CPUS`` (set by the executor), else the spec's ``cpus``."""
    try:
        return max(1, int(os.environ.get("AICLOUD_CPUS") or spec.cpus))
    except ValueError:
        return spec.cpus


def run_finetune(sess: Session, env: WorkloadEnv, paths: dict[str, Path], output: Path) -> int:
    """The ``finetune`` job, start to registration (rank 0 only: a fine-tune runs on one worker)."""
    from aicloud.artifacts.format import read_config
    from aicloud.training.datasets import read_dataset

    sess.start_system_metrics()
    spec = FinetuneSpec.model_validate(env.job.spec)
    epochs, lr = spec.epochs_and_lr()
    base_ref = spec.resolved_base.ref if spec.resolved_base is not None else spec.base
    if "train" not in paths or "eval" not in paths:
        raise ValidationError.field("spec.dataset", "the job's train and eval datasets were not resolved")
    params: dict[str, Any] = {"base": base_ref, "task": spec.task, "method": spec.method, "epochs": epochs,
                              "lr": lr, "batch_size": spec.batch_size, "target": spec.target}  # fmt: skip
    if spec.task == "text-classification":
        params.update(text=spec.text, max_length=spec.max_length)
        if spec.method == "lora":
            params.update(lora_rank=spec.lora_rank, lora_alpha=spec.lora_alpha)
    else:
        params["freeze"] = spec.freeze
    if env.attempt == 0:
        sess.log_params(params)
    base = sess.client.models.download(base_ref, output.parent / "base")
    config = read_config(base)
    _print(f"[aicloud] base {base_ref} → {base}")
    train, _ = read_dataset(paths["train"])
    evaluation, _ = read_dataset(paths["eval"])
    out = output / "model"
    if spec.task == "text-classification":
        from aicloud.training.finetune_text import finetune_text

        data = text_data(train, evaluation, spec.text, spec.target)
        _print(f"[aicloud] {spec.method}: {len(data.y_train)} train / {len(data.y_eval)} eval texts, "
               f"{len(data.labels)} labels")  # fmt: skip
        metrics = finetune_text(
            base, config, data, out, method=spec.method, epochs=epochs, lr=lr, batch_size=spec.batch_size,
            max_length=spec.max_length, seed=spec.seed, rank=spec.lora_rank, alpha=spec.lora_alpha,
            threads=threads(spec), base_ref=base_ref, tracker=sess, log=_print,
        )  # fmt: skip
    else:
        import torch

        from aicloud.training.finetune_image import finetune_cnn

        torch.set_num_threads(threads(spec))
        metrics = finetune_cnn(
            base, config, train, evaluation, out, target=spec.target, epochs=epochs, lr=lr,
            batch_size=spec.batch_size, freeze=spec.freeze, seed=spec.seed, base_ref=base_ref,
            tracker=sess, log=_print,
        )  # fmt: skip
    sess.flush()
    _print("done: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    sess.register_model(out, name=spec.model_name or env.job.name or "finetuned", metrics=metrics)
    return 0

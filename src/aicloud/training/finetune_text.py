"""Fine-tuning a text encoder into a text classifier: ``head``, ``full`` and ``lora`` (docs/finetuning.md).

:func:`finetune_text` reads top to bottom: tokenize the train and eval texts with the base's
``tokenizer.json`` (the ``tokenizers`` package), then by method

* ``head``: embeddings of every text from the frozen base graph (ONNX Runtime on its ``model.onnx``:
  no torch forward passes), a linear head (softmax regression) trained on them full-batch; the served
  graph is the base graph with the head appended (``MatMul`` + ``Add`` → ``logits``);
* ``full``: the encoder (:mod:`aicloud.training.text_encoder`, from the base's ``encoder.safetensors``)
  and a head trained together with AdamW on mini-batches; exported to ONNX;
* ``lora``: the encoder frozen, rank-``r`` adapters on the attention's query and value projections
  and the head trained; the adapter is kept (``adapter.safetensors``) and merged for the ONNX graph;

and writes a text-classification version (contract: ``logits`` output, ``labels``, the ``text`` block,
``tokenizer.json``). Every epoch logs ``eval_loss``, ``eval_accuracy``, ``eval_macro_f1``.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aicloud.training.class_metrics import classification_metrics
from aicloud.training.loop import NullTracker, Tracker

ADAPTER = "adapter.safetensors"
EMBED_BATCH = 64


@dataclass
class TextData:
    texts_train: list[str]
    y_train: np.ndarray
    texts_eval: list[str]
    y_eval: np.ndarray
    labels: list[Any]


@dataclass
class Tokens:
    arrays: dict[str, np.ndarray]  # input name → int64 [N, T]

    def rows(self, idx: np.ndarray | slice) -> dict[str, np.ndarray]:
        return {k: v[idx] for k, v in self.arrays.items()}

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))


def tokenize(base: Path, base_config: dict[str, Any], texts: list[str], max_length: int) -> Tokens:
    """The model's inputs for ``texts`` (the base's tokenizer, :mod:`aicloud.artifacts.text`): int64
    arrays padded to the longest row, truncated at ``max_length`` (and the base's own limit)."""
    from aicloud.artifacts.text import TextTokenizer, load_tokenizer, text_spec

    spec = text_spec(base_config)
    spec = dataclasses.replace(spec, max_length=min(max_length, spec.max_length))
    tokenizer = TextTokenizer(load_tokenizer(base / spec.tokenizer), spec)
    return Tokens(tokenizer.encode([str(t) for t in texts]).arrays)


def _log_epoch(tracker: Tracker, log: Callable[[str], None], epoch: int, epochs: int,
               metrics: dict[str, float], train_loss: float, seconds: float) -> None:  # fmt: skip
    tracker.log_metric("train_loss", train_loss, step=epoch)
    for name, value in metrics.items():
        tracker.log_metric(name, value, step=epoch)
    tracker.log_metric("epoch_seconds", seconds, step=epoch)
    epoch_end = getattr(tracker, "epoch_end", None)
    if epoch_end is not None:
        epoch_end()
    shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    log(f"epoch {epoch}/{epochs} train_loss={train_loss:.4f} {shown} ({seconds:.2f}s)")


# -----------------------------------------------------------------------------------------------------
# head: a linear head on the frozen base graph's embeddings


def onnx_embeddings(base: Path, tokens: Tokens, threads: int = 1) -> np.ndarray:
    """The base graph's ``embeddings`` of every row, in batches (ONNX Runtime)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(base / "model.onnx"), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    parts = []
    for start in range(0, len(tokens), EMBED_BATCH):
        rows = tokens.rows(slice(start, start + EMBED_BATCH))
        parts.append(session.run(["embeddings"], {k: v for k, v in rows.items() if k in wanted})[0])
    return np.concatenate(parts).astype(np.float32)


def train_head(
    x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, classes: int,
    epochs: int, lr: float, seed: int, tracker: Tracker, log: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:  # fmt: skip
    """Softmax regression (Adam, full batch, ``epochs`` steps): ``(W [D, C], b [C], eval metrics)``."""
    import torch

    torch.manual_seed(seed)
    head = torch.nn.Linear(x_train.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    xt, yt, xe = torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(x_eval)
    metrics: dict[str, float] = {}
    every = max(1, epochs // 20)  # about 20 points of the metric series
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(head(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if epoch % every == 0 or epoch == epochs:
            with torch.no_grad():
                metrics = classification_metrics(head(xe).numpy(), y_eval)
            _log_epoch(tracker, log, epoch, epochs, metrics, loss.item(), time.perf_counter() - t0)
    weight = head.weight.detach().numpy().T.copy()
    return weight.astype(np.float32), head.bias.detach().numpy().astype(np.float32), metrics


def head_graph(base: Path, out: Path, weight: np.ndarray, bias: np.ndarray) -> None:
    """The base graph with ``logits = embeddings · W + b`` appended (output ``logits`` only)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(base / "model.onnx"))
    graph = model.graph
    graph.initializer.extend(
        [numpy_helper.from_array(weight, "head_weight"), numpy_helper.from_array(bias, "head_bias")]
    )
    graph.node.extend([
        helper.make_node("MatMul", ["embeddings", "head_weight"], ["head_matmul"]),
        helper.make_node("Add", ["head_matmul", "head_bias"], ["logits"]),
    ])  # fmt: skip
    while len(graph.output):
        graph.output.pop()
    graph.output.append(
        helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", weight.shape[1]])
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "model.onnx"))


# -----------------------------------------------------------------------------------------------------
# full and lora: the encoder in torch


def train_encoder(
    base: Path, data: TextData, train: Tokens, evaluation: Tokens, method: str, *, epochs: int, lr: float,
    batch_size: int, seed: int, rank: int, alpha: float, tracker: Tracker, log: Callable[[str], None],
) -> tuple[Any, dict[str, float]]:  # fmt: skip
    """Train the classifier (``full``: every weight; ``lora``: adapters and head): ``(model, metrics)``."""
    import torch

    from aicloud.training.text_encoder import TextClassifier, add_lora, load_encoder

    torch.manual_seed(seed)
    encoder = load_encoder(base)
    if method == "lora":
        add_lora(encoder, rank, alpha)
    model = TextClassifier(encoder, len(data.labels))
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(data.y_train)
    tensors = {k: torch.from_numpy(v) for k, v in train.arrays.items()}
    eval_tensors = {k: torch.from_numpy(v) for k, v in evaluation.arrays.items()}
    log(f"{method}: {sum(p.numel() for p in trained)} of {sum(p.numel() for p in model.parameters())} "
        f"parameters trained, {len(y)} rows, {torch.get_num_threads()} thread(s)")  # fmt: skip
    metrics: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v[idx] for k, v in tensors.items()}
            width = int(batch["attention_mask"].sum(dim=1).max())  # trim the padding of this batch
            loss = torch.nn.functional.cross_entropy(
                model(**{k: v[:, :width] for k, v in batch.items()}), y[idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.inference_mode():
            logits = torch.cat([
                model(**{k: v[s : s + EMBED_BATCH] for k, v in eval_tensors.items()})
                for s in range(0, len(data.y_eval), EMBED_BATCH)
            ])  # fmt: skip
        metrics = classification_metrics(logits.numpy(), data.y_eval)
        _log_epoch(tracker, log, epoch, epochs, metrics, total / max(1, len(y)), time.perf_counter() - t0)
    return model, metrics


def finetune_text(
    base: Path, base_config: dict[str, Any], data: TextData, out: Path, *, method: str, epochs: int,
    lr: float, batch_size: int = 16, max_length: int = 64, seed: int = 0, rank: int = 8, alpha: float = 16.0,
    threads: int = 1, base_ref: str = "", tracker: Tracker | None = None, log: Callable[[str], None] = print,
) -> dict[str, float]:  # fmt: skip
    """Fine-tune ``base`` (a text encoder folder) on ``data`` by ``method`` and write the classifier
    version into ``out`` (:func:`aicloud.artifacts.text.save_text_model`); returns its eval metrics."""
    import torch

    from aicloud.artifacts.text import save_text_model, text_spec

    tracker = tracker or NullTracker()
    spec = text_spec(base_config)
    train = tokenize(base, base_config, data.texts_train, max_length)
    evaluation = tokenize(base, base_config, data.texts_eval, max_length)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    info: dict[str, Any] = {"base": base_ref, "method": method, "epochs": epochs, "lr": lr}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".finetune-", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        model: Any
        try:
            if method == "head":
                t0 = time.perf_counter()
                x_train, x_eval = (
                    onnx_embeddings(base, train, threads),
                    onnx_embeddings(base, evaluation, threads),
                )
                log(f"head: {len(train) + len(evaluation)} embeddings in {time.perf_counter() - t0:.1f}s")
                w, b, metrics = train_head(x_train, data.y_train, x_eval, data.y_eval, len(data.labels),
                                           epochs, lr, seed, tracker, log)  # fmt: skip
                head_graph(base, tmp, w, b)
                model = tmp / "model.onnx"
            else:
                model, metrics = train_encoder(
                    base, data, train, evaluation, method, epochs=epochs, lr=lr, batch_size=batch_size,
                    seed=seed, rank=rank, alpha=alpha, tracker=tracker, log=log,
                )  # fmt: skip
                info["batch_size"] = batch_size
                if method == "lora":
                    info["adapter"] = _save_adapter(model, tmp, rank, alpha)
                    from aicloud.training.text_encoder import merge_lora

                    merge_lora(model.encoder)
                model.eval()
            save_text_model(
                out, model, base / spec.tokenizer, "text-classification", labels=data.labels,
                max_length=spec.max_length, lowercase=spec.lowercase, inputs=list(spec.inputs),
                example_texts=data.texts_eval[:4] or None, tolerance=1e-3,
                config={"output": "logits", "finetune": info,
                        "metrics": {k: (v if np.isfinite(v) else None) for k, v in metrics.items()}},
            )  # fmt: skip
            if method == "lora":
                shutil.move(tmp / ADAPTER, out / ADAPTER)
        finally:
            torch.set_num_threads(previous)
    return metrics


def _save_adapter(model: Any, folder: Path, rank: int, alpha: float) -> dict[str, Any]:
    """``adapter.safetensors``: every LoRA tensor and the head; returns the config's ``adapter`` block."""
    from safetensors.torch import save_file

    from aicloud.training.text_encoder import LORA_TARGETS, lora_state

    head = {f"head.{k}": v.detach().contiguous() for k, v in model.head.state_dict().items()}
    tensors = {**lora_state(model), **head}
    save_file(tensors, str(folder / ADAPTER), metadata={"format": "aicloud.lora/v1"})
    return {
        "file": ADAPTER,
        "rank": rank,
        "alpha": alpha,
        "targets": list(LORA_TARGETS),
        "parameters": int(sum(v.numel() for v in tensors.values())),
    }

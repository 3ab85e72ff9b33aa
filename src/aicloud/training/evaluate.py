"""The ``evaluate`` job (docs/evaluation.md): score a model version on a dataset version, in chunks,
and record the metrics on the version.

Run by the bootstrap (:mod:`aicloud.training.bootstrap`) after the dataset is downloaded:

1. download the version the server resolved (``resolved_model``) and load it
   (:func:`aicloud.artifacts.loader.load_model`: built-in tasks, ONNX, tensor-input models);
2. read the dataset ``chunk_rows`` rows at a time (:func:`iter_chunks`), predict each chunk
   (:func:`predict_chunk`) and log ``rows_done``;
3. pick the metrics from the model (:func:`choose_kind`): a classifier (labels, a classification
   task, probabilities, or a raw output of several columns) gets accuracy, macro-F1 and ROC-AUC
   (binary: of the positive class, the second label; multiclass: one-vs-rest, macro); a regressor
   RMSE, MAE and R² (scikit-learn);
4. post them to ``POST /models/{name}/versions/{v}/metrics`` as ``eval:<dataset>:<version>:<metric>``
   (merged into the version's metrics), print them and log them to the job's run.

The chunk helpers are shared with :mod:`aicloud.training.batch_predict`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from aicloud.errors import ValidationError
from aicloud.schemas.evaluation import EvaluateSpec, metric_key

if TYPE_CHECKING:
    from aicloud.artifacts.loader import LoadedModel
    from aicloud.training.env import WorkloadEnv
    from aicloud.training.session import Session

__all__ = [
    "choose_kind",
    "classification_metrics",
    "iter_chunks",
    "predict_chunk",
    "regression_metrics",
    "run_evaluate",
]


def _print(line: str) -> None:
    print(line, flush=True)


# -----------------------------------------------------------------------------------------------------
# reading in chunks


def iter_chunks(path: Path, fmt: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The dataset ``chunk_rows`` rows at a time, in file order. CSV and JSON Lines stream through
    pandas' chunked readers and Parquet through pyarrow's batches, so memory follows the chunk, not
    the file; an NPZ archive is loaded whole (NumPy reads its arrays whole) and sliced."""
    if fmt == "npz":
        from aicloud.training.datasets import read_dataset

        frame, _ = read_dataset(path, "npz")
        for start in range(0, len(frame), chunk_rows):
            yield frame.iloc[start : start + chunk_rows].reset_index(drop=True)
        return
    if fmt == "csv":  # pandas, not pyarrow's reader: that one fixes each column's type on its first block
        with pd.read_csv(path, chunksize=chunk_rows) as reader:
            for frame in reader:
                frame.columns = [str(c) for c in frame.columns]
                yield frame.reset_index(drop=True)
        return
    if fmt == "jsonl":
        with pd.read_json(path, lines=True, chunksize=chunk_rows) as reader:
            for frame in reader:
                frame.columns = [str(c) for c in frame.columns]
                yield frame.reset_index(drop=True)
        return
    yield from _parquet_chunks(path, chunk_rows)


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    batches: Iterator[pa.RecordBatch] = pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield _frame(table.slice(0, chunk_rows))
            rest = table.slice(chunk_rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield _frame(pa.Table.from_batches(pending))


def _frame(table: Any) -> pd.DataFrame:
    frame = table.to_pandas()
    frame.columns = [str(c) for c in frame.columns]
    return frame


# -----------------------------------------------------------------------------------------------------
# predicting a chunk


def _tensor_columns(frame: pd.DataFrame, name: str, target: str | None, single: bool) -> list[str]:
    """The columns feeding tensor input ``name``: ``name`` itself, its flattened ``name_*`` columns
    (an NPZ array), else (the only input) every column but the target."""
    if name in frame.columns:
        return [name]
    flat = [c for c in frame.columns if c.startswith(f"{name}_")]
    if flat:
        return flat
    if single:
        return [c for c in frame.columns if c != target]
    raise ValidationError.field("spec.datasets.data", f"the data has no column for the model input {name!r}")


def model_inputs(model: LoadedModel, frame: pd.DataFrame, target: str | None) -> Any:
    """What the model takes for these rows: the frame itself (tabular models: their preprocessing and
    signature pick the columns), or one array per tensor input, reshaped to the input's shape."""
    specs = model.tensor_inputs
    if not specs:
        return frame.drop(columns=[target]) if target and target in frame.columns else frame
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        columns = _tensor_columns(frame, spec.name, target, len(specs) == 1)
        values = frame[columns].to_numpy(dtype=np.dtype(spec.dtype) if spec.dtype else None)
        if spec.fixed and values.shape[1] == spec.size:
            values = values.reshape(len(frame), *spec.shape)
        arrays[spec.name] = values
    return arrays


def _is_probabilities(out: np.ndarray) -> bool:
    return bool(out.size) and float(out.min()) >= 0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3)


def _softmax(out: np.ndarray) -> np.ndarray:
    out = np.exp(out - out.max(axis=1, keepdims=True))
    return np.asarray(out / out.sum(axis=1, keepdims=True))


def _predict_texts(model: LoadedModel, frame: pd.DataFrame, text: str) -> tuple[np.ndarray, np.ndarray]:
    """A text classifier (a ``text`` block, :mod:`aicloud.artifacts.text`) on column ``text``: the
    texts tokenized as a replica does, the logits' softmax, the labels."""
    from aicloud.artifacts.text import TextTokenizer

    tokenizer = getattr(model, "_aicloud_tokenizer", None)
    if tokenizer is None:
        tokenizer = TextTokenizer.load(model.folder, model.config)
        model._aicloud_tokenizer = tokenizer  # type: ignore[attr-defined]
    if text not in frame.columns:
        raise ValidationError.field("spec.text", f"the data has no column {text!r}")
    texts = ["" if v is None or v != v else str(v) for v in frame[text].tolist()]
    if model.task != "text-classification":
        raise ValidationError.field("spec.model", f"a {model.task} text model has no predictions to score")
    proba = _softmax(np.asarray(model.run_features(tokenizer.encode(texts).arrays), dtype=np.float64))
    labels = list(model.config.get("labels") or range(proba.shape[1]))
    return np.asarray([labels[i] for i in np.argmax(proba, axis=1)], dtype=object), proba


def predict_chunk(
    model: LoadedModel, frame: pd.DataFrame, target: str | None, text: str = "text"
) -> tuple[np.ndarray, np.ndarray | None]:
    """(predictions, class probabilities or None) for one chunk. Built-in and labelled classifiers
    predict their labels; a text classifier reads column ``text``; a raw output of several columns
    is read as classes 0..C-1 (softmax unless its rows already sum to 1); a single column is a
    regression."""
    if isinstance(model.config.get("text"), dict):
        return _predict_texts(model, frame, text)
    inputs = model_inputs(model, frame, target)
    if model.is_classifier:
        proba = model.predict_proba(inputs)
        index = np.argmax(proba, axis=1)
        labels = model.labels.decode(index) if model.labels is not None else index
        return np.asarray(labels), proba
    if model.scaler is not None or model.task == "tabular-regression":
        return np.asarray(model(inputs), dtype=np.float64), None
    out = np.asarray(model.outputs(inputs), dtype=np.float64)
    out = out.reshape(out.shape[0], -1)
    if out.shape[1] == 1:
        return out[:, 0], None
    if not _is_probabilities(out):
        out = _softmax(out)
    return np.argmax(out, axis=1), out


def class_labels(model: LoadedModel, proba: np.ndarray | None) -> list[Any]:
    """The class of each probability column: the model's labels, else 0..C-1."""
    if model.labels is not None:
        return list(model.labels.labels)
    return list(range(proba.shape[1])) if proba is not None else []


# -----------------------------------------------------------------------------------------------------
# metrics


def choose_kind(config: dict[str, Any], has_probabilities: bool) -> str:
    """``classification`` or ``regression``: a version with labels, a classification task, class
    probabilities as its output, or outputs of several classes is scored as a classifier."""
    from aicloud.artifacts.format import CLASSIFICATION_TASKS

    if config.get("labels") is not None or config.get("task") in CLASSIFICATION_TASKS:
        return "classification"
    if config.get("output") == "probabilities" or has_probabilities:
        return "classification"
    return "regression"


def _key(value: Any) -> str:
    """A label as text, so 1, 1.0 and "1" from a CSV are the same class."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer, np.bool_)):
        return str(value.item())
    return str(value)


def classification_metrics(
    y_true: Any, y_pred: Any, proba: np.ndarray | None, labels: list[Any]
) -> dict[str, float]:
    """accuracy, macro-F1 (over the model's classes) and ROC-AUC (binary: of the second class, the
    positive one; multiclass: one-vs-rest, macro) when the data has at least two of its classes."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    truth = np.array([_key(v) for v in y_true], dtype=object)
    predicted = np.array([_key(v) for v in y_pred], dtype=object)
    names = [_key(v) for v in labels] or sorted(set(truth) | set(predicted))
    out = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1_macro": float(f1_score(truth, predicted, labels=names, average="macro", zero_division=0)),
    }
    if proba is not None and len(names) == proba.shape[1] and len(set(truth) & set(names)) >= 2:
        known = np.isin(truth, names)
        try:
            if len(names) == 2:
                out["roc_auc"] = float(roc_auc_score(truth[known] == names[1], proba[known, 1]))
            else:
                present = [i for i, n in enumerate(names) if n in set(truth[known])]
                p = proba[known][:, present]
                p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
                out["roc_auc"] = float(
                    roc_auc_score(truth[known], p, multi_class="ovr", average="macro",
                                  labels=[names[i] for i in present])
                )  # fmt: skip
        except ValueError:
            pass  # e.g. a single class among the known rows
    return out


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """RMSE, MAE and R² (R² is omitted when the target is constant)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    truth = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(y_pred, dtype=np.float64)
    out = {
        "rmse": math.sqrt(float(mean_squared_error(truth, predicted))),
        "mae": float(mean_absolute_error(truth, predicted)),
    }
    if len(truth) > 1 and float(np.var(truth)) > 0:
        out["r2"] = float(r2_score(truth, predicted))
    return out


# -----------------------------------------------------------------------------------------------------
# the job


def threads(cpus: int) -> int:
    """Model threads: ``AICLOUD_CPUS`` (set by the executor), else the spec's ``cpus``."""
    import os

    try:
        return max(1, int(os.environ.get("AICLOUD_CPUS") or cpus))
    except ValueError:
        return cpus


def load_version(sess: Session, ref: str, folder: Path, cpus: int) -> LoadedModel:
    """Download version ``ref`` into ``folder`` and load it on ``cpus`` threads."""
    import torch

    from aicloud.artifacts.loader import load_model

    torch.set_num_threads(threads(cpus))
    path = sess.client.models.download(ref, folder)
    model = load_model(path, threads=threads(cpus))
    _print(f"[aicloud] model {ref} → {path} ({model!r})")
    return model


def dataset_info(env: WorkloadEnv) -> dict[str, Any]:
    """The dataset version the server resolved for role ``data`` (name, version, format)."""
    return dict(env.job.resolved.get("data") or {})


def run_evaluate(sess: Session, env: WorkloadEnv, paths: dict[str, Path], output: Path) -> int:
    """The ``evaluate`` job: metrics of the resolved version on the data, recorded on the version."""
    spec = EvaluateSpec.model_validate(env.job.spec)
    if "data" not in paths:
        raise ValidationError.field("spec.datasets.data", "the job's dataset was not resolved")
    ref = spec.resolved_model.ref if spec.resolved_model is not None else spec.model
    model = load_version(sess, ref, output.parent / "model", spec.cpus)
    target = spec.target or model.config.get("target")
    if not target:
        raise ValidationError.field("spec.target", "the model names no target column; set `target`")
    info = dataset_info(env)
    sess.log_params({"model": ref, "dataset": f"{info.get('name')}:{info.get('version')}", "target": target})
    truth: list[np.ndarray] = []
    predicted: list[np.ndarray] = []
    probas: list[np.ndarray] = []
    done = 0
    for step, frame in enumerate(
        iter_chunks(paths["data"], str(info.get("format") or "csv"), spec.chunk_rows)
    ):
        if target not in frame.columns:
            raise ValidationError.field("spec.target", f"the data has no column {target!r}")
        frame = frame[frame[target].notna()].reset_index(drop=True)
        if frame.empty:
            continue
        pred, proba = predict_chunk(model, frame, str(target), spec.text)
        truth.append(frame[target].to_numpy())
        predicted.append(pred)
        if proba is not None:
            probas.append(proba)
        done += len(frame)
        sess.log_metric("rows_done", done, step=step)
        _print(f"[aicloud] rows_done={done}")
    if not done:
        raise ValidationError.field("spec.datasets.data", f"no row has a value of {target!r}")
    proba_all = np.concatenate(probas) if probas else None
    if choose_kind(model.config, proba_all is not None) == "classification":
        metrics = classification_metrics(
            np.concatenate(truth), np.concatenate(predicted), proba_all, class_labels(model, proba_all)
        )
    else:
        metrics = regression_metrics(np.concatenate(truth), np.concatenate(predicted))
    for name, value in metrics.items():
        sess.log_metric(name, value)
    sess.flush()
    name, version = (
        (spec.resolved_model.name, spec.resolved_model.version) if spec.resolved_model else (ref, 0)
    )
    keyed = {
        metric_key(str(info.get("name")), int(info.get("version") or 0), k): v for k, v in metrics.items()
    }
    sess.client.models.record_metrics(name, version, keyed)
    _print("metrics: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    (output / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return 0

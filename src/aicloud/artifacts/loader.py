"""The model artifact loader: :func:`load_model` rebuilds a model folder into a :class:`LoadedModel`.

Built-in architectures are rebuilt from ``config["architecture"]``
(:func:`aicloud.artifacts.architectures.build_model`) and given their safetensors weights; ONNX models
run with ONNX Runtime. Loading reads JSON, safetensors and ONNX only: nothing in an artifact can run
Python code. The format itself (files, ``config.json``, the writers) is :mod:`aicloud.artifacts.format`.

    from aicloud.artifacts.loader import load_model

    model = load_model("model/")                 # a folder with config.json
    model([{"pixel_0_0": 0, ...}])               # → array of labels (classifiers) or floats
    model.predict_proba(frame)                   # classifiers: (rows, classes) probabilities

A model saved from your own code (``save_model(module, example_input=...)``) takes tensors: rows of
its input's shape, or objects of named tensors for several inputs (:mod:`aicloud.artifacts.inputs`,
the conversion the serving runtime uses too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from torch import nn

from aicloud.artifacts.architectures import build_model
from aicloud.artifacts.format import CLASSIFICATION_TASKS, ONNX, WEIGHTS, read_config
from aicloud.artifacts.inputs import tensor_inputs, tensors_from_rows
from aicloud.artifacts.onnxrt import onnx_runner
from aicloud.artifacts.preprocess import LabelEncoder, Preprocessor, TargetScaler, records_frame
from aicloud.errors import InvalidDataError, ValidationError

TableRows = pd.DataFrame | Sequence[Mapping[Any, Any]] | np.ndarray | Sequence[Sequence[Any]]
Rows = TableRows | Mapping[str, Any]
Features = np.ndarray | Mapping[str, np.ndarray]


class LoadedModel:
    """A loaded model version: call it on raw rows to get predictions.

    Rows are a list of dicts, a pandas DataFrame, or a 2-D array of raw features in signature order;
    for a model with tensor inputs (:mod:`aicloud.artifacts.inputs`), rows of the input's shape or
    objects of named tensors (or one array per input).
    Classifiers return labels in their original values; regressors return floats; a generic ONNX model
    without a task returns its raw output array.
    """

    def __init__(
        self,
        folder: Path,
        config: dict[str, Any],
        run: Callable[[Features], np.ndarray],
        module: nn.Module | None = None,
    ) -> None:
        self.folder = folder
        self.config = config
        self.module = module  # the torch module of a built-in architecture; None for ONNX
        self._run = run
        pre = config.get("preprocessing")
        self.preprocessor = Preprocessor.from_config(pre) if isinstance(pre, dict) else None
        self.labels = LabelEncoder(list(config["labels"])) if config.get("labels") is not None else None
        scale = config.get("target_scale")
        self.scaler = TargetScaler(float(scale[0]), float(scale[1])) if scale else None
        self.input_shape = [int(s) for s in config.get("input_shape") or []]
        self.tensor_inputs = tensor_inputs(config)

    @property
    def signature(self) -> dict[str, Any]:
        sig = self.config.get("signature")
        return sig if isinstance(sig, dict) else {}

    @property
    def task(self) -> str | None:
        task = self.config.get("task")
        return str(task) if task else None

    @property
    def is_classifier(self) -> bool:
        return self.labels is not None or self.task in CLASSIFICATION_TASKS

    @property
    def input_names(self) -> list[str]:
        if self.preprocessor is not None:
            return list(self.preprocessor.features)
        return [str(i.get("name")) for i in self.signature.get("inputs", []) if isinstance(i, dict)]

    def _frame(self, rows: TableRows) -> pd.DataFrame:
        if isinstance(rows, pd.DataFrame):
            return rows
        if len(rows) == 0:
            return pd.DataFrame({name: pd.Series(dtype="float64") for name in self.input_names})
        if isinstance(rows, np.ndarray) or (len(rows) > 0 and not isinstance(rows[0], Mapping)):
            arr = np.asarray(rows, dtype=object if isinstance(rows, list) else None)
            if arr.ndim != 2:
                raise ValidationError.field("inputs", f"expected a 2-D array of rows, got shape {arr.shape}")
            names = self.input_names
            if arr.shape[1] != len(names):
                raise ValidationError.field(
                    "inputs", f"expected {len(names)} values per row (in signature order), got {arr.shape[1]}"
                )
            return pd.DataFrame(arr, columns=names)
        return records_frame(rows)

    def features(self, rows: Rows) -> Features:
        """The model's input tensor (as numpy) for raw rows: preprocessing applied, reshaped; for a
        model with tensor inputs, one validated array per input name."""
        if self.tensor_inputs:
            return tensors_from_rows(self.tensor_inputs, rows)
        if isinstance(rows, Mapping):
            raise ValidationError.field("inputs", "expected rows (a list, an array or a DataFrame)")
        if self.preprocessor is not None:
            x = self.preprocessor.transform(self._frame(rows))
        elif isinstance(rows, np.ndarray):
            x = rows
        else:
            frame = self._frame(rows)
            names = [n for n in self.input_names if n in frame.columns]
            x = frame[names].to_numpy() if names and len(names) == len(self.input_names) else frame.to_numpy()
        dtype = np.dtype(self.config.get("input_dtype") or "float32")
        x = np.ascontiguousarray(np.asarray(x, dtype=dtype))
        if self.input_shape and list(x.shape[1:]) != self.input_shape:
            x = x.reshape(x.shape[0], *self.input_shape)
        return x

    def run_features(self, x: Features) -> np.ndarray:
        """The raw model outputs for already-preprocessed numeric features (what :meth:`features` returns).

        ``x`` must be the model's input tensor: preprocessing applied, in ``config["input_dtype"]``
        (float32 by default), C-contiguous and shaped ``(rows, *input_shape)``, or (an ONNX model of several
        inputs) a dict of such arrays by input name. No validation, no pandas:
        the fast path of a server that prepares its own features.
        """
        return self._run(x)

    def outputs(self, rows: Rows) -> np.ndarray:
        """The raw model outputs (logits for the built-in classifiers)."""
        return self.run_features(self.features(rows))

    def predict_proba(self, rows: Rows) -> np.ndarray:
        """Class probabilities, ``(rows, classes)``, columns in ``config["labels"]`` order."""
        if not self.is_classifier:
            raise ValidationError.field("model", "predict_proba needs a classifier")
        out = self.outputs(rows).astype(np.float64)
        if self.config.get("output") == "probabilities":
            return out
        out = out - out.max(axis=1, keepdims=True)
        exp = np.exp(out)
        return exp / exp.sum(axis=1, keepdims=True)

    def __call__(self, rows: Rows) -> np.ndarray:
        out = self.outputs(rows)
        if self.is_classifier:
            index = np.argmax(out, axis=1)
            return self.labels.decode(index) if self.labels is not None else index
        if self.scaler is not None or self.task == "tabular-regression":
            values = out.reshape(out.shape[0], -1)[:, 0]
            return self.scaler.decode(values) if self.scaler is not None else values.astype(np.float64)
        return out

    def __repr__(self) -> str:
        kind = self.config.get("architecture", {}).get("type")
        return f"LoadedModel({str(self.folder)!r}, task={self.task!r}, architecture={kind!r})"


def load_model(folder: str | Path, threads: int | None = None) -> LoadedModel:
    """Load a model folder (``config.json`` + ``model.safetensors`` or ``model.onnx``); never unpickles.

    ``threads``: the intra-op threads of an ONNX Runtime session (one inter-op thread, and idle
    threads do not spin); None: ONNX Runtime's defaults. A torch model uses torch's setting
    (``torch.set_num_threads``).

    Raises:
        InvalidDataError: the folder is not a model, or the config names an unknown architecture.
    """
    folder = Path(folder)
    config = read_config(folder)
    architecture = config.get("architecture") or {}
    kind = architecture.get("type") if isinstance(architecture, dict) else None
    if kind == "onnx" or (kind is None and (folder / ONNX).exists()):
        if not (folder / ONNX).exists():
            raise InvalidDataError(f"{folder}: the config says ONNX but there is no {ONNX}")
        return LoadedModel(folder, config, onnx_runner(folder / ONNX, threads))
    module = build_model(architecture)  # raises on unknown types
    if not (folder / WEIGHTS).exists():
        raise InvalidDataError(f"{folder}: config.json names architecture {kind!r} but there is no {WEIGHTS}")
    try:
        module.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise InvalidDataError(
            f"{folder / WEIGHTS}: weights do not fit architecture {kind!r}: {exc}"
        ) from None
    module.eval()

    def run(x: Features) -> np.ndarray:
        with torch.inference_mode():
            if isinstance(x, Mapping):  # a built-in takes one tensor
                return module(*(torch.from_numpy(np.asarray(v)) for v in x.values())).numpy()
            return module(torch.from_numpy(x)).numpy()

    return LoadedModel(folder, config, run, module)

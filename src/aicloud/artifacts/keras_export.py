"""A Keras 3 model as an aicloud ONNX model folder: :func:`export_keras` (what
``aicloud.training.save_model(keras_model)`` runs; docs/keras.md).

    from aicloud.artifacts.keras_export import export_keras

    config = export_keras(model, folder)            # example: drawn from the inputs' shapes
    config = export_keras(model, folder, X[:8])     # or one batch of real input
    config["signature"]  # {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 10]}]}

The export is Keras' own ``model.export(path, format="onnx")`` with the model's input signature,
each batch (``None``) dimension left free: the TorchScript exporter on the torch backend, tf2onnx on
TensorFlow's (the job's environment must have it). One input is named ``input``, as every aicloud
ONNX model's; several inputs keep the model's own names (a dict of inputs: its keys; a list: the
``keras.Input`` names), and the endpoint takes objects of those named tensors. ONNX Runtime's
output on the example must match ``model.predict`` within :data:`aicloud.artifacts.format.TOLERANCE`,
else a ValidationError names the difference and nothing is kept. The served artifact is
``model.onnx``: never a pickle, a ``.keras`` or an ``.h5`` file.

keras (and the backend: torch or tensorflow) is imported when a function here runs, never at import.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aicloud.artifacts.format import (
    MAX_EXAMPLE_VALUES,
    MODEL_FORMAT,
    ONNX,
    TOLERANCE,
    WEIGHTS,
    _write_config,
)
from aicloud.errors import ValidationError

#: The seed of the example drawn when none is given (standard normal; integer inputs: zeros).
EXAMPLE_SEED = 0
EXAMPLE_ROWS = 2


def is_keras_model(obj: Any) -> bool:
    """Whether ``obj`` is a Keras 3 model (checked by its classes' modules: keras is not imported)."""
    return any(
        (cls.__module__ or "").split(".")[0] == "keras" and cls.__name__ == "Model"
        for cls in type(obj).__mro__
    )


def _signature_specs(model: Any) -> tuple[Any, list[Any], list[str]]:
    """The model's input structure (as ``model.export`` takes it), its flat specs, and their names."""
    import keras

    try:
        from keras.src.export.export_utils import get_input_signature

        structure = get_input_signature(model)
    except Exception as exc:  # an unbuilt model: no inputs known yet
        raise ValidationError.field(
            "model",
            f"the Keras model's inputs are unknown ({exc}); build it first (fit it, call it on a batch, "
            "or give its first layer input_shape) or pass example_input",
        ) from None
    flat = keras.tree.flatten(structure)
    if len(flat) == 1:
        names = ["input"]
    elif len(structure) == 1 and isinstance(structure[0], Mapping):
        names = sorted(str(k) for k in structure[0])  # keras.tree flattens a dict by sorted keys
    else:
        inputs = list(getattr(model, "inputs", None) or [])
        names = [str(getattr(t, "name", "") or f"input_{i}") for i, t in enumerate(inputs)]
        if len(names) != len(flat):
            names = [f"input_{i}" for i in range(len(flat))]
    if len(set(names)) != len(names):
        names = [f"input_{i}" for i in range(len(flat))]
    named = [
        keras.InputSpec(shape=tuple(spec.shape), dtype=spec.dtype, name=name)
        for spec, name in zip(flat, names, strict=True)
    ]
    return keras.tree.pack_sequence_as(structure, named), named, names


def _flat_example(example: Any, names: list[str], specs: list[Any]) -> list[Any]:
    """``example`` (an array, a list of arrays in input order, or a dict by input name) as numpy
    arrays in the flat input order; None: drawn from the specs."""
    import numpy as np

    if example is None:
        rng = np.random.default_rng(EXAMPLE_SEED)
        arrays = []
        for spec in specs:
            shape = [EXAMPLE_ROWS if d is None else int(d) for d in spec.shape]
            if any(d is None for d in spec.shape[1:]):
                raise ValidationError.field(
                    "example_input",
                    f"input {spec.name!r} has free axes {list(spec.shape)}: pass example_input "
                    "(one batch of real input) to export it",
                )
            dtype = np.dtype(str(spec.dtype))
            arrays.append(
                np.zeros(shape, dtype) if dtype.kind in "biu" else rng.standard_normal(shape).astype(dtype)
            )
        return arrays

    def as_array(value: Any) -> Any:
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        return np.asarray(value)

    if isinstance(example, Mapping):
        missing = [n for n in names if n not in example]
        if missing:
            raise ValidationError.field(
                "example_input", f"missing input(s) {missing}; the model's inputs are {names}"
            )
        values = [example[n] for n in names]
    elif len(names) > 1 and isinstance(example, Sequence) and not isinstance(example, str):
        values = list(example)
    else:
        values = [example]
    if len(values) != len(names):
        raise ValidationError.field(
            "example_input", f"the model has {len(names)} inputs {names}, the example {len(values)}"
        )
    arrays = [as_array(v) for v in values]
    for array, spec, name in zip(arrays, specs, names, strict=True):
        want = list(spec.shape)
        if array.ndim != len(want) or any(
            d is not None and d != g for d, g in zip(want, array.shape, strict=True)
        ):
            raise ValidationError.field(
                "example_input", f"input {name!r}: expected shape {want} (None: any), got {list(array.shape)}"
            )
    return [a.astype(str(spec.dtype), copy=False) for a, spec in zip(arrays, specs, strict=True)]


def export_keras(
    model: Any,
    folder: str | Path,
    example: Any = None,
    config: Mapping[str, Any] | None = None,
    *,
    tolerance: float | None = TOLERANCE,
) -> dict[str, Any]:
    """Export a Keras 3 ``model`` into ``folder`` (``model.onnx`` + ``config.json``); returns the config.

    ``example``: one batch of the model's input (an array; for several inputs a list in the model's
    order or a dict by input name); None draws one from the inputs' shapes and dtypes. The config's
    ``signature.inputs`` lists each input's ``name``, ``dtype`` and ``shape`` (``-1`` for a free axis,
    the batch always); ``config`` is merged in (a ``signature`` there replaces the computed one).
    Raises ValidationError when the model is not built, the example does not fit, or ONNX Runtime's
    output differs from ``model.predict``'s by more than ``tolerance`` (nothing is kept then).
    """
    import keras
    import numpy as np

    from aicloud.artifacts.onnxrt import max_abs_diff, onnx_runner

    if not is_keras_model(model):
        raise ValidationError.field("model", f"not a Keras model: {type(model).__name__}")
    if example is not None and not getattr(model, "built", False):
        model(example if not isinstance(example, Mapping) else dict(example))  # builds a subclassed model
    structure, specs, names = _signature_specs(model)
    arrays = _flat_example(example, names, specs)
    if len(arrays[0]) == 1:  # two rows: the check sees that the batch axis is free
        arrays = [np.concatenate([a, a]) for a in arrays]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="aicloud-keras-"))
    try:
        path = scratch / ONNX
        try:
            with warnings.catch_warnings():  # the tracer's notes on shapes taken as constants
                warnings.filterwarnings("ignore", message=".*Converting a tensor to a Python")
                warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
                warnings.simplefilter("ignore", DeprecationWarning)  # Keras' and torch's internals
                model.export(str(path), format="onnx", verbose=False, input_signature=structure)
        except ImportError as exc:
            raise ValidationError.field(
                "model",
                f"Keras' ONNX export on the {keras.backend.backend()} backend needs a package the job "
                f"lacks: {exc} (TensorFlow: add tf2onnx to the job's runtime_env requirements)",
            ) from None
        if tolerance is not None:
            packed = keras.tree.pack_sequence_as(structure, arrays)
            feed = packed[0] if len(packed) == 1 else packed
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2's copy= in Keras' tree code
                want = np.asarray(model.predict(feed, verbose=0))
            got = onnx_runner(path)(dict(zip(names, arrays, strict=True)))
            diff = max_abs_diff(got, want)
            if not diff <= tolerance:  # NaN too
                raise ValidationError(
                    f"the Keras model's ONNX export differs from model.predict by up to {diff:.3g} (largest "
                    f"absolute difference on {len(arrays[0])} example row(s)), more than the tolerance "
                    f"{tolerance:g}; nothing was saved",
                    details={"max_abs_diff": diff if math.isfinite(diff) else None, "tolerance": tolerance},
                )
        shutil.move(str(path), folder / ONNX)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    tensors = [
        {
            "name": name,
            "dtype": str(spec.dtype),
            "shape": [-1, *(-1 if d is None else int(d) for d in spec.shape[1:])],
        }
        for name, spec in zip(names, specs, strict=True)
    ]
    cfg: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "architecture": {"type": "onnx"},
        "framework": {"name": "keras", "version": keras.__version__, "backend": keras.backend.backend()},
    }
    if len(tensors) == 1:
        cfg["input_shape"] = tensors[0]["shape"][1:]
        cfg["input_dtype"] = tensors[0]["dtype"]
    cfg.update(dict(config or {}))
    signature = dict(cfg.get("signature") or {"inputs": tensors})
    integers = any(a.dtype.kind in "biu" for a in arrays)
    if integers and "examples" not in signature and sum(a.size for a in arrays) <= MAX_EXAMPLE_VALUES:
        signature["examples"] = {name: a.tolist() for name, a in zip(names, arrays, strict=True)}
    cfg["signature"] = signature
    (folder / WEIGHTS).unlink(missing_ok=True)
    _write_config(folder, cfg)
    return cfg


def final_metrics(model: Any) -> dict[str, float]:
    """The last epoch's values of ``model.history`` (after ``fit``): loss, val_loss, mae... ({} if none)."""
    history = getattr(getattr(model, "history", None), "history", None)
    out: dict[str, float] = {}
    if isinstance(history, Mapping):
        for key, values in history.items():
            try:
                value = float(values[-1])
            except (TypeError, ValueError, IndexError):
                continue
            if math.isfinite(value):
                out[str(key)] = value
    return out

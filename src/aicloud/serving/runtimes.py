"""Which runtime runs a model version in a replica, and ``runtime: auto``'s choice (docs/serving.md,
"Runtimes").

A deployment's ``runtime``:

* ``torch``: a built-in model (``model.safetensors``) in torch eager;
* ``onnxruntime``: an ONNX version as it is; a built-in model exported to ONNX when the replica
  starts (:func:`aicloud.artifacts.format.save_onnx`, into a temporary folder read back at once);
* ``numpy``: the built-in MLP as matrix products (:mod:`aicloud.serving.numpy_mlp`), no torch;
* ``auto``: every runtime above that can run the version is loaded and measured on examples built
  from the signature; the fastest whose outputs match the reference (the version's own runtime:
  torch for a built-in model, ONNX Runtime for an ONNX one) within :data:`TOLERANCE` is served
  (:func:`choose`, a pure function of the measurements);
* unset (None): the version's own runtime without measuring: numpy for the built-in MLP, torch for
  the other built-ins, ONNX Runtime for ONNX.

:func:`aicloud.artifacts.runtimes.runnable` says which runtimes can run a version from its config
and file names alone: the control plane refuses an explicit runtime that cannot (422), and a
replica fails to start with the same message. ONNX Runtime sessions get the replica's intra-op
threads (``cpus // batch_workers``), one inter-op thread, and idle threads do not spin.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aicloud.artifacts.format import ONNX
from aicloud.artifacts.inputs import TensorInput, signature_examples, tensor_inputs
from aicloud.artifacts.onnxrt import max_abs_diff
from aicloud.artifacts.runtimes import check_runtime, default_runtime, kind_of, reference_of, runnable
from aicloud.errors import ValidationError

#: The largest absolute difference of any output from the reference's that ``auto`` accepts (the
#: ONNX export's check, docs/compression.md).
TOLERANCE = 1e-4
EXAMPLE_ROWS = 32
EXAMPLE_SEED = 0
#: Each runtime is timed in ROUNDS interleaved rounds of about TIME_PER_ROUND_S per batch size.
ROUNDS = 3
TIME_PER_ROUND_S = 0.05
MIN_CALLS = 5
MAX_CALLS = 200
#: The length of a free axis (``-1`` besides the batch) in examples built from the signature.
FREE_AXIS = 8

Features = np.ndarray | Mapping[str, np.ndarray]
Runner = Callable[[Any], np.ndarray]


# -----------------------------------------------------------------------------------------------------
# the choice


@dataclass(frozen=True)
class Measured:
    """One runtime measured on the examples: median latency of one call at batch 1 and at batch
    ``batch`` (ms), and the largest absolute difference of its outputs from the reference's."""

    runtime: str
    p50_ms_b1: float
    p50_ms_bn: float
    max_abs_diff: float
    batch: int = EXAMPLE_ROWS

    @property
    def cost_ms(self) -> float:
        """What ``auto`` minimizes: a request alone plus a full batch."""
        return self.p50_ms_b1 + self.p50_ms_bn


@dataclass(frozen=True)
class Choice:
    """The runtime served and why; ``line`` is how the replica's log and ``deploy show`` say it."""

    runtime: str
    reason: str
    measured: list[Measured] = field(default_factory=list)

    @property
    def line(self) -> str:
        return f"{self.runtime} ({self.reason})"


def choose(
    measured: list[Measured],
    reference: str,
    tolerance: float = TOLERANCE,
    failed: Mapping[str, str] | None = None,
) -> Choice:
    """The fastest runtime (least ``p50 b1 + p50 bN``) whose outputs are within ``tolerance`` of
    the reference's (the reference always is), and why, naming every measurement and the
    runtimes that ``failed`` to load or run (by name, with why).

    Raises:
        ValueError: ``measured`` holds no measurement of ``reference``.
    """
    if not any(m.runtime == reference for m in measured):
        raise ValueError(f"no measurement of the reference runtime {reference!r}")
    ok = [m for m in measured if m.runtime == reference or m.max_abs_diff <= tolerance]
    best = min(ok, key=lambda m: (m.cost_ms, m.runtime != reference))
    parts = []
    for m in sorted(measured, key=lambda m: m.cost_ms):
        text = f"{m.runtime} {m.p50_ms_b1:.3g}/{m.p50_ms_bn:.3g} ms"
        if m not in ok:
            text += f" (refused: differs by {m.max_abs_diff:.2g})"
        parts.append(text)
    batch = measured[0].batch
    if len(measured) == 1:
        why = f"the only runtime that can serve it (p50 b1/b{batch}: {parts[0]})"
    else:
        why = (
            f"fastest of those matching {reference} within {tolerance:g} "
            f"(p50 b1/b{batch}: {', '.join(parts)})"
        )
    for name, error in (failed or {}).items():
        why += f"; {name} failed: {error}"
    return Choice(best.runtime, f"auto: {why}", list(measured))


# -----------------------------------------------------------------------------------------------------
# loading and measuring


def example_features(config: Mapping[str, Any], rows: int = EXAMPLE_ROWS) -> Features:
    """Example inputs of the signature: the examples it keeps (the model's export's, repeated to
    ``rows`` rows), else ``rows`` rows built from it: floats from a standard normal with a fixed seed
    (the scale the built-in preprocessing produces), integers zero, a free axis of FREE_AXIS."""
    kept = signature_examples(config, rows)
    if kept:
        return next(iter(kept.values())) if len(kept) == 1 else kept
    gen = np.random.default_rng(EXAMPLE_SEED)

    def draw(shape: tuple[int, ...], dtype: str) -> np.ndarray:
        if np.dtype(dtype).kind == "f":
            return gen.standard_normal(shape).astype(dtype)
        return np.zeros(shape, dtype=dtype)

    tensors = tensor_inputs(config)
    if tensors:
        feed = {
            t.name: draw((rows, *(d if d >= 0 else FREE_AXIS for d in t.shape)), t.dtype) for t in tensors
        }
        return next(iter(feed.values())) if len(feed) == 1 else feed
    dtype = str(config.get("input_dtype") or "float32")
    shape = [int(s) for s in config.get("input_shape") or []]
    arch = config.get("architecture")
    arch = arch if isinstance(arch, dict) else {}
    if not shape and arch.get("type") == "mlp":
        shape = [int(arch["in_features"])]
    elif not shape and arch.get("type") == "cnn":
        shape = [int(np.prod([int(s) for s in arch["image_shape"]]))]
    if not shape:
        raise ValidationError.field("runtime", "cannot build example inputs: the model has no input shape")
    return draw((rows, *shape), dtype)


def load_runner(runtime: str, folder: Path, config: dict[str, Any], threads: int | None) -> Runner:
    """The forward pass of the model in ``folder`` under ``runtime``: features → raw outputs."""
    check_runtime(runtime, config, (p.name for p in folder.iterdir()))
    if runtime == "numpy":
        from aicloud.serving import numpy_mlp

        return numpy_mlp.load(folder, config)
    from aicloud.artifacts.onnxrt import onnx_runner

    if runtime == "onnxruntime" and kind_of(config, (p.name for p in folder.iterdir())) == "onnx":
        return onnx_runner(folder / ONNX, threads)  # no torch import
    from aicloud.artifacts.loader import load_model

    model = load_model(folder)
    if runtime == "onnxruntime":  # checked as `aicloud model export` checks: within TOLERANCE
        run = onnx_runner(_export(model.module, config), threads)
        x = example_features(config)
        diff = max_abs_diff(model.run_features(x), run(x))
        if not diff <= TOLERANCE:
            raise ValidationError.field(
                "runtime",
                f"the ONNX export of this version differs from it by up to {diff:.3g} on {len(x)} "
                f"example inputs (more than {TOLERANCE:g}); serve it with torch",
            )
        return run
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return model.run_features


def _export(module: Any, config: Mapping[str, Any]) -> bytes:
    """The ONNX bytes of a built-in module (dynamic batch axis), exported in a temporary folder."""
    import torch

    from aicloud.artifacts.format import save_onnx

    x = example_features(config, 2)
    assert isinstance(x, np.ndarray)
    with tempfile.TemporaryDirectory(prefix="aicloud-onnx-") as tmp:
        save_onnx(tmp, module, torch.from_numpy(x), {}, tolerance=None)  # checked by the caller
        return (Path(tmp) / ONNX).read_bytes()


def _rows(x: Features, n: int) -> Features:
    if isinstance(x, Mapping):
        return {k: np.ascontiguousarray(v[:n]) for k, v in x.items()}
    return np.ascontiguousarray(x[:n])


def _p50_ms(run: Runner, x: Features) -> float:
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MAX_CALLS and (
        len(times) < MIN_CALLS or time.perf_counter() - start < TIME_PER_ROUND_S
    ):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)


def measure(runners: dict[str, Runner], reference: str, x: Features, batch: int) -> list[Measured]:
    """Each runner's outputs against the reference's on ``x``, and its p50 at batch 1 and ``batch``
    (interleaved rounds after a warm-up, the median of the rounds' medians)."""
    expected = runners[reference](x)
    diffs = {name: max_abs_diff(expected, run(x)) for name, run in runners.items()}
    sizes = (1, min(batch, len(next(iter(x.values())) if isinstance(x, Mapping) else x)))
    medians: dict[tuple[str, int], list[float]] = {}
    for _ in range(ROUNDS):
        for size in sizes:
            feed = _rows(x, size)
            for name, run in runners.items():
                medians.setdefault((name, size), []).append(_p50_ms(run, feed))
    return [
        Measured(
            name,
            float(np.median(medians[(name, sizes[0])])),
            float(np.median(medians[(name, sizes[1])])),
            0.0 if name == reference else diffs[name],
            sizes[1],
        )
        for name in runners
    ]


def select(
    runtime: str | None, folder: Path, config: dict[str, Any], threads: int | None, batch: int = EXAMPLE_ROWS
) -> tuple[Runner, Choice]:
    """Load the model in ``folder`` under ``runtime`` (``auto``: measure and choose); the forward
    pass and what was chosen and why."""
    files = [p.name for p in folder.iterdir()]
    if runtime != "auto":
        name = runtime or default_runtime(config, files)
        why = "as the deployment asks" if runtime else "unset: the version's own"
        return load_runner(name, folder, config, threads), Choice(name, why)
    reference = reference_of(config, files)
    able = [name for name, why in runnable(config, files).items() if why is None]
    if not able:
        check_runtime(reference, config, files)  # raises, naming why
    runners: dict[str, Runner] = {}
    failed: dict[str, str] = {}
    x = example_features(config, max(EXAMPLE_ROWS, min(batch, 256)))
    for name in able:  # the reference first: its failure is the replica's
        if name == reference:
            runners[name] = load_runner(name, folder, config, threads)
            continue
        try:  # another runtime that cannot load or run the model is left out, saying why
            run = load_runner(name, folder, config, threads)
            run(_rows(x, 2))
        except Exception as exc:
            text = str(exc).strip().splitlines()
            failed[name] = f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
            continue
        runners[name] = run
    choice = choose(measure(runners, reference, x, batch), reference, failed=failed)
    return runners[choice.runtime], choice


# -----------------------------------------------------------------------------------------------------
# a Service's registered model


class ServiceModel:
    """The registered model of a deployment with both a Service and ``model``: the Service's
    ``self.model``, set before its ``setup()`` runs.

    Call it with the model's inputs as numpy arrays, batch first, by name (``self.model(input_ids=ids,
    attention_mask=mask)`` or ``self.model({"input_ids": ids, ...})``; a model of one input takes the
    array alone) and it returns the model's output as a numpy array. Integer and float inputs are cast
    to the dtype the model declares. :attr:`inputs` names them (name, dtype, shape without the batch
    axis; ``-1`` any length). Whatever runs it was chosen as for a plain model deployment
    (:func:`select`: the deployment's ``runtime``; ``auto`` measures each runtime that can serve the
    version at start); :attr:`runtime` and :attr:`choice` say which and why. ONNX Runtime gets the
    replica's intra-op threads and idle threads do not spin; torch is not imported unless torch
    serves.
    """

    def __init__(
        self, folder: Path, runtime: str | None, threads: int | None = None, batch: int = EXAMPLE_ROWS
    ) -> None:
        self.folder = Path(folder)
        self.requested = runtime
        self.threads = threads
        self.batch = batch
        self.config: dict[str, Any] = {}
        self.runtime = ""  # "numpy", "torch" or "onnxruntime" once loaded
        self.choice = ""  # the runtime and why (auto: the measurements)
        self._run: Runner | None = None

    @property
    def inputs(self) -> list[TensorInput]:
        """The model's tensor inputs (``.name``, ``.dtype``, ``.shape``), from its signature."""
        return tensor_inputs(self.config)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def load(self) -> ServiceModel:
        """Load (``auto``: measure and choose) and run the examples once; the replica calls it."""
        from aicloud.artifacts.format import read_config

        self.config = read_config(self.folder)
        self._run, choice = select(self.requested, self.folder, self.config, self.threads, self.batch)
        self.runtime, self.choice = choice.runtime, choice.line
        self._run(_rows(example_features(self.config, 2), 2))  # warm-up
        return self

    def __call__(self, inputs: Features | None = None, /, **named: np.ndarray) -> np.ndarray:
        if self._run is None:
            raise RuntimeError("the model is not loaded yet: use self.model in setup() or a handler")
        if inputs is None:
            if not named:
                raise TypeError("pass the model's inputs: self.model(name=array, ...) or a dict of them")
            inputs = named
        elif named:
            raise TypeError("pass the inputs either as one dict (or array) or by name, not both")
        return self._run(inputs)

    def __repr__(self) -> str:
        return f"ServiceModel({self.folder}, runtime={self.runtime or self.requested!r})"

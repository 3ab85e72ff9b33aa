"""Text models: the ``text`` block of ``config.json``, the tokenizer and its encoding, and the writer.

A text model is an ONNX version (``architecture.type`` ``onnx``) whose ``config.json`` carries::

    "task": "text-embedding" | "text-classification",
    "text": {"tokenizer": "tokenizer.json", "max_length": 256,
             "inputs": ["input_ids", "attention_mask"] (+ "token_type_ids"), "lowercase": false},
    "dimensions": D          (text-embedding: ONNX output ``embeddings`` float32 [batch, D], pooled
                              and L2-normalized inside the graph)
    "labels": [...]          (text-classification: ONNX output ``logits`` [batch, C])

and a ``tokenizer.json`` file in the Hugging Face ``tokenizers`` format, loaded with the
``tokenizers`` package (never transformers). A replica tokenizes with :class:`TextTokenizer`
(numpy int64 arrays padded to the longest row, truncated at ``max_length``; the attention mask
makes padding exact); ZOO and fine-tuning write versions with :func:`save_text_model`.

Reading a spec imports nothing heavy; ``tokenizers`` is imported when a tokenizer is loaded, torch
and onnx only when :func:`save_text_model` exports a module.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aicloud.errors import InvalidDataError, ValidationError

if TYPE_CHECKING:
    import numpy as np
    from tokenizers import Tokenizer

TEXT_TASKS = ("text-embedding", "text-classification")
TOKENIZER = "tokenizer.json"
#: The ONNX output each task's graph names.
OUTPUTS = {"text-embedding": "embeddings", "text-classification": "logits"}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_MAX_LENGTH = 256
#: The largest ``max_length`` a text block may set (a bound on a row's memory in a replica).
MAX_LENGTH_LIMIT = 8192
#: Texts used to export a module when the caller gives none (two lengths: the sequence axis is free).
EXAMPLE_TEXTS = ("hello world", "a somewhat longer example sentence for the export check")


@dataclass(frozen=True)
class TextSpec:
    """The ``text`` block of a config, checked, with the task and its task fields."""

    task: str
    tokenizer: str = TOKENIZER
    max_length: int = DEFAULT_MAX_LENGTH
    inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    lowercase: bool = False
    dimensions: int | None = None
    labels: list[Any] | None = None
    output: str = field(default="")

    def to_config(self) -> dict[str, Any]:
        """The ``text`` block as config.json stores it."""
        return {
            "tokenizer": self.tokenizer,
            "max_length": self.max_length,
            "inputs": list(self.inputs),
            "lowercase": self.lowercase,
        }


def is_text_model(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` declares a text model (a ``text`` block)."""
    return isinstance(config.get("text"), Mapping)


def text_spec(config: Mapping[str, Any]) -> TextSpec:
    """The checked text block of ``config``.

    Raises:
        InvalidDataError: no text block, or a field of it (or the task's) is wrong.
    """
    block = config.get("text")
    if not isinstance(block, Mapping):
        raise InvalidDataError("config.json has no 'text' block: not a text model")
    task = config.get("task")
    if task not in TEXT_TASKS:
        raise InvalidDataError(f"a text model's task must be one of {list(TEXT_TASKS)}, got {task!r}")
    tokenizer = block.get("tokenizer", TOKENIZER)
    if not isinstance(tokenizer, str) or not tokenizer or "/" in tokenizer or tokenizer.startswith("."):
        raise InvalidDataError(f"text.tokenizer must be a file name in the model folder, got {tokenizer!r}")
    max_length = block.get("max_length", DEFAULT_MAX_LENGTH)
    if (
        not isinstance(max_length, int)
        or isinstance(max_length, bool)
        or not 1 <= max_length <= MAX_LENGTH_LIMIT
    ):
        raise InvalidDataError(
            f"text.max_length must be an integer in 1..{MAX_LENGTH_LIMIT}, got {max_length!r}"
        )
    inputs = block.get("inputs", ["input_ids", "attention_mask"])
    if (
        not isinstance(inputs, list)
        or not inputs
        or any(i not in INPUT_NAMES for i in inputs)
        or len(set(inputs)) != len(inputs)
        or "input_ids" not in inputs
    ):
        raise InvalidDataError(
            f"text.inputs must name input_ids and any of {list(INPUT_NAMES[1:])}, got {inputs!r}"
        )
    lowercase = block.get("lowercase", False)
    if not isinstance(lowercase, bool):
        raise InvalidDataError(f"text.lowercase must be true or false, got {lowercase!r}")
    dimensions = labels = None
    if task == "text-embedding":
        dimensions = config.get("dimensions")
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise InvalidDataError(
                f"a text-embedding model needs 'dimensions' (a positive integer), got {dimensions!r}"
            )
    else:
        labels = config.get("labels")
        if not isinstance(labels, list) or len(labels) < 2:
            raise InvalidDataError("a text-classification model needs 'labels' (a list of at least two)")
    return TextSpec(
        task=str(task),
        tokenizer=tokenizer,
        max_length=max_length,
        inputs=tuple(inputs),
        lowercase=lowercase,
        dimensions=dimensions,
        labels=labels,
        output=OUTPUTS[str(task)],
    )


@dataclass
class Encoded:
    """A batch of texts as the model's inputs: int64 arrays [rows, longest] by input name, and each
    row's token count (after truncation: what ``usage`` counts) and whether it was truncated."""

    arrays: dict[str, np.ndarray]
    tokens: list[int]
    truncated: list[bool]


def pad(rows: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Merge encoded batches (each {name: [n, length]}) into one, padding each to the longest with
    0 (the attention mask's 0 makes the model ignore it)."""
    import numpy as np

    names = list(rows[0])
    longest = max(int(r[names[0]].shape[1]) for r in rows)
    out: dict[str, np.ndarray] = {}
    for name in names:
        parts = [
            np.pad(r[name], ((0, 0), (0, longest - r[name].shape[1])))
            if r[name].shape[1] < longest
            else r[name]
            for r in rows
        ]
        out[name] = np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.int64)
    return out


class TextTokenizer:
    """The tokenizer of a text model (``tokenizers``), encoding to the model's inputs."""

    def __init__(self, tokenizer: Tokenizer, spec: TextSpec) -> None:
        self.spec = spec
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.enable_truncation(spec.max_length)

    @classmethod
    def load(cls, folder: str | Path, config: Mapping[str, Any] | None = None) -> TextTokenizer:
        """The tokenizer of the model in ``folder`` (its config read when not given).

        Raises:
            InvalidDataError: not a text model, or its tokenizer file is missing or unreadable.
        """
        from aicloud.artifacts.format import read_config

        spec = text_spec(config if config is not None else read_config(folder))
        return cls(load_tokenizer(Path(folder) / spec.tokenizer), spec)

    def encode(self, texts: Sequence[str]) -> Encoded:
        """``texts`` as int64 arrays padded to the longest row (truncated at ``max_length``)."""
        encodings = self._encodings(texts)
        return Encoded(
            arrays=self._arrays(encodings),
            tokens=[len(e.ids) for e in encodings],
            truncated=[bool(e.overflowing) for e in encodings],
        )

    def encode_chunks(
        self, texts: Sequence[str], rows: int
    ) -> tuple[list[tuple[list[int], dict[str, np.ndarray]]], list[int]]:
        """``texts`` sorted by length and cut into chunks of at most ``rows``, each padded to its own
        longest row (less padding than one batch, and a bound on a call's memory): ([(the rows'
        positions in ``texts``, their arrays)...], each text's token count)."""
        encodings = self._encodings(texts)
        lengths = [len(e.ids) for e in encodings]
        order = sorted(range(len(encodings)), key=lengths.__getitem__)
        chunks = []
        for start in range(0, len(order), max(1, rows)):
            members = order[start : start + max(1, rows)]
            chunks.append((members, self._arrays([encodings[i] for i in members])))
        return chunks, lengths

    def _encodings(self, texts: Sequence[str]) -> list[Any]:
        if self.spec.lowercase:
            texts = [t.lower() for t in texts]
        return list(self._tok.encode_batch(list(texts), add_special_tokens=True))

    def _arrays(self, encodings: Sequence[Any]) -> dict[str, np.ndarray]:
        import numpy as np

        lengths = [len(e.ids) for e in encodings]
        longest = max([1, *lengths])
        ids = np.zeros((len(encodings), longest), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = lengths[row]
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        every = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: every[name] for name in self.spec.inputs}


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A ``tokenizers`` Tokenizer from a ``tokenizer.json`` file.

    Raises:
        InvalidDataError: missing or not a tokenizer file.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - the train/zoo extras install it
        raise InvalidDataError(
            "text models need the 'tokenizers' package: pip install 'aicloud[zoo]' (or tokenizers)"
        ) from None
    try:
        return Tokenizer.from_file(str(path))
    except FileNotFoundError:
        raise InvalidDataError(f"{path}: no tokenizer file") from None
    except Exception as exc:  # tokenizers raises its own Exception subclass
        raise InvalidDataError(f"{path}: not a tokenizers tokenizer.json: {exc}") from None


def _tokenizer_text(tokenizer_json: Any) -> str:
    """The JSON text of a tokenizer given as a Tokenizer, a file path, or its JSON text."""
    if hasattr(tokenizer_json, "to_str"):
        return str(tokenizer_json.to_str())
    if isinstance(tokenizer_json, Path) or (
        isinstance(tokenizer_json, str) and not tokenizer_json.lstrip().startswith("{")
    ):
        try:
            return Path(tokenizer_json).read_text()
        except OSError as exc:
            raise ValidationError.field("tokenizer_json", f"cannot read {tokenizer_json}: {exc}") from None
    if isinstance(tokenizer_json, str):
        return tokenizer_json
    raise ValidationError.field(
        "tokenizer_json", "pass a tokenizers.Tokenizer, a tokenizer.json path or its JSON text"
    )


def save_text_model(
    folder: str | Path,
    model: Any,
    tokenizer_json: Any,
    task: str,
    *,
    labels: Sequence[Any] | None = None,
    dimensions: int | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    lowercase: bool = False,
    inputs: Sequence[str] | None = None,
    example_texts: Sequence[str] | None = None,
    config: Mapping[str, Any] | None = None,
    tolerance: float | None = 1e-4,
) -> Path:
    """Write a text model folder: ``model.onnx``, ``tokenizer.json`` and ``config.json``.

    ``model``: an ONNX file (a path whose graph already has the task's output, ``embeddings`` or
    ``logits``) or a ``torch.nn.Module`` whose ``forward`` takes ``input_ids``, ``attention_mask``
    (and ``token_type_ids`` when ``inputs`` names it) and returns the embeddings (pooled,
    normalized) or the logits; it is exported with free batch and sequence axes, checked against
    ONNX Runtime within ``tolerance`` on ``example_texts``, and its output renamed to the task's.
    ``tokenizer_json``: a ``tokenizers.Tokenizer``, a path to its JSON, or the JSON text.
    ``dimensions`` (text-embedding) and the number of ``labels`` (text-classification) are checked
    against the model's output on the examples (``dimensions`` is taken from it when not given).
    ``config``: more config fields (``signature``, ``description``...). The folder holds either the
    whole model or, on any error, what it held before (files are moved in at the end).

    Raises:
        ValidationError: a wrong argument, or a model whose output does not fit the task.
    """
    import numpy as np

    if task not in TEXT_TASKS:
        raise ValidationError.field("task", f"one of {list(TEXT_TASKS)}, got {task!r}")
    if task == "text-classification" and (labels is None or len(labels) < 2):
        raise ValidationError.field("labels", "a text-classification model needs at least two labels")
    names = list(inputs or ("input_ids", "attention_mask"))
    spec_config: dict[str, Any] = {
        "task": task,
        "text": {"tokenizer": TOKENIZER, "max_length": max_length, "inputs": names, "lowercase": lowercase},
        "dimensions": dimensions or 1,
        "labels": list(labels or [0, 1]),
    }
    try:
        spec = text_spec(spec_config)
    except InvalidDataError as exc:
        raise ValidationError(str(exc)) from None
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".text-model-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / TOKENIZER).write_text(_tokenizer_text(tokenizer_json))
        tokenizer = TextTokenizer(load_tokenizer(tmp / TOKENIZER), spec)
        encoded = tokenizer.encode(list(example_texts or EXAMPLE_TEXTS))
        cfg: dict[str, Any] = {"format": "aicloud.model/v1", "architecture": {"type": "onnx"}}
        if isinstance(model, (str, Path)):
            shutil.copyfile(model, tmp / "model.onnx")
            cfg["signature"] = {"inputs": [{"name": n, "dtype": "int64", "shape": [-1, -1]} for n in names]}
        elif hasattr(model, "forward"):
            import torch

            from aicloud.artifacts.format import save_onnx

            example = {n: torch.from_numpy(a) for n, a in encoded.arrays.items()}
            save_onnx(
                tmp / "export",
                model,
                example,
                {},
                dynamic_axes={n: [1] for n in names},
                tolerance=tolerance,
            )
            _rename_output(tmp / "export" / "model.onnx", tmp / "model.onnx", spec.output)
            exported = json.loads((tmp / "export" / "config.json").read_text())
            cfg["signature"] = exported["signature"]
            shutil.rmtree(tmp / "export")
        else:
            raise ValidationError.field("model", "pass an ONNX file path or a torch.nn.Module")
        out = _run_output(tmp / "model.onnx", encoded.arrays, spec.output)
        if out.ndim != 2 or out.shape[0] != len(encoded.tokens):
            raise ValidationError(
                f"the model's {spec.output!r} output has shape {list(out.shape)}, expected [batch, n]"
            )
        if task == "text-embedding":
            if dimensions is not None and out.shape[1] != dimensions:
                raise ValidationError(
                    f"dimensions={dimensions} but the model's embeddings have {out.shape[1]}"
                )
            norms = np.linalg.norm(out.astype(np.float64), axis=1)
            if not np.allclose(norms, 1.0, atol=1e-3):
                raise ValidationError(
                    "the model's embeddings are not L2-normalized (norms "
                    f"{[round(float(n), 4) for n in norms]}): normalize inside the graph"
                )
            cfg["dimensions"] = int(out.shape[1])
        else:
            if out.shape[1] != len(labels or ()):
                raise ValidationError(
                    f"{len(labels or ())} labels but the model's logits have {out.shape[1]} columns"
                )
            cfg["labels"] = list(labels or ())
        cfg["task"] = task
        cfg["text"] = spec.to_config()
        extra = dict(config or {})
        for key in ("format", "architecture", "task", "text", "dimensions", "labels"):
            extra.pop(key, None)
        cfg = {**cfg, **extra}
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1, allow_nan=False) + "\n")
        folder.mkdir(parents=True, exist_ok=True)
        for stale in ("model.safetensors",):
            (folder / stale).unlink(missing_ok=True)
        for name in ("model.onnx", TOKENIZER, "config.json"):  # config last: a folder with it is whole
            os.replace(tmp / name, folder / name)
    return folder


def _rename_output(src: Path, dst: Path, name: str) -> None:
    """Copy the ONNX graph at ``src`` to ``dst`` with its first output renamed ``name``."""
    import onnx

    graph_model = onnx.load(str(src))
    graph = graph_model.graph
    old = graph.output[0].name
    if old != name:
        for node in graph.node:
            for i, out in enumerate(node.output):
                if out == old:
                    node.output[i] = name
            for i, inp in enumerate(node.input):
                if inp == old:
                    node.input[i] = name
        graph.output[0].name = name
    onnx.save(graph_model, str(dst))


def _run_output(path: Path, arrays: Mapping[str, Any], output: str) -> np.ndarray:
    """The ONNX model's ``output`` on ``arrays`` (a ValidationError when it has no such output or
    does not take these inputs)."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    if output not in outputs:
        raise ValidationError(f"the ONNX model has no output {output!r} (it has {outputs})")
    wanted = {i.name for i in session.get_inputs()}
    if wanted != set(arrays):
        raise ValidationError(
            f"the ONNX model takes inputs {sorted(wanted)}, the text block names {sorted(arrays)}"
        )
    return np.asarray(session.run([output], dict(arrays))[0])

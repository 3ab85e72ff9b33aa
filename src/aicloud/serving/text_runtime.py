"""The model runtime of a text model (:mod:`aicloud.artifacts.text`): strings in, embeddings or labels out.

A replica whose version's ``config.json`` has a ``text`` block serves it with :class:`TextRuntime`
(:func:`model_runtime` picks it) instead of :class:`~aicloud.serving.runtime.ArtifactRuntime`:

* ``prepare`` (on the event loop) only checks the request: a non-empty list of at most
  :data:`MAX_INPUTS` non-empty strings (or ``{"text": ...}`` objects); a longer list is a 413, an
  empty string or another type a 400 naming the item;
* ``run_batch`` (the batcher's worker thread) tokenizes every text of the batch at once (the
  ``tokenizers`` package, which releases the GIL), sorts them by length and runs the model in
  chunks of at most :data:`CHUNK_ROWS` rows, each padded to its own longest row: the attention mask
  makes padding exact, so a text's vector does not depend on what it was batched with (within
  1e-5 of an unbatched call);
* the model runs under the deployment's ``runtime`` (:func:`aicloud.serving.runtimes.select`; an
  ONNX version: ONNX Runtime, no torch).

Each request's result is a :class:`TextResult` (its rows of the model's output and each text's
token count, what OpenAI's ``usage`` counts); ``/predict`` answers
``{"outputs": [[...], ...]}`` (embeddings) or ``{"outputs": [label, ...], "probabilities": [[...]]}``
(classification); ``POST /v1/embeddings`` is :mod:`aicloud.serving.openai_embeddings`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aicloud.artifacts.format import read_config
from aicloud.artifacts.inputs import bad_input
from aicloud.artifacts.text import TextSpec, TextTokenizer, is_text_model, text_spec
from aicloud.errors import PayloadTooLargeError
from aicloud.serving.runtime import ArtifactRuntime, Column, ModelRuntime, Prepared, TensorSpec

#: The most texts one request may send (OpenAI's own limit for an embeddings call); more is a 413.
MAX_INPUTS = 2048
#: The most rows of one model call: a batch is run in chunks of texts of similar length.
CHUNK_ROWS = 64


def model_runtime(
    folder: str | Path, runtime: str | None = None, threads: int | None = None, batch: int = 32
) -> ModelRuntime:
    """The runtime a replica serves the model folder with: :class:`TextRuntime` for a text model,
    else :class:`~aicloud.serving.runtime.ArtifactRuntime`."""
    try:
        text = is_text_model(read_config(folder))
    except Exception:  # no readable config: ArtifactRuntime.load says why
        text = False
    if text:
        return TextRuntime(folder, runtime, threads=threads, batch=batch)
    return ArtifactRuntime(folder, runtime, threads=threads, batch=batch)


class TextPrepared(Prepared):
    """One request's texts, checked."""

    __slots__ = ("texts",)

    def __init__(self, texts: list[str]) -> None:
        super().__init__(records=[])
        self.texts = texts
        self.rows = len(texts)


@dataclass
class TextResult:
    """One request's rows of the model's output (float32 [n, D] embeddings or [n, C] logits) and
    each text's token count (after truncation at ``max_length``)."""

    values: np.ndarray
    tokens: list[int]


def check_texts(inputs: Any, field: str = "inputs") -> list[str]:
    """``inputs`` as a list of non-empty strings (items may be ``{"text": ...}``), or a 400/413
    naming the field."""
    if not isinstance(inputs, list):
        raise bad_input(field, f"expected a list of strings, got {type(inputs).__name__}")
    if not inputs:
        raise bad_input(field, "empty list: send at least one string")
    if len(inputs) > MAX_INPUTS:
        raise PayloadTooLargeError(
            f"{field}: {len(inputs)} inputs; at most {MAX_INPUTS} per request: send them in batches",
            details={"limit": MAX_INPUTS, "size": len(inputs)},
        )
    texts: list[str] = []
    for i, item in enumerate(inputs):
        value = item.get("text") if isinstance(item, Mapping) else item
        if not isinstance(value, str):
            shown = (
                type(value).__name__ if not isinstance(item, Mapping) else "an object without a string 'text'"
            )
            raise bad_input(f"{field}[{i}]", f"expected a string, got {shown}")
        if not value.strip():
            raise bad_input(f"{field}[{i}]", "empty string: send some text")
        texts.append(value)
    return texts


class TextRuntime:
    """Serves a text model (see the module docstring); a :class:`~aicloud.serving.runtime.ModelRuntime`."""

    def __init__(
        self, folder: str | Path, runtime: str | None = None, threads: int | None = None, batch: int = 32
    ) -> None:
        self.folder = Path(folder)
        self.runtime = runtime
        self.threads = threads
        self.batch = batch
        self.config: dict[str, Any] = {}
        self.columns: list[Column] = [Column("text", "str")]
        self.engine = ""
        self.choice = ""
        self.spec: TextSpec
        self.tokenizer: TextTokenizer
        self._run: Callable[[Any], np.ndarray]

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def dimensions(self) -> int | None:
        return self.spec.dimensions

    def load(self) -> None:
        from aicloud.serving.runtimes import select

        self.config = read_config(self.folder)
        self.spec = text_spec(self.config)
        self.tokenizer = TextTokenizer.load(self.folder, self.config)
        self._run, choice = select(self.runtime, self.folder, self.config, self.threads, self.batch)
        self.engine, self.choice = choice.runtime, choice.line
        labels = self.spec.labels
        self._labels = np.asarray(labels) if labels is not None else None

    def warmup(self) -> None:
        batch: list[Prepared] = [
            TextPrepared(["hello world"]),
            TextPrepared(["a longer text to warm up with"]),
        ]
        for _ in range(3):
            self.run_batch(batch)

    def prepare(self, inputs: Any, field: str = "inputs") -> Prepared:
        return TextPrepared(check_texts(inputs, field))

    def embed(self, texts: list[str]) -> TextResult:
        """The model's output rows for ``texts`` (in order) and their token counts."""
        chunks, tokens = self.tokenizer.encode_chunks(texts, CHUNK_ROWS)
        out: np.ndarray | None = None
        for members, arrays in chunks:
            values = np.asarray(self._run(arrays), dtype=np.float32)
            if out is None:
                out = np.empty((len(texts), *values.shape[1:]), dtype=np.float32)
            out[members] = values
        assert out is not None
        return TextResult(out, tokens)

    def run_batch(self, batch: list[Prepared]) -> list[Any]:
        texts = [t for p in batch for t in getattr(p, "texts", [])]
        whole = self.embed(texts)
        results: list[Any] = []
        start = 0
        for p in batch:
            n = p.rows
            results.append(TextResult(whole.values[start : start + n], whole.tokens[start : start + n]))
            start += n
        return results

    def predict_payload(self, result: TextResult) -> dict[str, Any]:
        """``/predict``'s answer for one request."""
        if self._labels is None:
            return {"outputs": result.values.tolist()}
        logits = result.values.astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = exp / exp.sum(axis=1, keepdims=True)
        return {"outputs": self._labels[np.argmax(logits, axis=1)].tolist(), "probabilities": probs.tolist()}

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec("text", "BYTES", [-1])]

    @property
    def outputs(self) -> list[TensorSpec]:
        if self.spec.labels is not None:
            return [TensorSpec("output", "BYTES", [-1])]
        return [TensorSpec("output", "FP32", [-1, int(self.spec.dimensions or 0)])]

    @property
    def version(self) -> str:
        return str(self.config.get("version") or "1")

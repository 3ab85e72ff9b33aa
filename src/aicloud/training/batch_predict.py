"""The ``batch_predict`` job (docs/evaluation.md): predict every row of a dataset version, in chunks,
and upload the predictions as a new dataset version with lineage.

Run by the bootstrap after the dataset is downloaded: the version the server resolved is loaded
(:func:`aicloud.training.evaluate.load_version`), the data is read ``chunk_rows`` rows at a time
(:func:`aicloud.training.evaluate.iter_chunks`), each chunk is predicted and appended to
``output/predictions.<format>`` (CSV, Parquet and JSON Lines in the input's own format, streamed; an NPZ
input is written as NPZ), so memory follows the chunk size, not the dataset. The output holds the input
columns, in input order, plus ``prediction`` (a classifier: the predicted label) and, for a
classifier, ``proba_<label>`` per class. It is uploaded as the next version of ``output`` (default
``<dataset>-predictions``); the server records the lineage from the job's token:
``{"source": "batch_predict", "model": {...}, "dataset": {...}, "job_id": ...}``.
Progress: ``rows_done`` is logged to the run after each chunk, and printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from aicloud.errors import ValidationError
from aicloud.schemas.evaluation import BatchPredictSpec
from aicloud.training.evaluate import class_labels, dataset_info, iter_chunks, load_version, predict_chunk

if TYPE_CHECKING:
    from aicloud.training.env import WorkloadEnv
    from aicloud.training.session import Session

__all__ = ["ChunkWriter", "output_frame", "run_batch_predict"]


def _print(line: str) -> None:
    print(line, flush=True)


def output_frame(
    frame: pd.DataFrame, pred: np.ndarray, proba: np.ndarray | None, labels: list[Any]
) -> pd.DataFrame:
    """The chunk's input columns plus ``prediction`` and (classifiers) ``proba_<label>`` columns."""
    out = frame.copy()
    out["prediction"] = pred
    if proba is not None:
        for i, label in enumerate(labels[: proba.shape[1]]):
            out[f"proba_{label}"] = proba[:, i]
    return out


class ChunkWriter:
    """Appends frames to one file: CSV and JSON Lines as text, Parquet row groups through pyarrow's
    writer (the schema of the first chunk), NPZ gathered and written at the end."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self._parquet: Any = None
        self._npz: list[pd.DataFrame] = []
        self.rows = 0
        if fmt in ("csv", "jsonl"):
            path.write_bytes(b"")

    def write(self, frame: pd.DataFrame) -> None:
        if self.fmt == "csv":
            frame.to_csv(self.path, mode="a", header=self.rows == 0, index=False)
        elif self.fmt == "jsonl":
            with open(self.path, "a", encoding="utf-8") as f:
                frame.to_json(f, orient="records", lines=True)
        elif self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        else:
            self._npz.append(frame)
        self.rows += len(frame)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self.fmt == "npz":
            frame = pd.concat(self._npz, ignore_index=True) if self._npz else pd.DataFrame()
            arrays = {str(c): frame[c].to_numpy() for c in frame.columns}
            for key, arr in arrays.items():
                if arr.dtype == object:  # no pickled arrays: labels as text
                    arrays[key] = arr.astype(str)
            with open(self.path, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]


def run_batch_predict(sess: Session, env: WorkloadEnv, paths: dict[str, Path], output: Path) -> int:
    """The ``batch_predict`` job: predictions of the resolved version for every row, uploaded."""
    spec = BatchPredictSpec.model_validate(env.job.spec)
    if "data" not in paths:
        raise ValidationError.field("spec.datasets.data", "the job's dataset was not resolved")
    ref = spec.resolved_model.ref if spec.resolved_model is not None else spec.model
    model = load_version(sess, ref, output.parent / "model", spec.cpus)
    info = dataset_info(env)
    fmt = str(info.get("format") or "csv")
    name = spec.output or f"{info.get('name')}-predictions"
    sess.log_params({"model": ref, "dataset": f"{info.get('name')}:{info.get('version')}", "output": name})
    target = model.config.get("target")
    path = output / f"predictions.{fmt}"
    writer = ChunkWriter(path, fmt)
    try:
        for step, frame in enumerate(iter_chunks(paths["data"], fmt, spec.chunk_rows)):
            pred, proba = predict_chunk(model, frame, str(target) if target else None, spec.text)
            writer.write(output_frame(frame, pred, proba, class_labels(model, proba)))
            sess.log_metric("rows_done", writer.rows, step=step)
            _print(f"[aicloud] rows_done={writer.rows}")
    finally:
        writer.close()
    sess.flush()
    version = sess.client.datasets.create(name, path, format=fmt)
    _print(f"[aicloud] predictions: {writer.rows} rows → dataset {version.name}:{version.version}")
    (output / "result.json").write_text(
        json.dumps({"dataset": version.name, "version": version.version, "rows": writer.rows}) + "\n"
    )
    return 0

"""The model artifact's preprocessing: features, label encoding and target scaling, fitted on the TRAIN
split only.

* numeric (and boolean) columns are standardised with the train mean and std (std 0 → 1); a missing
  value (null, NaN) becomes 0, the train mean;
* any other column is one-hot encoded over the categories seen in train (the 256 most frequent, as
  strings); an unseen or missing category is all zeros ("unknown": no category's weight applies);
* image tasks scale every pixel by one mean and std over all train pixels, and keep the image shape;
* classification targets are encoded as indices into ``labels`` (sorted train values); predictions
  map back to the original values. Regression targets are standardised; predictions are unscaled.

Everything is JSON-serialisable (``to_config``), stored in ``config.json`` and applied again to raw
rows by :func:`aicloud.artifacts.loader.load_model` and by the serving runtime, with this one class:
:meth:`Preprocessor.transform` (pandas) and, for rows of numbers only, :meth:`Preprocessor.transform_numbers`
(numpy: the replica of a built-in MLP never imports pandas; this module imports it only when used).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from aicloud.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd

MAX_CATEGORIES = 256


def to_json_scalar(value: Any) -> Any:
    """A numpy/pandas scalar as a plain JSON-safe Python value."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def _is_numeric(series: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype))


def _numbers(series: pd.Series) -> np.ndarray:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("float64").to_numpy()
    return pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()


def _strings(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values as str, missing mask)."""
    missing = series.isna().to_numpy()
    return series.astype(str).to_numpy(dtype=object), missing


def dtype_name(series: pd.Series) -> str:
    """A signature dtype: ``int64``, ``float64``, ``bool`` or ``string``."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(series.dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(series.dtype):
        dt = series.dtype
        if isinstance(dt, np.dtype):
            return str(dt)
        numpy_dtype = getattr(dt, "numpy_dtype", None)  # pandas nullable Int64, Float64, ArrowDtype
        return str(numpy_dtype) if numpy_dtype is not None else "float64"
    return "string"


@dataclass
class Preprocessor:
    """Turns raw feature columns into a float32 matrix (see the module docstring for the rules)."""

    features: list[str]
    standardize: dict[str, list[float]] = field(default_factory=dict)
    onehot: dict[str, list[str]] = field(default_factory=dict)
    image_shape: list[int] | None = None
    image_norm: list[float] | None = None

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, features: Sequence[str], image_shape: Sequence[int] | None = None
    ) -> Preprocessor:
        """Learn means, stds and categories from ``frame`` (the train split only)."""
        import pandas as pd

        pre = cls(features=list(features), image_shape=[int(s) for s in image_shape] if image_shape else None)
        if pre.image_shape is not None:
            pixels = np.stack([_numbers(frame[c]) for c in pre.features], axis=1) if pre.features else None
            mean = float(np.nanmean(pixels)) if pixels is not None and pixels.size else 0.0
            std = float(np.nanstd(pixels)) if pixels is not None and pixels.size else 1.0
            pre.image_norm = [_finite(mean, 0.0), _finite(std, 1.0) or 1.0]
            return pre
        for name in pre.features:
            col = frame[name]
            if _is_numeric(col):
                values = _numbers(col)
                finite = values[np.isfinite(values)]
                mean = float(finite.mean()) if finite.size else 0.0
                std = float(finite.std()) if finite.size else 1.0
                pre.standardize[name] = [mean, std if std > 0 else 1.0]
            else:
                strings, missing = _strings(col)
                counts = pd.Series(strings[~missing]).value_counts()
                ranked = sorted(counts.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
                pre.onehot[name] = sorted(str(k) for k, _ in ranked[:MAX_CATEGORIES])
        return pre

    @property
    def width(self) -> int:
        """Number of output columns."""
        return (
            len(self.standardize)
            + sum(len(c) for c in self.onehot.values())
            + (len(self.features) if self.image_shape is not None else 0)
        )

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """A float32 ``(rows, width)`` matrix; the columns are in ``features`` order."""
        import pandas as pd

        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            shown = ", ".join(repr(c) for c in missing[:10])
            raise ValidationError.field(
                "inputs", f"missing input column(s): {shown}" + (" ..." if len(missing) > 10 else "")
            )
        n = len(frame)
        if self.image_shape is not None:
            mean, std = self.image_norm or [0.0, 1.0]
            if not self.features:
                return np.zeros((n, 0), dtype=np.float32)
            pixels = np.stack([_numbers(frame[c]) for c in self.features], axis=1)
            return _scaled(pixels, mean, std).astype(np.float32)
        blocks: list[np.ndarray] = []
        for name in self.features:
            if name in self.standardize:
                mean, std = self.standardize[name]
                blocks.append(_scaled(_numbers(frame[name]), mean, std).reshape(n, 1))
            elif name in self.onehot:
                cats = self.onehot[name]
                strings, miss = _strings(frame[name])
                codes = (
                    pd.Index(cats, dtype=object).get_indexer(pd.Index(strings)).astype(np.int64)
                )  # unseen: -1
                codes[miss] = -1
                block = np.zeros((n, len(cats)), dtype=np.float64)
                hit = codes >= 0
                block[np.nonzero(hit)[0], codes[hit]] = 1.0
                blocks.append(block)
        if not blocks:
            return np.zeros((n, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def transform_numbers(self, x: np.ndarray) -> np.ndarray | None:
        """What :meth:`transform` gives for rows of raw numbers, without pandas: ``x`` is a float
        ``(rows, features)`` matrix in ``features`` order, NaN where a value is missing. None when a
        column is one-hot encoded (use :meth:`transform`)."""
        if self.image_shape is not None:
            mean, std = self.image_norm or [0.0, 1.0]
            return _scaled(x, mean, std).astype(np.float32)
        if self._numeric_stats is None:
            return None
        means, stds = self._numeric_stats
        return _scaled(x, means, stds).astype(np.float32)

    @cached_property
    def _numeric_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.onehot or list(self.standardize) != self.features:
            return None
        stats = np.array([self.standardize[n] for n in self.features], dtype=np.float64).reshape(-1, 2)
        return stats[:, 0].copy(), stats[:, 1].copy()

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "features": list(self.features),
            "standardize": {k: list(v) for k, v in self.standardize.items()},
            "onehot": {k: list(v) for k, v in self.onehot.items()},
        }
        if self.image_shape is not None:
            out["image_shape"] = list(self.image_shape)
            out["image_norm"] = list(self.image_norm or [0.0, 1.0])
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Preprocessor:
        return cls(
            features=[str(f) for f in config.get("features", [])],
            standardize={str(k): [float(x) for x in v] for k, v in (config.get("standardize") or {}).items()},
            onehot={str(k): [str(x) for x in v] for k, v in (config.get("onehot") or {}).items()},
            image_shape=[int(s) for s in config["image_shape"]] if config.get("image_shape") else None,
            image_norm=[float(x) for x in config["image_norm"]] if config.get("image_norm") else None,
        )


def records_frame(rows: Iterable[Any]) -> pd.DataFrame:
    """Rows as objects → a frame of ``object`` columns: each value stays as sent, not coerced with the
    other rows of its batch (``3`` next to a null would become ``3.0``, another category), so a row's
    features never depend on its neighbours. ``load_model`` and the serving runtime both use it."""
    import pandas as pd

    return pd.DataFrame(list(rows), dtype=object)


def _scaled(values: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """``(values - mean) / std``, a missing (NaN) value at 0: the train mean."""
    out = (values - mean) / std
    if np.isfinite(out).all():  # the common case: no copy (nan_to_num costs ~35 us a call)
        return out
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _finite(value: float, default: float) -> float:
    return value if math.isfinite(value) else default


def _sorted_labels(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))


@dataclass
class LabelEncoder:
    """Class labels (their original values, sorted) ↔ indices 0..K-1."""

    labels: list[Any]

    @classmethod
    def fit(cls, series: pd.Series) -> LabelEncoder:
        values = {to_json_scalar(v) for v in series.dropna().unique()}
        values.discard(None)
        return cls(_sorted_labels(list(values)))

    def encode(self, series: pd.Series) -> np.ndarray:
        """int64 indices; an unseen or missing label is -1."""
        index = {label: i for i, label in enumerate(self.labels)}
        return np.fromiter(
            (index.get(to_json_scalar(v), -1) if not _isna(v) else -1 for v in series.to_numpy()),
            dtype=np.int64,
            count=len(series),
        )

    def decode(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.labels)[np.asarray(indices, dtype=np.int64)]


def _isna(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


@dataclass
class TargetScaler:
    """Standardises a regression target; predictions are scaled back."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, series: pd.Series) -> TargetScaler:
        values = _numbers(series)
        finite = values[np.isfinite(values)]
        if not finite.size:
            raise ValidationError.field("spec.target", "the target column has no numeric values")
        std = float(finite.std())
        return cls(float(finite.mean()), std if std > 0 else 1.0)

    def encode(self, series: pd.Series) -> np.ndarray:
        return ((_numbers(series) - self.mean) / self.std).astype(np.float32)

    def decode(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64) * self.std + self.mean


def signature(frame: pd.DataFrame, features: Sequence[str], target: str, target_dtype: str) -> dict[str, Any]:
    """The model's input/output schema: raw feature names and dtypes, and the predicted column."""
    return {
        "inputs": [{"name": c, "dtype": dtype_name(frame[c])} for c in features],
        "outputs": [{"name": target, "dtype": target_dtype}],
    }

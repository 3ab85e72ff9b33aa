"""data/drift.py on synthetic samples: each test's choice, no drift, shifted numbers and categories."""

from __future__ import annotations

import io

import numpy as np
import pytest

from aicloud.data.drift import ColumnSample, column_drift, drift_report, sample_table
from aicloud.errors import UnsupportedFormatError, ValidationError


def _num(values: np.ndarray) -> ColumnSample:
    return ColumnSample("numeric", np.asarray(values, dtype=np.float64), len(values))


def _cat(values: np.ndarray) -> ColumnSample:
    return ColumnSample("categorical", np.asarray(values, dtype=object), len(values))


@pytest.mark.parametrize("n, test", [(300, "ks"), (3000, "wasserstein")])
def test_numeric_same_distribution_is_not_drifted_and_a_shift_is(n: int, test: str) -> None:
    rng = np.random.default_rng(1)
    ref = _num(rng.normal(0, 1, n))
    same = column_drift(ref, _num(rng.normal(0, 1, n)))
    shifted = column_drift(ref, _num(rng.normal(0.6, 1, n)))
    assert same["test"] == shifted["test"] == test
    assert not same["drifted"] and shifted["drifted"]
    assert set(same) >= {"test", "statistic", "threshold", "drifted"}


@pytest.mark.parametrize("n, test", [(300, "chi2"), (3000, "jensen_shannon")])
def test_categorical_same_frequencies_are_not_drifted_and_a_shift_is(n: int, test: str) -> None:
    rng = np.random.default_rng(2)
    ref = _cat(rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]))
    same = column_drift(ref, _cat(rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])))
    shifted = column_drift(ref, _cat(rng.choice(["a", "b", "c"], n, p=[0.1, 0.3, 0.6])))
    assert same["test"] == shifted["test"] == test
    assert not same["drifted"] and shifted["drifted"]


def test_the_smaller_side_chooses_the_test() -> None:
    rng = np.random.default_rng(3)
    assert column_drift(_num(rng.normal(size=5000)), _num(rng.normal(size=999)))["test"] == "ks"
    assert column_drift(_num(rng.normal(size=1000)), _num(rng.normal(size=5000)))["test"] == "wasserstein"


def test_constant_columns_and_a_single_category_do_not_crash() -> None:
    assert not column_drift(_num(np.ones(50)), _num(np.ones(50)))["drifted"]
    assert column_drift(_num(np.ones(2000)), _num(np.full(2000, 3.0)))["drifted"]
    assert not column_drift(_cat(np.array(["a"] * 40)), _cat(np.array(["a"] * 40)))["drifted"]


def test_report_score_columns_on_one_side_and_threshold() -> None:
    rng = np.random.default_rng(4)
    ref = {"x": _num(rng.normal(size=400)), "y": _num(rng.normal(size=400)), "old": _num(np.ones(400))}
    cur = {
        "x": _num(rng.normal(2, 1, 400)),
        "y": _num(rng.normal(size=400)),
        "new": _cat(np.array(["a"] * 400)),
    }
    report = drift_report(ref, cur)
    assert [c["column"] for c in report["columns"]] == ["x", "y"]
    assert report["only_in_reference"] == ["old"] and report["only_in_current"] == ["new"]
    assert report["drift_score"] == 0.5 and report["drifted"] is True
    assert report["reference_rows"] == report["current_rows"] == 400
    assert drift_report(ref, cur, threshold=0.75)["drifted"] is False
    assert drift_report(ref, cur, columns=["y"])["drift_score"] == 0.0
    with pytest.raises(ValidationError, match="columns"):
        drift_report(ref, cur, columns=["nope"])
    with pytest.raises(ValidationError, match="threshold"):
        drift_report(ref, cur, threshold=0)


def test_kind_mismatch_is_skipped_not_tested() -> None:
    report = drift_report({"a": _num(np.arange(10.0))}, {"a": _cat(np.array(["x"] * 10))})
    assert report["columns"] == [] and report["skipped"][0]["column"] == "a"
    assert report["drift_score"] == 0.0 and report["drifted"] is False


def test_sample_table_reads_numbers_text_and_bools_and_bounds_the_sample() -> None:
    rows = "".join(
        f"{i},{'ab'[i % 2]},{'true' if i % 3 else 'false'},2024-01-0{1 + i % 9}\n" for i in range(20000)
    )
    samples, others, n = sample_table("csv", io.BytesIO(("n,s,b,d\n" + rows).encode()), cap=1000)
    assert n == 20000 and others == {"d": "unsupported"}
    assert samples["n"].kind == "numeric" and samples["s"].kind == "categorical"
    assert samples["b"].kind == "categorical"
    assert all(len(s.values) <= 1000 for s in samples.values())
    assert samples["n"].values.max() > 15000  # spread over the whole file, not its first rows
    with pytest.raises(UnsupportedFormatError):
        sample_table("npz", io.BytesIO(b"PK"))

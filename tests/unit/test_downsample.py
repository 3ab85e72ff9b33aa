"""LTTB downsampling (entities.series), the packed chunk format (store.sql.metric_chunks) and the
runs table's query language (server.services.run_filters), without a server."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicloud.entities.series import MetricArrays, lttb_indices, lttb_many
from aicloud.errors import ValidationError
from aicloud.server.services.run_filters import Columns, Sort, parse_filter
from aicloud.store.sql import metric_chunks
from aicloud.store.training import MetricCondition, ParamCondition


def _xy(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=np.float64)
    return x, np.cumsum(rng.normal(size=n))


@given(n=st.integers(0, 3000), max_points=st.integers(1, 600), seed=st.integers(0, 5))
@settings(max_examples=60, deadline=None)
def test_lttb_keeps_first_and_last_and_at_most_max_points(n: int, max_points: int, seed: int) -> None:
    x, y = _xy(n, seed)
    picked = lttb_indices(x, y, max_points)
    assert len(picked) == min(n, max_points)
    assert list(picked) == sorted(set(picked.tolist()))  # ascending, no repeats
    if n and max_points >= 2:
        assert picked[0] == 0 and picked[-1] == n - 1
    elif n:
        assert list(picked) == [0]


def test_lttb_is_the_identity_when_the_series_is_short_enough() -> None:
    x, y = _xy(500)
    assert lttb_indices(x, y, 500).tolist() == list(range(500))
    series = MetricArrays.of(range(10), range(10), range(10))
    assert series.downsample(2000) is series


def test_lttb_keeps_a_spike_a_stride_would_drop() -> None:
    x = np.arange(10_000, dtype=np.float64)
    y = np.sin(x / 500.0)
    y[7_777] = 40.0
    y[2_001] = -40.0
    picked = lttb_indices(x, y, 200)
    assert 7_777 in picked and 2_001 in picked
    assert 7_777 not in range(0, 10_000, 50)  # what keeping every 50th point would keep


def test_lttb_picks_the_corner_of_a_step() -> None:
    x = np.arange(100, dtype=np.float64)
    y = np.where(x < 50, 0.0, 1.0)
    picked = lttb_indices(x, y, 10)
    assert 49 in picked or 50 in picked


def test_lttb_many_equals_one_at_a_time_and_survives_nan() -> None:
    series = [_xy(n, seed) for seed, n in enumerate([3000, 5000, 120, 40_000, 2])]
    series[1][1][100:400] = np.nan
    series[1][1][-1] = np.nan
    together = lttb_many(series, 100)
    for (x, y), picked in zip(series, together, strict=True):
        assert picked.tolist() == lttb_indices(x, y, 100).tolist()
    # a NaN is picked only where its whole bucket is NaN (it shows as a gap)
    nan_picks = [int(i) for i in together[1][1:-1] if np.isnan(series[1][1][i])]
    assert nan_picks and all(100 <= i < 400 for i in nan_picks)
    with pytest.raises(ValueError, match="at least 1"):
        lttb_indices(*series[0], 0)


def test_columns_turn_nan_into_none() -> None:
    series = MetricArrays.of([0, 1, 2], [1.0, math.nan, math.inf], [5.0, 6.0, 7.0])
    assert series.columns() == {
        "steps": [0, 1, 2],
        "values": [1.0, None, None],
        "timestamps": [5.0, 6.0, 7.0],
    }
    with pytest.raises(ValueError, match="one entry per point"):
        MetricArrays.of([0, 1], [1.0], [1.0])


def test_chunks_round_trip_and_sort_out_of_order_points() -> None:
    rng = np.random.default_rng(1)
    series = MetricArrays.of(
        rng.integers(-(2**40), 2**40, 700), rng.normal(size=700), 1.7e9 + rng.random(700) * 1e4
    )
    back = metric_chunks.unpack(metric_chunks.pack(series))
    assert back.steps.tolist() == series.steps.tolist()
    assert (
        back.values.tolist() == series.values.tolist()
        and back.timestamps.tolist() == series.timestamps.tolist()
    )
    assert len(metric_chunks.unpack(metric_chunks.pack(MetricArrays.empty()))) == 0
    with pytest.raises(ValueError, match="unknown metric chunk format"):
        metric_chunks.unpack(b"\x07abc")
    ordered = metric_chunks.in_series_order(
        MetricArrays.of([2, 1, 1, 2, 2], [0.5, 0.7, 0.1, 0.4, 0.3], [102, 101, 200, 102, 102])
    )
    assert ordered.steps.tolist() == [1, 1, 2, 2, 2]
    assert ordered.values.tolist() == [0.7, 0.1, 0.5, 0.4, 0.3]  # same step and time: as logged
    pieces = list(metric_chunks.split(MetricArrays.of(range(2500), range(2500), range(2500))))
    assert [len(p) for p in pieces] == [1024, 1024, 452] and pieces[2].steps[0] == 2048


def test_the_filter_language() -> None:
    metrics, params = parse_filter("metrics.val_loss < 0.5 AND params.opt = 'adam w' and params.lr != 1e-3")
    assert metrics == (MetricCondition("val_loss", "<", 0.5),)
    assert params == (
        ParamCondition("opt", ("adam w",)),
        ParamCondition("lr", (0.001, "1e-3"), negate=True),
    )
    assert parse_filter("params.n == 3 and params.bn = true")[1] == (
        ParamCondition("n", (3, "3")),
        ParamCondition("bn", (True, "true")),
    )
    assert parse_filter("metrics.eval/acc >= -2")[0] == (MetricCondition("eval/acc", ">=", -2.0),)
    assert parse_filter("  ") == ((), ())
    for bad in ("loss < 1", "metrics.loss < x", "metrics.loss <", "params.lr < 1", "metrics.loss < nan"):
        with pytest.raises(ValidationError) as excinfo:
            parse_filter(bad)
        assert excinfo.value.details == [{"field": "filter", "message": excinfo.value.details[0]["message"]}]


def test_columns_and_sorts() -> None:
    picked = Columns.parse("params.lr, metrics.val_loss,params.lr,metrics.a/b")
    assert picked == Columns(params=("lr",), metrics=("val_loss", "a/b"))
    assert Columns.parse("") == Columns()
    assert Sort.parse("metrics.acc") == Sort("metric", "acc") and Sort.parse("created_at") == Sort(
        "created_at"
    )
    assert Sort.parse("params.lr") == Sort("param", "lr")
    for bad, parse in (("lr", Columns.parse), ("metrics.a b", Columns.parse), ("name", Sort.parse)):
        with pytest.raises(ValidationError):
            parse(bad)

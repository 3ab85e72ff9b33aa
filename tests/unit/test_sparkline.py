"""The pure parts of `aicloud run show` and `aicloud run compare`: sparklines, metric statistics,
the params that differ, the best value of a metric, and how many run columns fit."""

from __future__ import annotations

import math

from aicloud.cli.runview import (
    BARS,
    best_of,
    blocks,
    differing_params,
    metric_stats,
    param_text,
    runs_per_block,
    sparkline,
)
from aicloud.schemas.jobs import metric_goal


def test_a_sparkline_spans_the_lowest_to_the_highest_bar() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == BARS
    assert sparkline([7, 6, 5, 4, 3, 2, 1, 0]) == BARS[::-1]
    assert sparkline([0.9, 0.5, 0.3, 0.25]) == "█▄▂▁"


def test_a_long_series_is_averaged_into_the_width() -> None:
    line = sparkline([float(i) for i in range(1000)], width=20)
    assert len(line) == 20 and line[0] == "▁" and line[-1] == "█"
    assert list(line) == sorted(line)  # a rising series rises


def test_a_short_series_keeps_one_bar_per_point() -> None:
    assert len(sparkline([1.0, 2.0, 3.0], width=20)) == 3


def test_flat_empty_and_gaps() -> None:
    assert sparkline([0.5, 0.5, 0.5]) == BARS[3] * 3
    assert sparkline([]) == "" and sparkline([1.0], width=0) == ""
    assert sparkline([None, None]) == "  "
    assert sparkline([0.0, None, math.nan, 1.0]) == "▁  █"


def test_metric_stats_last_min_max_and_steps() -> None:
    stats = metric_stats("eval_loss", [1, 2, 3, 4], [0.9, 0.4, None, 0.5])
    assert (stats.last, stats.min, stats.max, stats.steps) == (0.5, 0.4, 0.9, 4)
    assert (stats.first_step, stats.last_step) == (1, 4)
    empty = metric_stats("x", [], [])
    assert (empty.last, empty.min, empty.max, empty.steps) == (None, None, None, 0)
    assert metric_stats("x", [0], [None]).last is None


def test_only_the_params_that_differ() -> None:
    runs = [
        {"epochs": 2, "lr": 0.1, "hidden": [8, 4]},
        {"epochs": 2, "lr": 0.01, "hidden": [8, 4]},
        {"epochs": 2, "lr": 0.1, "hidden": [8, 4], "seed": 1},
    ]
    assert differing_params(runs) == ["lr", "seed"]  # a param one run lacks differs
    assert differing_params([runs[0], dict(runs[0])]) == []
    assert param_text("adam") == "adam" and param_text([8, 4]) == "[8, 4]" and param_text(0.1) == "0.1"


def test_the_best_value_follows_the_metric_name() -> None:
    assert metric_goal("eval_accuracy") == "max" and metric_goal("eval_r2") == "max"
    assert metric_goal("train_loss") == "min" and metric_goal("eval_rmse") == "min"
    assert metric_goal("samples_per_second") == "max" and metric_goal("epoch_seconds") == "min"
    assert metric_goal("resumed_from_epoch") is None
    assert best_of("eval_accuracy", [0.8, 0.9, None]) == {1}
    assert best_of("eval_loss", [0.3, 0.2, 0.2]) == {1, 2}
    assert best_of("eval_loss", [0.3, 0.3]) == set()  # all tie: nothing to mark
    assert best_of("eval_loss", [0.3, None]) == set()  # one value: nothing to compare
    assert best_of("resumed_from_epoch", [1.0, 2.0]) == set()


def test_run_columns_fit_the_width_in_blocks() -> None:
    # 100 columns: a label of 24 and runs of 14 (3 columns of borders and padding each).
    assert runs_per_block(100, 24, 14, runs=10) == 4
    assert 1 + (24 + 3) + 4 * (14 + 3) <= 100
    assert runs_per_block(100, 24, 14, runs=2) == 2
    assert runs_per_block(20, 24, 14, runs=3) == 1  # too narrow: still one run a block
    assert blocks(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert blocks(2, 4) == [range(0, 2)] and blocks(0, 4) == []

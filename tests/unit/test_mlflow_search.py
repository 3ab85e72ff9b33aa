"""MLflow's search syntax as the tracking API reads it (server/services/mlflow_search.py)."""

from __future__ import annotations

import pytest

from aicloud.errors import BadRequestError
from aicloud.server.services.mlflow_search import (
    like,
    page_offset,
    page_token,
    parse_filter,
    run_filter,
    run_order,
)
from aicloud.store.tracking import Clause, OrderKey


def test_a_filter_becomes_clauses() -> None:
    clauses = run_filter(
        "metrics.acc > 0.5 and params.lr = '0.1' AND tags.\"mlflow.user\" LIKE 'a%' "
        "and attributes.status IN ('FINISHED', 'KILLED') and metrics.`val loss` <= -1e-3"
    )
    assert clauses == (
        Clause("metric", "acc", ">", 0.5),
        Clause("param", "lr", "=", "0.1"),
        Clause("tag", "mlflow.user", "LIKE", "a%"),
        Clause("attribute", "status", "IN", ("succeeded", "cancelled")),
        Clause("metric", "val loss", "<=", -0.001),
    )
    assert run_filter("") == () and run_filter(None) == ()
    assert run_filter("run_name != 'x'") == (Clause("attribute", "run_name", "!=", "x"),)
    assert run_filter("attributes.start_time >= 1700000000000") == (
        Clause("attribute", "start_time", ">=", 1.7e12),
    )
    assert run_filter("tags.k NOT IN ('a')") == (Clause("tag", "k", "NOT IN", ("a",)),)
    assert run_filter("tags.mlflow.runName = 'r'") == (Clause("attribute", "run_name", "=", "r"),)
    assert run_filter("attributes.user_id = 'me'") == (Clause("tag", "mlflow.user", "=", "me"),)
    assert parse_filter("params.x = 'it\\'s'") == [("params", "x", "=", "it's")]


@pytest.mark.parametrize(
    "bad",
    [
        "metrics.acc > 0.5 OR metrics.acc < 0.1",  # MLflow has no OR
        "metrics.acc > 'high'",  # metrics compare with numbers
        "params.lr > 0.1",  # params with strings
        "datasets.name = 'x'",
        "attributes.nope = 'x'",
        "metrics.acc >",
        "metrics.acc 0.5",
        "params.lr IN 'x'",
        "attributes.status LIKE 'F%'",
        "metrics.acc > 0.5 AND",
        "a" * 10_001,
        'metrics.`a"b` > 1',  # keys are MLflow's: no quotes
        "params.`` = 'x'",
        "attributes.start_time > -1e300",
        "attributes.end_time < 1e300",
    ],
)
def test_bad_filters_say_what_is_wrong(bad: str) -> None:
    with pytest.raises(BadRequestError):
        run_filter(bad)


def test_order_by_and_page_tokens() -> None:
    assert run_order(["metrics.acc DESC", "params.lr", "attributes.start_time ASC", "tags.`a b` desc"]) == (
        OrderKey("metric", "acc", False),
        OrderKey("param", "lr", True),
        OrderKey("attribute", "start_time", True),
        OrderKey("tag", "a b", False),
    )
    for bad in ("metrics.acc sideways", 'tags.`a"b`', "attributes.nope"):
        with pytest.raises(BadRequestError):
            run_order([bad])
    assert page_offset(page_token(40)) == 40 and page_offset(None) == 0
    for bad in ("garbage", page_token(-1), "e30="):
        with pytest.raises(BadRequestError):
            page_offset(bad)


def test_like_in_python() -> None:
    assert like("a%", "abc") and like("a_c", "abc") and not like("a_c", "abcd")
    assert not like("A%", "abc") and like("A%", "abc", ignore_case=True)
    assert like("100%", "100% sure") and like("a.c", "a.c") and not like("a.c", "abc")

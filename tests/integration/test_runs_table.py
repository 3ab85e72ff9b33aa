"""The runs table, metric series and the compare view over real HTTP: picked columns, filters,
sorts, pages and totals computed by the server, series downsampled on the server, another
workspace's runs never visible, and bad expressions refused with a 422 naming the field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aicloud import Client
from aicloud.testing.server import ServerProcess

from helpers import assert_error

RUNS = "/api/v1/runs"

# name, params, last val_loss (None: never logged), acc
_RUNS: list[tuple[str, dict[str, Any], float | None, float]] = [
    ("mlp-a", {"lr": 0.1, "opt": "sgd"}, 0.9, 0.50),
    ("mlp-b", {"lr": 0.01, "opt": "adam"}, 0.3, 0.80),
    ("mlp-c", {"lr": "0.01", "opt": "adam"}, 0.45, 0.70),  # lr logged as text (MLflow logs text)
    ("cnn-a", {"lr": 0.001, "opt": "adam", "depth": 3}, 0.2, 0.90),
    ("cnn-b", {"lr": 0.001, "opt": "sgd w/ momentum"}, 0.6, 0.60),
    ("notebook", {"opt": "adam"}, None, 0.10),
]


@dataclass
class Table:
    http: httpx.Client  # the table's own workspace
    ids: dict[str, str]  # run name -> id
    token: str


def _log(http: httpx.Client, run_id: str, points: list[dict[str, Any]]) -> None:
    r = http.post(f"{RUNS}/{run_id}/metrics", json={"points": points})
    assert r.status_code == 200, r.text


@pytest.fixture
def table(server: ServerProcess, client: Client, unique: Callable[[str], str]) -> Iterator[Table]:
    """A workspace of its own with the runs of ``_RUNS``, created in that order."""
    created = client.workspaces.create(unique("runs-table"))
    token = created.admin_token.token
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        ids = {}
        for name, params, loss, acc in _RUNS:
            run = http.post(RUNS, json={"name": name, "params": params}).json()
            ids[name] = run["id"]
            points = [{"name": "acc", "step": s, "value": acc * s / 2} for s in range(3)]
            if loss is not None:
                points += [{"name": "val_loss", "step": s, "value": loss + (2 - s) * 0.5} for s in range(3)]
            _log(http, run["id"], points)
        yield Table(http, ids, token)


def _names(table: Table, response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    by_id = {v: k for k, v in table.ids.items()}
    return [by_id[r["id"]] for r in response.json()]


def test_columns_keep_the_picked_params_and_metrics_only(table: Table) -> None:
    r = table.http.get(RUNS, params={"columns": "params.lr,metrics.val_loss,params.missing"})
    assert r.status_code == 200, r.text
    assert r.headers["X-Total-Count"] == "6"
    runs = {run["name"]: run for run in r.json()}
    assert runs["cnn-a"]["params"] == {"lr": 0.001}
    assert runs["cnn-a"]["summary"] == {"val_loss": 0.2}
    assert runs["notebook"]["params"] == {} and runs["notebook"]["summary"] == {}
    everything = {run["name"]: run for run in table.http.get(RUNS).json()}
    assert everything["cnn-a"]["params"] == {"lr": 0.001, "opt": "adam", "depth": 3}
    assert everything["cnn-a"]["summary"] == {"acc": 0.9, "val_loss": 0.2}


def test_filters_on_metrics_params_and_name(table: Table) -> None:
    def names(**params: Any) -> list[str]:
        return sorted(_names(table, table.http.get(RUNS, params=params)))

    assert names(filter="metrics.val_loss < 0.5") == ["cnn-a", "mlp-b", "mlp-c"]
    assert names(filter="metrics.val_loss >= 0.45 and metrics.acc > 0.65") == ["mlp-c"]
    assert names(filter="metrics.val_loss != 0.9") == ["cnn-a", "cnn-b", "mlp-b", "mlp-c"]
    # an unquoted number matches the number and the text; a quoted one the text only
    assert names(filter="params.lr = 0.01") == ["mlp-b", "mlp-c"]
    assert names(filter="params.lr = '0.01'") == ["mlp-c"]
    assert names(filter="params.lr = 1e-3") == ["cnn-a", "cnn-b"]
    assert names(filter="params.opt = 'sgd w/ momentum'") == ["cnn-b"]
    assert names(filter="params.opt = adam AND metrics.val_loss < 0.4") == ["cnn-a", "mlp-b"]
    assert names(filter="params.opt != adam") == ["cnn-b", "mlp-a"]  # runs without it: never
    assert names(filter="params.depth = 3") == ["cnn-a"]
    assert names(name="MLP") == ["mlp-a", "mlp-b", "mlp-c"]
    assert names(name="%") == [] and names(name="_") == []  # LIKE's wildcards are plain text
    r = table.http.get(RUNS, params={"filter": "metrics.val_loss < 0.5", "name": "cnn"})
    assert _names(table, r) == ["cnn-a"] and r.headers["X-Total-Count"] == "1"


def test_sorts_by_a_metric_a_param_or_age_and_pages_with_a_total(table: Table) -> None:
    def names(**params: Any) -> list[str]:
        return _names(table, table.http.get(RUNS, params=params))

    by_loss = ["cnn-a", "mlp-b", "mlp-c", "cnn-b", "mlp-a", "notebook"]  # lowest first; without: last
    assert names(sort="metrics.val_loss") == by_loss
    assert names(metric="val_loss") == by_loss  # the older spelling
    assert names(sort="metrics.val_loss", order="desc") == [*by_loss[-2::-1], "notebook"]
    assert names(sort="metrics.acc")[0] == "cnn-a"  # accuracy-like: highest first
    assert names(sort="created_at") == [name for name, *_ in reversed(_RUNS)]
    assert names(sort="created_at", order="asc") == [name for name, *_ in _RUNS]
    assert names(sort="params.depth") == ["cnn-a", "cnn-b", "mlp-c", "mlp-b", "mlp-a", "notebook"][:1] + [
        name for name, *_ in reversed(_RUNS) if name != "cnn-a"
    ]
    lrs = names(sort="params.lr", filter="params.opt = sgd")
    assert lrs == ["mlp-a"]
    page = table.http.get(RUNS, params={"sort": "metrics.val_loss", "limit": 2, "offset": 2})
    assert _names(table, page) == by_loss[2:4] and page.headers["X-Total-Count"] == "6"
    last = table.http.get(RUNS, params={"sort": "metrics.val_loss", "limit": 4, "offset": 4})
    assert _names(table, last) == by_loss[4:] and last.headers["X-Total-Count"] == "6"


def test_the_sdk_pages_filters_and_picks_columns(server: ServerProcess, table: Table) -> None:
    with Client(url=server.url, token=table.token) as c:
        page = c.runs.page(
            filter="metrics.val_loss < 0.5", sort="metrics.val_loss", columns=["metrics.val_loss"], limit=2
        )
        assert page.total == 3
        assert [r.name for r in page.runs] == ["cnn-a", "mlp-b"]
        assert [r.summary for r in page.runs] == [{"val_loss": 0.2}, {"val_loss": 0.3}]
        assert [r.name for r in c.runs.list(name="cnn", sort="created_at", order="asc")] == ["cnn-a", "cnn-b"]


def test_another_workspace_never_sees_the_runs(http: httpx.Client, table: Table) -> None:
    mine = set(table.ids.values())
    r = http.get(RUNS, params={"name": "mlp", "limit": 1000})
    assert r.status_code == 200 and not mine & {run["id"] for run in r.json()}
    r = http.get(RUNS, params={"filter": "params.opt = 'sgd w/ momentum'"})
    assert not mine & {run["id"] for run in r.json()}
    a = table.ids["cnn-a"]
    assert_error(http.get(f"{RUNS}/{a}/metrics", params={"max_points": 10}), 404, "not_found")
    assert_error(http.get(f"{RUNS}/compare", params={"ids": a}), 404, "not_found")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"columns": "lr"}, "columns"),
        ({"columns": "params.lr,metrics.bad name"}, "columns"),
        ({"filter": "metrics.val_loss < cheap"}, "filter"),
        ({"filter": "val_loss < 1"}, "filter"),
        ({"filter": "metrics.val_loss < 1 and"}, "filter"),
        ({"filter": "params.lr > 0.1"}, "filter"),
        ({"filter": "metrics.val_loss < 'x'"}, "filter"),
        ({"filter": "params.opt = sgd w/ momentum"}, "filter"),
        ({"filter": "params.x = 1; DROP TABLE runs"}, "filter"),
        ({"sort": "val_loss"}, "sort"),
        ({"sort": "metrics.val loss"}, "sort"),
        ({"metric": "val loss"}, "metric"),
    ],
)
def test_bad_columns_filters_and_sorts_are_422_naming_the_field(
    http: httpx.Client, params: dict[str, str], field: str
) -> None:
    body = assert_error(http.get(RUNS, params=params), 422, "validation_error")
    assert [d["field"] for d in body["details"]] == [field], body


def test_series_are_downsampled_on_the_server_and_paged(table: Table) -> None:
    run = table.ids["mlp-a"]
    points = [{"name": "loss", "step": s, "value": 1.0 / (s + 1)} for s in range(5000)]
    points[3210]["value"] = 50.0  # a spike a plain stride would likely drop
    _log(table.http, run, points)
    r = table.http.get(f"{RUNS}/{run}/metrics", params={"name": "loss", "max_points": 100})
    assert r.status_code == 200, r.text
    series = r.json()["metrics"]["loss"]
    assert len(series["steps"]) == len(series["values"]) == len(series["timestamps"]) == 100
    assert series["steps"][0] == 0 and series["steps"][-1] == 4999
    assert series["steps"] == sorted(series["steps"]) and 3210 in series["steps"]
    assert 50.0 in series["values"]
    full = table.http.get(f"{RUNS}/{run}/metrics", params={"name": "loss"}).json()["metrics"]["loss"]
    assert len(full["steps"]) == 5000  # without max_points: every point, as before
    both = table.http.get(f"{RUNS}/{run}/metrics", params=[("name", "acc"), ("name", "val_loss")]).json()
    assert sorted(both["metrics"]) == ["acc", "val_loss"] and both["total"] is None
    first = table.http.get(f"{RUNS}/{run}/metrics", params={"limit": 2, "max_points": 100}).json()
    assert sorted(first["metrics"]) == ["acc", "loss"] and first["total"] == 3
    rest = table.http.get(f"{RUNS}/{run}/metrics", params={"limit": 2, "offset": 2}).json()
    assert list(rest["metrics"]) == ["val_loss"] and rest["total"] == 3
    assert_error(table.http.get(f"{RUNS}/{run}/metrics", params={"max_points": 1}), 422)
    bad = assert_error(table.http.get(f"{RUNS}/{run}/metrics", params={"name": "a b"}), 422)
    assert bad["details"][0]["field"] == "name"


def test_compare_returns_params_that_differ_and_downsampled_series(
    server: ServerProcess, table: Table
) -> None:
    a, b = table.ids["mlp-b"], table.ids["cnn-a"]
    r = table.http.get(f"{RUNS}/compare", params={"ids": f"{a},{b}", "metrics": "val_loss", "max_points": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [run["id"] for run in body["runs"]] == [a, b]
    assert body["params_differ"] == ["depth", "lr"]  # opt is adam in both
    assert sorted(body["metrics"]) == sorted([a, b])
    assert body["metrics"][b]["val_loss"] == {
        "steps": [0, 1, 2],
        "values": [1.2, 0.7, 0.2],
        "timestamps": body["metrics"][b]["val_loss"]["timestamps"],
    }
    every = table.http.get(f"{RUNS}/compare", params={"ids": f"{a},{b}"}).json()
    assert sorted(every["metrics"][a]) == ["acc", "val_loss"]
    with Client(url=server.url, token=table.token) as c:
        view = c.runs.compare_series([a, b], ["acc"], max_points=50)
        assert view.params_differ == ["depth", "lr"] and list(view.metrics[a]) == ["acc"]
    too_many = ",".join([a] * 3 + [f"run_{i:020x}" for i in range(10)])
    body = assert_error(table.http.get(f"{RUNS}/compare", params={"ids": too_many}), 422)
    assert body["details"][0]["field"] == "ids"
    assert_error(table.http.get(f"{RUNS}/compare", params={"ids": "not-an-id"}), 422)
    assert_error(table.http.get(f"{RUNS}/compare", params={"ids": f"{a},run_{'0' * 20}"}), 404, "not_found")

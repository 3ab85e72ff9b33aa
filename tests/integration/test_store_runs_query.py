"""The run store's runs-table queries and packed metric series, on SQLite and PostgreSQL: metric
and param conditions, sorts, counts and picked summaries; series that cross chunk boundaries,
arrive out of order or in bulk; and the migration that packs the old one-row-per-point table."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from aicloud.entities import MetricPoint, RunStatus
from aicloud.entities.series import MetricArrays
from aicloud.errors import NotFoundError
from aicloud.store import MetadataStore, open_store
from aicloud.store.sql import metric_chunks, migrate
from aicloud.store.sql.session import create_db_engine, writer
from aicloud.store.training import MetricCondition, ParamCondition, RunFilter

from store_fixtures import (  # noqa: F401  (pytest finds the fixtures: store, store_url, ...)
    postgres_url_fixture,
    sqlite_url_fixture,
    store_fixture,
    store_url_fixture,
)


@pytest.fixture
def runs(store: MetadataStore) -> Iterator[tuple[MetadataStore, str, dict[str, str]]]:
    """A workspace with five runs (params of every JSON kind, two metrics) and their ids by name."""
    ws = store.workspaces.create("table").id
    made = {}
    specs = [
        ("a", {"lr": 0.1, "opt": "sgd", "bn": True}, 0.9),
        ("b", {"lr": 0.01, "opt": "adam", "bn": False}, 0.3),
        ("c", {"lr": "0.01", "opt": "adam"}, 0.45),
        ("d", {"lr": 1e-3, "opt": "adam", "layers": [8, 4]}, None),
        ("e", {"lr": 1, "opt": "sgd"}, math.nan),  # its last loss is not finite
    ]
    for name, params, loss in specs:
        run = store.runs.create(workspace_id=ws, job_id=None, name=f"run-{name}", params=params)
        made[name] = run.id
        points = [MetricPoint("acc", 0, 0.5, 1.0)]
        if loss is not None:
            points += [MetricPoint("loss", 0, 2.0, 1.0), MetricPoint("loss", 1, loss, 2.0)]
        store.runs.log_metrics(ws, run.id, points)
    store.runs.finish(ws, made["b"], RunStatus.SUCCEEDED)
    yield store, ws, made


def _names(store: MetadataStore, ws: str, made: dict[str, str], **where: object) -> list[str]:
    by_id = {v: k for k, v in made.items()}
    return [by_id[r.id] for r in store.runs.list(ws, where=RunFilter(**where))]  # type: ignore[arg-type]


def test_metric_and_param_conditions(runs: tuple[MetadataStore, str, dict[str, str]]) -> None:
    store, ws, made = runs

    def names(**where: object) -> list[str]:
        return sorted(_names(store, ws, made, **where))

    loss = "loss"
    assert names(metrics=(MetricCondition(loss, "<", 0.5),)) == ["b", "c"]
    assert names(metrics=(MetricCondition(loss, ">=", 0.3), MetricCondition(loss, "!=", 0.45))) == ["a", "b"]
    assert names(metrics=(MetricCondition("acc", "=", 0.5),)) == ["a", "b", "c", "d", "e"]
    assert names(params=(ParamCondition("lr", (0.01, "0.01")),)) == ["b", "c"]
    assert names(params=(ParamCondition("lr", ("0.01",)),)) == ["c"]
    assert names(params=(ParamCondition("lr", (0.001,)),)) == ["d"]  # 1e-3 as logged
    assert names(params=(ParamCondition("lr", (1,)),)) == ["e"]
    assert names(params=(ParamCondition("bn", (True,)),)) == ["a"]
    assert names(params=(ParamCondition("opt", ("adam",), negate=True),)) == ["a", "e"]
    assert names(params=(ParamCondition("bn", (False,), negate=True),)) == ["a"]  # without bn: never
    assert names(name="RUN-") == ["a", "b", "c", "d", "e"] and names(name="%") == []
    assert names(ids=(made["c"], made["a"], "run_missing")) == ["a", "c"]
    where = RunFilter(params=(ParamCondition("opt", ("adam",)),), status=RunStatus.RUNNING)
    assert store.runs.count(ws, where=where) == 2
    assert store.runs.count(ws) == 5 and store.runs.count(ws, where=RunFilter(offset=3)) == 5
    other = store.workspaces.create("other").id
    assert store.runs.count(other, where=where) == 0 and store.runs.list(other) == []
    assert store.runs.list(other, where=RunFilter(ids=(made["a"],))) == []
    both = store.runs.metric_arrays_of(ws, [made["b"], made["d"]], ["loss", "acc"])
    assert list(both) == [made["b"], made["d"]] and list(both[made["b"]]) == ["acc", "loss"]
    assert list(both[made["d"]]) == ["acc"] and both[made["b"]]["loss"].values.tolist() == [2.0, 0.3]
    with pytest.raises(NotFoundError, match=made["a"]):
        store.runs.metric_arrays_of(other, [made["a"]])


def test_sorts_and_picked_summaries(runs: tuple[MetadataStore, str, dict[str, str]]) -> None:
    store, ws, made = runs
    assert _names(store, ws, made, metric="loss") == ["b", "c", "a", "e", "d"]  # NaN and none last
    assert _names(store, ws, made, metric="loss", descending=True) == ["a", "c", "b", "e", "d"]
    assert _names(store, ws, made) == ["e", "d", "c", "b", "a"]
    assert _names(store, ws, made, oldest_first=True) == ["a", "b", "c", "d", "e"]
    assert _names(store, ws, made, param="layers")[0] == "d"
    assert _names(store, ws, made, param="bn") == ["b", "a", "e", "d", "c"]  # false < true, none last
    assert _names(store, ws, made, metric="loss", offset=1, oldest_first=True)[:2] == ["c", "a"]
    picked = store.runs.list(ws, where=RunFilter(metric="loss"), metrics=["loss"])
    assert [r.summary for r in picked[:2]] == [{"loss": 0.3}, {"loss": 0.45}]
    assert store.runs.list(ws, metrics=[])[0].summary == {}
    assert math.isnan(store.runs.get(ws, made["e"]).summary["loss"])


def test_series_cross_chunks_keep_series_order_and_stats(store: MetadataStore) -> None:
    ws = store.workspaces.create("series").id
    run = store.runs.create(workspace_id=ws, job_id=None, name="r").id
    n = 2 * metric_chunks.CHUNK_POINTS + 300
    steps = np.arange(n)
    values = np.sin(steps / 50.0)
    # in batches of 700 (each appends to the last chunk, then starts new ones), the last batch
    # first: the series reads back in step order all the same
    batches = [(i, min(i + 700, n)) for i in range(0, n, 700)]
    for lo, hi in [batches[-1], *batches[:-1]]:
        points = [MetricPoint("wave", int(s), float(values[s]), float(s)) for s in range(lo, hi)]
        assert store.runs.log_metrics(ws, run, points) == hi - lo
    arrays = store.runs.metric_arrays(ws, run, ["wave"])["wave"]
    assert arrays.steps.tolist() == steps.tolist()
    assert (
        np.array_equal(arrays.values, values) and arrays.timestamps.tolist() == steps.astype(float).tolist()
    )
    # the bulk path: columns of two metrics at once, a non-finite value among them
    bulk = {
        "a": MetricArrays.of([0, 1, 2], [3.0, math.inf, 1.0], [5.0, 6.0, 7.0]),
        "b": MetricArrays.of([7], [-1.5], [8.0]),
    }
    assert store.runs.log_metric_arrays(ws, run, bulk) == 4
    stats = {s.name: s for s in store.runs.metric_stats(ws, run)}
    assert list(stats) == ["a", "b", "wave"]
    assert (stats["a"].count, stats["a"].min_value, stats["a"].max_value, stats["a"].last_value) == (
        3,
        1.0,
        3.0,
        1.0,
    )
    assert stats["wave"].count == n and stats["wave"].last_step == n - 1
    assert stats["wave"].min_value == values.min() and stats["wave"].max_value == values.max()
    assert store.runs.metric_columns(ws, run, "a")["a"]["values"] == [3.0, None, 1.0]
    assert store.runs.get(ws, run).summary == {"a": 1.0, "b": -1.5, "wave": float(values[-1])}
    assert [s.name for s in store.runs.metric_stats(ws, run, ["b", "zz"])] == ["b"]
    assert store.runs.metric_arrays(ws, run, []) == {}


def _revision_before_chunks() -> str:
    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    mine = next(s for s in scripts.walk_revisions() if s.path.endswith("_metric_chunks.py"))
    assert isinstance(mine.down_revision, str)
    return mine.down_revision


def test_the_migration_packs_existing_points_and_unpacks_them_on_downgrade(store_url: str) -> None:
    before = _revision_before_chunks()
    engine = create_db_engine(store_url)
    config = migrate.alembic_config()
    t = "2024-01-01 00:00:00"
    # one series of 1,500 points logged last step first (ids in reverse), a NaN, a tie on step
    points = [("run_old1", "loss", s, 1.0 / (s + 1), 100.0 + s) for s in reversed(range(1500))]
    points += [
        ("run_old1", "acc", 0, None, 1.0),
        ("run_old1", "acc", 0, 0.5, 1.0),
        ("run_old2", "acc", 3, 0.25, 9.0),
    ]
    try:
        with writer(engine).begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, before)
        with engine.begin() as connection:
            connection.execute(
                text(f"INSERT INTO workspaces (id, name, created_at) VALUES ('ws_old', 'old', '{t}')")
            )
            for run_id in ("run_old1", "run_old2"):
                connection.execute(
                    text(
                        "INSERT INTO runs (id, workspace_id, name, status, params, summary, created_at) "
                        f"VALUES ('{run_id}', 'ws_old', 'r', 'succeeded', '{{}}', '{{}}', '{t}')"
                    )
                )
            connection.execute(
                text(
                    "INSERT INTO metrics (run_id, name, step, value, timestamp) "
                    "VALUES (:run_id, :name, :step, :value, :timestamp)"
                ),
                [dict(zip(("run_id", "name", "step", "value", "timestamp"), p, strict=True)) for p in points],
            )
    finally:
        engine.dispose()

    store = open_store(store_url)
    try:
        history = store.runs.metric_history("ws_old", "run_old1", "loss")
        assert [p.step for p in history] == list(range(1500))
        assert [p.value for p in history[:2]] == [1.0, 0.5] and history[-1].timestamp == 1599.0
        acc = store.runs.metric_columns("ws_old", "run_old1", "acc")["acc"]
        assert acc == {"steps": [0, 0], "values": [None, 0.5], "timestamps": [1.0, 1.0]}  # as logged
        stats = {s.name: s for s in store.runs.metric_stats("ws_old", "run_old1")}
        assert stats["loss"].count == 1500 and stats["loss"].max_value == 1.0
        assert stats["loss"].last_step == 1499 and stats["acc"].last_value == 0.5
        assert store.runs.get("ws_old", "run_old2").summary == {"acc": 0.25}
        assert [r.id for r in store.runs.list("ws_old", where=RunFilter(metric="acc"))] == [
            "run_old2",
            "run_old1",
        ]
    finally:
        store.close()

    engine = create_db_engine(store_url)
    try:
        with writer(engine).begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, before)
        assert "run_metrics" not in inspect(engine).get_table_names()
        with engine.connect() as connection:
            back = connection.execute(
                text(
                    "SELECT run_id, name, step, value, timestamp FROM metrics ORDER BY run_id, name, step, id"
                )
            ).all()
        assert sorted(map(tuple, back), key=str) == sorted(
            [(r, n, s, v, ts) for r, n, s, v, ts in points], key=str
        )
    finally:
        engine.dispose()

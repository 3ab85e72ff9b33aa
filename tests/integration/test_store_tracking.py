"""The experiment-tracking store (store/tracking.py) on SQLite and PostgreSQL: experiments, the
MLflow run search, adoption of a job's run, and run artifacts with their blob references."""

from __future__ import annotations

import pytest

from aicloud.entities import BlobOwner, JobKind, MetricPoint
from aicloud.errors import BadRequestError, ConflictError, NotFoundError
from aicloud.store import MetadataStore
from aicloud.store.tracking import Clause, OrderKey, RunQuery

from store_fixtures import (  # noqa: F401  (pytest finds the fixtures: store, store_url, ...)
    postgres_url_fixture,
    sqlite_url_fixture,
    store_fixture,
    store_url_fixture,
)


def _search(store: MetadataStore, ws: str, *clauses: Clause, order: tuple[OrderKey, ...] = ()) -> list[str]:
    query = RunQuery(experiments=("exp",), clauses=clauses, order=order)
    return [r.name for r in store.tracking.search_runs(ws, query)]


def test_experiments_and_the_run_search(store: MetadataStore) -> None:
    ws = store.workspaces.create("t").id
    experiment = store.tracking.create_experiment(ws, "exp", {"team": "a"})
    with pytest.raises(ConflictError):
        store.tracking.create_experiment(ws, "exp", {})
    assert store.tracking.experiment_by_name(ws, "exp") == experiment
    names = ["a", "b", "c", "Cc"]
    for i, name in enumerate(names):
        run = store.tracking.create_run(ws, job_id=None, name=name, experiment="exp", tags={"k": name})
        store.tracking.log_params_and_tags(
            ws, run.id, {"lr": f"0.{i}", "opt": "adam" if i % 2 else "sgd"}, {}
        )
        if i < 3:
            store.runs.log_metrics(ws, run.id, [MetricPoint("acc", 0, i / 10, 1.0)])
    # aicloud's own params are JSON values; a search compares their text
    store.runs.create(workspace_id=ws, job_id=None, name="other", params={"lr": 0.5})
    assert _search(store, ws, Clause("metric", "acc", ">", 0.05)) == ["c", "b"]
    assert _search(store, ws, Clause("param", "lr", "=", "0.1")) == ["b"]
    assert _search(store, ws, Clause("param", "opt", "IN", ("adam",))) == ["Cc", "b"]
    assert _search(store, ws, Clause("tag", "k", "LIKE", "c%")) == ["c"]  # case-sensitive
    assert _search(store, ws, Clause("tag", "k", "ILIKE", "c%")) == ["Cc", "c"]
    assert _search(store, ws, Clause("tag", "k", "NOT IN", ("a", "b"))) == ["Cc", "c"]
    assert _search(store, ws, Clause("attribute", "status", "=", "running")) == ["Cc", "c", "b", "a"]
    assert _search(store, ws, order=(OrderKey("metric", "acc", False),)) == ["c", "b", "a", "Cc"]
    assert _search(store, ws, order=(OrderKey("param", "lr", True),)) == ["a", "b", "c", "Cc"]
    default = RunQuery(experiments=("Default",), clauses=(Clause("param", "lr", "=", "0.5"),))
    assert [r.name for r in store.tracking.search_runs(ws, default)] == ["other"]
    # a param keeps its value; a rename takes the runs along
    run_a = store.tracking.search_runs(
        ws, RunQuery(experiments=("exp",), clauses=(Clause("attribute", "run_name", "=", "a"),))
    )[0]
    with pytest.raises(BadRequestError):
        store.tracking.log_params_and_tags(ws, run_a.id, {"lr": "0.9"}, {"t": "x"})
    assert store.runs.get(ws, run_a.id).tags == {"k": "a"}
    store.tracking.update_experiment(ws, experiment.id, name="renamed", tags={"x": "y"})
    assert store.runs.get(ws, run_a.id).experiment == "renamed"
    assert store.tracking.get_experiment(ws, experiment.id).tags == {"team": "a", "x": "y"}
    other = store.workspaces.create("u").id
    with pytest.raises(NotFoundError):
        store.tracking.get_experiment(other, experiment.id)


def test_a_jobs_run_is_adopted_once(store: MetadataStore) -> None:
    ws = store.workspaces.create("t").id
    job = store.jobs.create(workspace_id=ws, name="j", kind=JobKind.COMMAND, spec={})
    own = store.runs.create(workspace_id=ws, job_id=job.id, name="j")
    first = store.tracking.create_run(
        ws, job_id=job.id, name="mine", experiment="Default", tags={}, adopt=own.id
    )
    assert first.id == own.id and first.name == "mine" and first.experiment == "Default"
    second = store.tracking.create_run(
        ws, job_id=job.id, name=None, experiment="Default", tags={}, adopt=own.id
    )
    assert second.id != own.id and second.job_id == job.id and second.name.startswith("run-")


def test_artifacts_hold_their_blobs(store: MetadataStore) -> None:
    ws = store.workspaces.create("t").id
    run = store.runs.create(workspace_id=ws, job_id=None, name="r")
    d1, d2 = "1" * 64, "2" * 64
    assert store.tracking.put_artifact(ws, run.id, "a/b.txt", d1, 3) is None
    assert store.tracking.put_artifact(ws, run.id, "c.txt", d1, 3) is None
    assert store.blob_refs.owns(ws, d1)
    with pytest.raises(ConflictError):
        store.tracking.put_artifact(ws, run.id, "a", d2, 1)  # a folder
    with pytest.raises(ConflictError):
        store.tracking.put_artifact(ws, run.id, "c.txt/d", d2, 1)  # below a file
    assert store.tracking.put_artifact(ws, run.id, "a/b.txt", d2, 4) == d1
    assert store.tracking.release_artifact(ws, run.id, d1) == []  # c.txt still holds it
    assert [a.path for a in store.tracking.artifacts(ws, run.id, "a")] == ["a/b.txt"]
    for path in ("a.txt", "a-b/c", "A/b", "a0", "a%/x", "a_/x"):  # neighbours of a/ in any collation
        store.tracking.put_artifact(ws, run.id, path, d2, 1)
    assert [a.path for a in store.tracking.artifacts(ws, run.id, "a")] == ["a/b.txt"]
    assert [a.path for a in store.tracking.artifacts(ws, run.id, "a%")] == ["a%/x"]
    assert (
        sorted(
            store.tracking.delete_artifacts(ws, run.id, p) for p in ("a.txt", "a-b", "A", "a0", "a%", "a_")
        )
        == [[]] * 6
    )
    assert [a.path for a in store.tracking.artifacts(ws, run.id)] == ["a/b.txt", "c.txt"]
    assert store.tracking.delete_artifacts(ws, run.id, "c.txt") == [d1]
    store.blob_refs.add(ws, d2, BlobOwner.UPLOAD)
    assert store.tracking.delete_artifacts(ws, run.id, "a") == []  # d2 is still an upload
    assert store.tracking.artifacts(ws, run.id) == []

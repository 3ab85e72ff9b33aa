"""The MLflow tracking API (docs/mlflow.md), driven by the real mlflow client against the real server:
what MLflow logs lands in aicloud's runs, and every refusal is in MLflow's error shape."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicloud import Client
from aicloud.testing.server import ServerProcess

mlflow = pytest.importorskip("mlflow", reason="pip install 'aicloud[test]' (mlflow-skinny)")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

API = "/mlflow/api/2.0/mlflow"
ARTIFACTS = "/mlflow/api/2.0/mlflow-artifacts/artifacts"


def _reset_mlflow() -> None:
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.tracking.fluent._active_experiment_id = None


@pytest.fixture
def tracking(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    """The mlflow client pointed at the server's tracking API with the admin token."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", server.token)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    _reset_mlflow()
    mlflow.set_tracking_uri(f"{server.url}/mlflow")
    yield MlflowClient()
    _reset_mlflow()
    mlflow.set_tracking_uri(None)


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``aicloud ARGS`` against the server, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update(AICLOUD_HOME=str(server.home), AICLOUD_URL=server.url, COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "aicloud", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _mlflow_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return str(body["message"])


def test_a_run_logged_with_mlflow_is_an_aicloud_run(
    tracking: MlflowClient,
    client: Client,
    http: httpx.Client,
    server: ServerProcess,
    unique: Any,
    tmp_path: Path,
) -> None:
    name = unique("mlflow-exp")
    experiment = mlflow.set_experiment(name)
    report = tmp_path / "report.txt"
    secret_text = f"plaintext-marker-{unique('m')}"
    report.write_text(secret_text)
    with mlflow.start_run(run_name="first") as active:
        run_id = active.info.run_id
        mlflow.log_param("lr", 0.1)
        mlflow.log_params({"optimizer": "adam", "epochs": 3})
        for step in range(5):
            mlflow.log_metric("acc", step / 10, step=step)
        mlflow.log_metrics({"loss": 0.25}, step=4)
        tracking.log_batch(
            run_id,
            metrics=[Metric("f1", 0.5 + i / 100, 1_700_000_000_000 + i, i) for i in range(3)],
            params=[Param("batch_size", "32")],
            tags=[RunTag("team", "vision")],
        )
        mlflow.set_tag("stage", "dev")
        mlflow.log_artifact(str(report), artifact_path="reports")
        mlflow.log_text("hello", "notes/hello.txt")
        mlflow.log_dict({"layers": [64, 10]}, "config.json")
        if importlib.util.find_spec("matplotlib") is not None:
            import matplotlib

            matplotlib.use("Agg")
            from matplotlib import pyplot as plt

            figure = plt.figure()
            plt.plot([1, 2, 3])
            mlflow.log_figure(figure, "plots/curve.png")
    # the run as mlflow sees it
    got = tracking.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.experiment_id == experiment.experiment_id
    assert got.info.run_name == "first"
    assert got.data.params == {"lr": "0.1", "optimizer": "adam", "epochs": "3", "batch_size": "32"}
    assert got.data.metrics["acc"] == pytest.approx(0.4) and got.data.metrics["f1"] == pytest.approx(0.52)
    assert got.data.tags["team"] == "vision" and got.data.tags["stage"] == "dev"
    history = tracking.get_metric_history(run_id, "acc")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    # ... and as aicloud sees it: the same run, params, metric series, experiment
    run = client.runs.get(run_id)
    assert run.status == "succeeded" and run.name == "first"
    assert run.params == {"lr": "0.1", "optimizer": "adam", "epochs": "3", "batch_size": "32"}
    assert client.runs.metrics(run_id, "acc")["acc"]["steps"] == [0, 1, 2, 3, 4]
    f1 = client.runs.metrics(run_id, "f1")["f1"]
    assert f1["timestamps"] == pytest.approx([1_700_000_000.0, 1_700_000_000.001, 1_700_000_000.002])
    shown = http.get(f"/api/v1/runs/{run_id}").json()
    assert shown["experiment"] == name and shown["tags"]["team"] == "vision"
    assert [r.id for r in client.runs.list(experiment=name)] == [run_id]
    assert run_id in cli(server, "run", "list", "--experiment", name).stdout
    # artifacts: listed and read back through mlflow, owned blobs on aicloud's side, never plaintext
    top = {(f.path, f.is_dir) for f in tracking.list_artifacts(run_id)}
    assert {("reports", True), ("notes", True), ("config.json", False)} <= top
    assert [f.path for f in tracking.list_artifacts(run_id, "notes")] == ["notes/hello.txt"]
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="reports/report.txt", dst_path=str(tmp_path / "dl")
    )
    assert Path(local).read_text() == secret_text
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/config.json") == {"layers": [64, 10]}
    listed = {a["path"]: a for a in http.get(f"/api/v1/runs/{run_id}/artifacts").json()}
    assert {"reports/report.txt", "notes/hello.txt", "config.json"} <= set(listed)
    blob = http.get(f"/api/v1/blobs/{listed['reports/report.txt']['digest']}")
    assert blob.status_code == 200 and blob.text == secret_text
    on_disk = [p for p in server.home.rglob("*") if p.is_file() and p.stat().st_size < 10_000_000]
    assert not any(secret_text.encode() in p.read_bytes() for p in on_disk if "log" not in p.name)


def test_search_runs_filters_orders_and_pages(tracking: MlflowClient, unique: Any) -> None:
    experiment_id = tracking.create_experiment(unique("search"), tags={"team": "a"})
    ids = []
    for i in range(5):
        run = tracking.create_run(
            experiment_id, run_name=f"r{i}", tags={"parity": "even" if i % 2 == 0 else "odd"}
        )
        tracking.log_batch(
            run.info.run_id,
            metrics=[Metric("acc", i / 10, 0, 0)],
            params=[Param("lr", "0.1" if i < 2 else "0.01")],
        )
        if i != 4:
            tracking.set_terminated(run.info.run_id, "FINISHED" if i != 3 else "FAILED")
        ids.append(run.info.run_id)

    def found(filter_string: str = "", **kw: Any) -> list[str]:
        return [r.info.run_id for r in tracking.search_runs([experiment_id], filter_string, **kw)]

    assert found("metrics.acc > 0.25") == [ids[4], ids[3]]  # newest first
    assert sorted(found("params.lr = '0.1'")) == sorted(ids[:2])
    assert sorted(found("tags.parity = 'even' and metrics.acc >= 0.2")) == sorted([ids[2], ids[4]])
    assert sorted(found("attributes.status = 'FINISHED'")) == sorted(ids[:3])
    assert found("attributes.status = 'RUNNING'") == [ids[4]]
    assert found("attributes.run_name = 'r1'") == [ids[1]]
    assert sorted(found("params.lr LIKE '0.0%'")) == sorted(ids[2:])
    assert found("", order_by=["metrics.acc ASC"]) == ids
    assert found("", order_by=["metrics.acc DESC"]) == ids[::-1]
    first = tracking.search_runs([experiment_id], "", order_by=["metrics.acc DESC"], max_results=2)
    assert [r.info.run_id for r in first] == [ids[4], ids[3]] and first.token
    second = tracking.search_runs(
        [experiment_id], "", order_by=["metrics.acc DESC"], max_results=2, page_token=first.token
    )
    third = tracking.search_runs(
        [experiment_id], "", order_by=["metrics.acc DESC"], max_results=2, page_token=second.token
    )
    assert [r.info.run_id for r in second] == [ids[2], ids[1]]
    assert [r.info.run_id for r in third] == [ids[0]] and not third.token
    frame = mlflow.search_runs(experiment_ids=[experiment_id], filter_string="metrics.acc < 0.15")
    assert sorted(frame["run_id"]) == sorted(ids[:2])
    assert set(frame["params.lr"]) == {"0.1"} and "metrics.acc" in frame.columns
    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE"):
        tracking.search_runs([experiment_id], "metrics.acc > 0.1 OR metrics.acc < 0")
    # experiments: by name and tag, deleted ones hidden unless asked
    by_tag = tracking.search_experiments(filter_string="tags.team = 'a'")
    assert experiment_id in [e.experiment_id for e in by_tag]
    tracking.delete_experiment(experiment_id)
    assert experiment_id not in [e.experiment_id for e in tracking.search_experiments()]
    assert tracking.get_experiment(experiment_id).lifecycle_stage == "deleted"
    tracking.restore_experiment(experiment_id)
    assert tracking.get_experiment(experiment_id).lifecycle_stage == "active"


def test_refusals_speak_mlflows_error_shape(
    tracking: MlflowClient, client: Client, server: ServerProcess, unique: Any
) -> None:
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60)
    assert mlflow.get_experiment_by_name(unique("missing")) is None
    _mlflow_error(
        http.get(f"{API}/experiments/get-by-name", params={"experiment_name": "nope"}),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    _mlflow_error(
        http.get(f"{API}/runs/get", params={"run_id": "run_doesnotexist"}), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    run_id = tracking.create_run("0").info.run_id
    tracking.log_param(run_id, "lr", "0.1")
    tracking.log_param(run_id, "lr", "0.1")  # the same value again is fine
    with pytest.raises(MlflowException) as changed:
        tracking.log_param(run_id, "lr", "0.2")
    assert changed.value.error_code == "INVALID_PARAMETER_VALUE"
    assert client.runs.get(run_id).params == {"lr": "0.1"}
    # non-finite values are kept as NaN
    tracking.log_metric(run_id, "loss", float("nan"), step=0)
    tracking.log_metric(run_id, "loss", float("inf"), step=1)
    tracking.log_metric(run_id, "loss", 0.5, step=2)
    values = [m.value for m in tracking.get_metric_history(run_id, "loss")]
    assert math.isnan(values[0]) and values[2] == 0.5
    # MLflow's batch limits
    too_many = [
        ("metrics", [{"key": "m", "value": 1.0, "timestamp": 0, "step": i} for i in range(1001)]),
        ("params", [{"key": f"p{i}", "value": "1"} for i in range(101)]),
        ("tags", [{"key": f"t{i}", "value": "1"} for i in range(101)]),
    ]
    for field, entries in too_many:
        response = http.post(f"{API}/runs/log-batch", json={"run_id": run_id, field: entries})
        assert "at most" in _mlflow_error(response, 400, "INVALID_PARAMETER_VALUE")
    assert client.runs.metrics(run_id, "m") == {}
    ok = http.post(f"{API}/runs/log-batch", json={"run_id": run_id, "metrics": too_many[0][1][:1000]})
    assert ok.status_code == 200, ok.text
    _mlflow_error(
        http.post(f"{API}/runs/log-metric", json={"run_id": run_id, "key": "../x", "value": 1}),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    _mlflow_error(http.post(f"{API}/runs/log-batch", content=b"{not json"), 400, "INVALID_PARAMETER_VALUE")
    bad_requests = [
        ("POST", "runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": "soon"}),
        ("POST", "runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": 1e300}),
        ("POST", "runs/update", {"run_id": run_id, "status": "DONE"}),
        ("GET", "metrics/get-history", {"run_id": run_id, "metric_key": "loss", "max_results": "many"}),
        ("GET", "metrics/get-history", {"run_id": run_id, "metric_key": "loss", "page_token": "junk"}),
        ("POST", "runs/search", {"experiment_ids": ["0"], "max_results": "lots"}),
        ("POST", "runs/search", {"experiment_ids": "0", "filter": "attributes.start_time > -1e300"}),
        ("POST", "runs/log-metric", {"run_id": run_id, "key": "x", "value": "high"}),
        ("POST", "runs/log-metric", {"run_id": run_id, "key": "x", "value": 1, "timestamp": 1e300}),
        ("POST", "experiments/search", {"filter": "tags.a = 1"}),
        ("POST", "experiments/create", {"name": ""}),
        ("POST", "runs/create", {"experiment_id": "../0"}),
    ]
    for method, route, fields in bad_requests:
        sent = http.request(
            method, f"{API}/{route}", **({"params": fields} if method == "GET" else {"json": fields})
        )
        _mlflow_error(sent, 400, "INVALID_PARAMETER_VALUE")
    # another workspace sees nothing of this one
    other = client.workspaces.create(unique("team"))
    theirs = {"Authorization": f"Bearer {other.admin_token.token}"}
    _mlflow_error(
        http.get(f"{API}/runs/get", params={"run_id": run_id}, headers=theirs), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    _mlflow_error(
        http.post(
            f"{API}/runs/log-metric",
            json={"run_id": run_id, "key": "x", "value": 1, "timestamp": 0},
            headers=theirs,
        ),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    _mlflow_error(
        http.get(f"{ARTIFACTS}/0/{run_id}/artifacts/a.txt", headers=theirs), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    # a viewer reads but does not write; no token is a 401
    viewer = {"Authorization": f"Bearer {client.tokens.create(unique('v'), role='viewer').token}"}
    assert http.get(f"{API}/runs/get", params={"run_id": run_id}, headers=viewer).status_code == 200
    _mlflow_error(
        http.post(f"{API}/runs/set-tag", json={"run_id": run_id, "key": "k", "value": "v"}, headers=viewer),
        403,
        "PERMISSION_DENIED",
    )
    _mlflow_error(
        http.post(f"{API}/experiments/create", json={"name": unique("v")}, headers=viewer),
        403,
        "PERMISSION_DENIED",
    )
    _mlflow_error(
        http.put(f"{ARTIFACTS}/0/{run_id}/artifacts/a.txt", content=b"x", headers=viewer),
        403,
        "PERMISSION_DENIED",
    )
    _mlflow_error(httpx.get(f"{server.url}{API}/runs/get", params={"run_id": run_id}), 401, "UNAUTHENTICATED")
    # the model registry stays aicloud's; unknown routes say so
    message = _mlflow_error(
        http.post(f"{API}/registered-models/create", json={"name": "m"}), 400, "FEATURE_DISABLED"
    )
    assert "save_model" in message
    with pytest.raises(MlflowException, match="aicloud keeps its own model registry"):
        tracking.create_registered_model(unique("m"))
    _mlflow_error(http.get("/mlflow/api/2.0/mlflow/no-such-thing"), 404, "ENDPOINT_NOT_FOUND")
    # names are text, whatever they hold
    script = "<script>alert(1)</script>[/]"
    experiment_id = tracking.create_experiment(f"{script}{unique('x')}")
    named = tracking.create_run(experiment_id, run_name=script, tags={"k": "[/]v"})
    assert client.runs.get(named.info.run_id).name == script
    shown = cli(server, "run", "show", named.info.run_id)  # Rich markup in names is text too
    assert script in shown.stdout and "experiment <script>" in shown.stdout and "[/]v" in shown.stdout
    tracking.log_param(named.info.run_id, "note", "[/]")
    listed = cli(server, "run", "list", "--name", "script", "-o", "table")  # such a name in a list
    assert "<script>" in listed.stdout, listed.stdout
    compared = cli(server, "run", "compare", named.info.run_id, run_id, "--all-params")  # and a compare
    assert "[/]" in compared.stdout and "<script>" in compared.stdout, compared.stdout
    assert tracking.get_experiment(experiment_id).name.startswith(script)
    _mlflow_error(
        http.post(f"{API}/experiments/create", json={"name": tracking.get_experiment(experiment_id).name}),
        400,
        "RESOURCE_ALREADY_EXISTS",
    )
    # artifact paths stay inside the run
    for bad in ("../../etc/passwd", "a/../../b", "a//b", "%2E%2E/x"):
        response = http.put(f"{ARTIFACTS}/0/{run_id}/artifacts/{bad}", content=b"x")
        _mlflow_error(response, 400, "INVALID_PARAMETER_VALUE")
    _mlflow_error(
        http.put(f"{ARTIFACTS}/0/{run_id}//etc/passwd", content=b"x"), 400, "INVALID_PARAMETER_VALUE"
    )
    with pytest.raises(MlflowException):
        mlflow.log_text("x", "../escape.txt", run_id=run_id)
    assert http.get(f"/api/v1/runs/{run_id}/artifacts").json() == []
    http.close()


def test_artifact_size_limit_and_replacement(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(env={"AICLOUD_MAX_UPLOAD_BYTES": "1000"})
    auth = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=60) as http:
        run_id = http.post(f"{API}/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]["run_id"]
        url = f"{ARTIFACTS}/0/{run_id}/artifacts/data/file.bin"
        _mlflow_error(http.put(url, content=b"x" * 5000), 413, "RESOURCE_LIMIT_EXCEEDED")
        assert http.put(url, content=b"first").status_code == 200
        assert http.put(url, content=b"second").status_code == 200  # replaced: the first blob is freed
        assert http.get(url).content == b"second"
        listed = http.get(f"/api/v1/runs/{run_id}/artifacts").json()
        assert [(a["path"], a["size"]) for a in listed] == [("data/file.bin", 6)]
        _mlflow_error(
            http.put(f"{ARTIFACTS}/0/{run_id}/artifacts/data", content=b"x"), 400, "RESOURCE_ALREADY_EXISTS"
        )
        assert http.delete(f"{ARTIFACTS}/0/{run_id}/artifacts/data").status_code == 200
        assert http.get(f"/api/v1/runs/{run_id}/artifacts").json() == []
        _mlflow_error(http.get(url), 404, "RESOURCE_DOES_NOT_EXIST")
    objects = server.home / "blobs" / "objects"
    assert not [p for p in objects.rglob("*") if p.is_file()]  # replaced, refused and deleted files are gone


JOB_SCRIPT = """
import os

import mlflow

mlflow.set_experiment(os.environ["EXPERIMENT"])
with mlflow.start_run(run_name="in-a-job") as run:
    mlflow.log_params({"alpha": "0.5", "rows": 100})
    for step in range(3):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.log_text("trained", "summary.txt")
print("MLFLOW_RUN", run.info.run_id, os.environ["MLFLOW_TRACKING_URI"])
"""


def test_an_mlflow_script_runs_unchanged_in_a_job(
    client: Client, http: httpx.Client, tmp_path: Path, unique: Any
) -> None:
    """The job gets MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN; its first MLflow run is the job's run."""
    script = tmp_path / "train_mlflow.py"
    script.write_text(JOB_SCRIPT)
    experiment = unique("job-exp")
    job = client.jobs.run(command="python train_mlflow.py", code=script, env={"EXPERIMENT": experiment})
    job.wait(timeout=240)
    logs = job.logs()
    assert job.status == "succeeded", logs[-3000:]
    line = next(line for line in logs.splitlines() if line.startswith("MLFLOW_RUN"))
    assert line.split()[1] == job.run_id and line.split()[2].endswith("/mlflow")
    run = client.runs.get(job.run_id or "")
    assert run.status == "succeeded" and run.name == "in-a-job"
    assert run.params["alpha"] == "0.5" and run.params["rows"] == "100"
    assert client.runs.metrics(run.id, "loss")["loss"]["steps"] == [0, 1, 2]
    assert http.get(f"/api/v1/runs/{run.id}").json()["experiment"] == experiment
    assert [a["path"] for a in http.get(f"/api/v1/runs/{run.id}/artifacts").json()] == ["summary.txt"]


@pytest.mark.postgres
def test_the_tracking_api_on_postgresql(
    make_server: Callable[..., ServerProcess],
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The same client calls against a control plane on PostgreSQL (JSON paths and casts differ there)."""
    server = make_server(env={"AICLOUD_DATABASE_URL": pg_database})
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", server.token)
    _reset_mlflow()
    mlflow.set_tracking_uri(f"{server.url}/mlflow")
    try:
        experiment = mlflow.set_experiment("on postgres")
        for i in range(3):
            with mlflow.start_run(run_name=f"r{i}"):
                mlflow.log_params({"lr": 0.1 * (i + 1), "opt": "Adam" if i else "sgd"})
                mlflow.log_metrics({"val acc": i / 10, "loss": 1 - i / 10}, step=i)
                mlflow.set_tag("fold", str(i))
                mlflow.log_text(f"run {i}", "out/summary.txt")
        tracking = MlflowClient()

        def names(filter_string: str, order: list[str] | None = None) -> list[str]:
            runs = tracking.search_runs([experiment.experiment_id], filter_string, order_by=order)
            return [r.info.run_name for r in runs]

        assert names("metrics.`val acc` >= 0.1", ["metrics.loss ASC"]) == ["r2", "r1"]
        assert names("params.opt LIKE 'a%'") == [] and names("params.opt ILIKE 'a%'") == ["r2", "r1"]
        assert names("params.lr = '0.1' and tags.fold IN ('0', '1')") == ["r0"]
        assert names("attributes.status = 'FINISHED'", ["attributes.run_name DESC"]) == ["r2", "r1", "r0"]
        run_id = tracking.search_runs([experiment.experiment_id], "tags.fold = '1'")[0].info.run_id
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="out", dst_path=str(tmp_path)
        )
        assert (Path(local) / "summary.txt").read_text() == "run 1"
    finally:
        _reset_mlflow()
        mlflow.set_tracking_uri(None)


EXAMPLE = Path(__file__).parents[2] / "examples" / "mlflow_train.py"


def test_the_mlflow_example_runs_unchanged_outside_and_inside_a_job(
    server: ServerProcess, client: Client, http: httpx.Client, tmp_path: Path
) -> None:
    """examples/mlflow_train.py (scikit-learn, plain MLflow calls): from a shell with the two MLflow
    variables, then as a command job with nothing set; both runs land in aicloud's runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AICLOUD_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=f"{server.url}/mlflow", MLFLOW_TRACKING_TOKEN=server.token)
    outside = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert outside.returncode == 0, outside.stdout + outside.stderr
    notebook_run = outside.stdout.split("run ", 1)[1].split(":", 1)[0]
    job = client.jobs.run(command="python mlflow_train.py", code=EXAMPLE).wait(timeout=300)
    assert job.status == "succeeded", job.logs()[-3000:]
    for run_id, job_id in ((notebook_run, None), (job.run_id or "", job.id)):
        run = client.runs.get(run_id)
        assert run.job_id == job_id and run.status == "succeeded" and run.name == "logistic-regression"
        assert run.params["C"] == "1.0" and run.summary["val_accuracy"] > 0.9
        assert client.runs.metrics(run_id, "val_accuracy")["val_accuracy"]["steps"] == [0, 1, 2, 3]
        shown = http.get(f"/api/v1/runs/{run_id}").json()
        assert shown["experiment"] == "digits-sklearn" and shown["tags"]["model"] == "LogisticRegression"
        files = [a["path"] for a in http.get(f"/api/v1/runs/{run_id}/artifacts").json()]
        assert files == ["confusion_matrix.txt", "report.json"]

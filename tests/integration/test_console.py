"""The web console in a real browser (Chromium through Playwright) against a real control plane:
sign in and out, start a job and watch its chart grow, compare runs. Screenshots of every page go
to ``<pytest basetemp>/console-screenshots``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicloud import Client
from aicloud.client._specs import pack_code
from aicloud.testing.server import ServerProcess

from browser import Console, chromium, screenshots_dir
from helpers import small_csv

SLOW_SCRIPT = """
import time
from aicloud.training import log_metric, log_params
log_params({"lr": 0.01, "layers": 2})
for step in range(40):
    log_metric("loss", 1.0 / (step + 1), step=step)
    log_metric("accuracy", step / 40, step=step)
    print("step", step, flush=True)
    time.sleep(0.25)
print("done")
"""


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("console-home")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshots_dir(tmp_path_factory)


@pytest.fixture
def console(browser: Any, console_server: ServerProcess, shots: Path) -> Iterator[Console]:
    tab = Console(browser, console_server.url, shots)
    tab.sign_in(console_server.token)
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def sdk(console_server: ServerProcess) -> Iterator[Client]:
    with Client(url=console_server.url, token=console_server.token) as c:
        yield c


@pytest.fixture(scope="module")
def api(console_server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {console_server.token}"}
    with httpx.Client(base_url=console_server.url, headers=headers, timeout=60) as c:
        yield c


def _points(page: Any) -> int:
    return int(page.get_attribute("#points", "data-points") or 0)


def test_sign_in_keeps_the_token_out_of_scripts_and_sign_out_ends_it(
    browser: Any, console_server: ServerProcess, shots: Path
) -> None:
    tab = Console(browser, console_server.url, shots)
    page = tab.go("/runs")
    page.wait_for_url(re.compile(r"/signin\?next=%2Fruns"))
    tab.shot("signin")
    page.fill("input[name=token]", "aic_not_a_token")
    page.click("button[type=submit]")
    assert "not an aicloud token" in page.inner_text(".flash.err")
    page.fill("input[name=token]", console_server.token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/runs$"))  # back where the user was going
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads the token
    cookie = next(c for c in tab.context.cookies() if c["name"] == "aicloud_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    tab.go("/")
    assert page.inner_text("h1") == "Overview"
    tab.shot("overview")
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r"/signin$"))
    assert not [c for c in tab.context.cookies() if c["name"] == "aicloud_console"]
    tab.go("/jobs")
    page.wait_for_url(re.compile(r"/signin\?next=%2Fjobs"))
    tab.close()


@pytest.mark.timeout(900)  # training, replicas and trials on a loaded machine
def test_start_a_job_and_watch_its_chart_grow(console: Console, sdk: Client) -> None:
    code = sdk.blobs.upload(pack_code(_script_dir(console.shots.parent)), "application/gzip")
    body = {"kind": "command", "name": "console-live", "spec": {"command": "python train.py", "code": code}}
    page = console.go("/jobs")
    page.click("#new-job summary")
    page.fill("textarea[name=body]", json.dumps(body))
    console.shot("jobs-submit")
    page.click("#new-job button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/job_[a-z0-9]+$"))
    page.wait_for_function("() => Number(document.querySelector('#points').dataset.points || 0) > 0")
    first = _points(page)
    page.wait_for_function(
        "(n) => Number(document.querySelector('#points').dataset.points || 0) > n", arg=first
    )
    assert page.locator(".chart[data-metric=loss] canvas").count() == 1
    console.shot("job-live")
    page.wait_for_function("() => document.querySelector('#job-live').dataset.ended === '1'", timeout=180_000)
    assert page.inner_text("#job-status") == "succeeded"
    # every point of the script's metrics, each sent once (the job's system metrics come too)
    assert page.get_attribute(".chart[data-metric=loss]", "data-points") == "40"
    assert page.get_attribute(".chart[data-metric=accuracy]", "data-points") == "40"
    assert "done" in page.inner_text("#log")
    assert re.fullmatch(r"\d+m\d\ds", page.inner_text("#job-duration"))  # filled in live
    console.shot("job-done")
    page = console.go("/jobs")
    assert "console-live" in page.inner_text("table.list")
    console.shot("jobs")


def test_cancel_a_running_job(console: Console, sdk: Client, tmp_path: Path) -> None:
    (tmp_path / "wait.py").write_text("import time\nprint('waiting', flush=True)\ntime.sleep(300)\n")
    code = sdk.blobs.upload(pack_code(tmp_path), "application/gzip")
    body = {"kind": "command", "name": "console-cancel", "spec": {"command": "python wait.py", "code": code}}
    page = console.go("/jobs")
    page.click("#new-job summary")
    page.fill("textarea[name=body]", json.dumps(body))
    page.click("#new-job button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/job_[a-z0-9]+$"))
    page.wait_for_function("() => document.querySelector('#log').textContent.includes('waiting')")
    page.click("#cancel-form button")
    page.wait_for_url(re.compile(r"/jobs/job_[a-z0-9]+$"))
    page.wait_for_function("() => document.querySelector('#job-live').dataset.ended === '1'", timeout=120_000)
    assert page.inner_text("#job-status") == "cancelled"
    assert page.locator("#cancel-form").count() == 0


def _script_dir(base: Path) -> Path:
    folder = base / "console-code"
    folder.mkdir(exist_ok=True)
    (folder / "train.py").write_text(SLOW_SCRIPT)
    return folder


def _logged_run(api: httpx.Client, name: str, lr: float, steps: int = 30) -> str:
    run = api.post("/api/v1/runs", json={"name": name, "params": {"lr": lr, "optimizer": "adam"}}).json()
    points = [
        {"name": "loss", "step": s, "value": lr * 100 / (s + 1), "timestamp": time.time()}
        for s in range(steps)
    ]
    api.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": points}).raise_for_status()
    api.post(f"/api/v1/runs/{run['id']}/finish", json={"status": "succeeded"}).raise_for_status()
    return str(run["id"])


def test_pick_columns_and_compare_two_runs(console: Console, api: httpx.Client) -> None:
    a = _logged_run(api, "cmp-a", 0.1)
    b = _logged_run(api, "cmp-b", 0.3)
    page = console.go("/runs?m=loss&p=lr&sort=params.lr&order=asc")
    header = page.inner_text("table.runs tr >> nth=0")
    assert "lr" in header and "loss" in header
    console.shot("runs")
    page.check(f"input.pick[value={a}]")
    assert page.is_disabled("#compare-btn")  # two at least
    page.check(f"input.pick[value={b}]")
    page.click("#compare-btn")
    page.wait_for_url(re.compile(r"/runs/compare\?"))
    assert page.locator(".chart canvas").count() == 1  # one metric, two curves in it
    legend = page.inner_text(".chart .u-legend")
    assert "cmp-a" in legend and "cmp-b" in legend
    row = page.locator("#params-diff tr.differs")
    assert row.count() == 1 and "lr" in row.inner_text()
    console.shot("compare")
    page = console.go(f"/runs/{a}")
    assert page.locator(".chart canvas").count() == 1
    console.shot("run")


def _register_second_version(api: httpx.Client, model: str) -> int:
    """The same artifact registered again: a second version to move an alias to, without training."""
    first = api.get(f"/api/v1/models/{model}/versions/1").json()
    body = {key: first[key] for key in ("files", "signature", "config", "metrics")}
    body["run_id"] = first["lineage"]["run_id"]  # the same lineage too
    r = api.post(f"/api/v1/models/{model}/versions", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["version"])


@pytest.mark.timeout(900)  # training, replicas and trials on a loaded machine
def test_upload_train_move_an_alias_deploy_and_call_the_endpoint(
    console: Console, sdk: Client, api: httpx.Client, tmp_path: Path
) -> None:
    # upload a dataset in the browser, with its progress bar
    page = console.go("/datasets")
    page.fill("#upload-form input[name=name]", "console-data")
    page.set_input_files("#upload-form input[type=file]", str(small_csv(tmp_path / "data.csv", rows=120)))
    console.shot("datasets-upload")
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(re.compile(r"/datasets/console-data\?version=1$"))
    schema = page.inner_text("#schema")
    assert "label" in schema and "x" in schema and "120" in page.inner_text("dl.facts")
    assert page.locator("#schema .hist").count() == 3  # a histogram per numeric column
    page.wait_for_selector("#preview-table")  # the first rows, read by a parser worker
    assert page.locator("#preview-table tr").count() == 1 + 20
    console.shot("dataset")

    # a model trained on it (by the SDK: the job's own page is tested above)
    train, test = sdk.datasets.get("console-data").split(train_size=0.75, seed=0, stratify="label")
    job = sdk.jobs.train(
        task="tabular-classification",
        dataset=train,
        eval_dataset=test,
        target="label",
        params={"epochs": 2},
        model_name="console-model",
    )
    job.wait(timeout=240)
    assert job.status == "succeeded", job.logs()[-2000:]
    assert _register_second_version(api, "console-model") == 2

    # its lineage, and an alias moved with the form
    page = console.go("/models/console-model?version=1")
    lineage = page.inner_text("#lineage")
    assert "console-data-train" in lineage and job.name in lineage and "console-model:1" in lineage
    page.fill("#alias-form input[name=alias]", "production")
    page.select_option("#alias-form select[name=version]", "1")
    page.click("#alias-form button[type=submit]")
    page.wait_for_url(re.compile(r"version=1$"))
    page.fill("#alias-form input[name=alias]", "production")
    page.select_option("#alias-form select[name=version]", "2")
    page.click("#alias-form button[type=submit]")
    page.wait_for_url(re.compile(r"version=2$"))
    assert api.get("/api/v1/models/console-model/aliases/production").json()["version"] == 2

    # deploy the alias and wait for a ready replica
    page.fill("#deploy-form input[name=deployment]", "console-endpoint")
    page.select_option("#deploy-form select[name=ref]", "production")
    page.click("#deploy-form button[type=submit]")
    page.wait_for_url(re.compile(r"/deployments/console-endpoint$"))
    deadline = time.monotonic() + 240
    while "ready" not in page.inner_text("#deployment-status"):
        assert time.monotonic() < deadline, "the deployment did not become ready"
        assert "failed" not in page.inner_text("#deployment-status"), page.inner_text("main")
        time.sleep(1)
        page.reload()
    assert "console-model:2" in page.inner_text("dl.facts")

    # the playground calls the endpoint and shows the same request as curl and Python
    page.fill("#playground textarea[name=body]", json.dumps({"inputs": [[1, 0.5]]}))
    page.click("#playground button[type=submit]")
    page.wait_for_selector("#playground-status")
    assert page.inner_text("#playground-status") == "200", page.inner_text("#playground-out")
    assert "outputs" in page.inner_text("#playground-answer")
    curl = page.inner_text("#playground-curl")
    assert "/v1/endpoints/console-endpoint/predict" in curl and "[[1, 0.5]]" in curl
    assert "httpx.post(" in page.inner_text("#playground-python")
    # the traffic table (polled by htmx) counts that request; the rate chart gets a sample per poll
    requests = "document.querySelector('#traffic-table td:nth-child(4)')?.textContent || '0'"
    page.wait_for_function(f"() => Number({requests}) >= 1")
    page.wait_for_function("() => Number(document.querySelector('#traffic-rate').dataset.samples || 0) >= 2")
    console.shot("deployment")
    console.go("/deployments")
    console.shot("deployments")
    console.go("/models")
    console.shot("models")
    page = console.go("/models/console-model?version=2")
    assert "console-endpoint" in page.inner_text("#lineage")  # the deployment that serves it
    console.shot("model")


@pytest.mark.timeout(900)  # training, replicas and trials on a loaded machine
def test_a_sweeps_trials_and_scatter(console: Console, sdk: Client, tmp_path: Path) -> None:
    data = sdk.datasets.create("console-sweep-data", small_csv(tmp_path / "s.csv", rows=120))
    train, test = data.split(train_size=0.75, seed=0, stratify="label")
    sweep = sdk.jobs.sweep(
        {"lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-1}},
        task="tabular-classification",
        dataset=train,
        eval_dataset=test,
        target="label",
        params={"epochs": 2},
        name="console-sweep",
        max_trials=3,
        parallelism=2,
        sampler="random",
        seed=0,
        pruner="none",
    )
    sweep.wait(timeout=400)
    assert sweep.status == "succeeded", sweep.trials().model_dump()
    page = console.go("/sweeps")
    page.click("text=console-sweep")
    page.wait_for_url(re.compile(rf"/sweeps/{sweep.id}$"))
    assert page.locator("table.list tr").count() == 1 + 3  # a row per trial
    assert page.locator("[data-chart=sweep-scatter] canvas").count() == 1
    assert page.locator("[data-chart=sweep-curves] canvas").count() == 1
    console.shot("sweep")
    console.go("/sweeps")
    console.shot("sweeps")


MLFLOW_SCRIPT = """
import mlflow
mlflow.set_experiment("console-mlflow")
with mlflow.start_run(run_name="mlflow-run"):
    mlflow.log_param("lr", 0.1)
    for step in range(20):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
"""


def test_a_run_logged_by_an_unchanged_mlflow_script_shows_in_the_console(
    console: Console, console_server: ServerProcess, tmp_path: Path
) -> None:
    pytest.importorskip("mlflow", reason="pip install 'aicloud[test]' (mlflow-skinny)")
    script = tmp_path / "track.py"
    script.write_text(MLFLOW_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AICLOUD_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=f"{console_server.url}/mlflow", MLFLOW_TRACKING_TOKEN=console_server.token)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    page = console.go("/runs?name=mlflow-run&m=loss&p=lr")
    row = page.locator("table.runs tr", has_text="mlflow-run")
    assert row.count() == 1 and "console-mlflow" in row.inner_text()
    console.shot("runs-mlflow")
    row.locator("a", has_text="mlflow-run").click()
    page.wait_for_url(re.compile(r"/runs/run_[a-z0-9]+$"))
    assert "console-mlflow" in page.inner_text("dl.facts")
    assert page.locator(".chart canvas").count() == 1


def test_admin_creates_and_revokes_a_token_and_adds_a_secret(console: Console) -> None:
    page = console.go("/admin/tokens")
    page.fill("#token-form input[name=name]", "console-made")
    page.select_option("#token-form select[name=role]", "viewer")
    page.click("#token-form button[type=submit]")
    shown = page.inner_text("#new-token pre")
    assert shown.startswith("aic_tok_")  # shown once, on the page that made it
    console.shot("admin-token-created")
    page = console.go("/admin/tokens")
    assert shown not in page.content()
    row = page.locator("tr", has_text="console-made")
    row.locator("button", has_text="Revoke").click()
    page.wait_for_load_state()
    assert page.locator("tr", has_text="console-made").count() == 0
    page = console.go("/admin/secrets")
    page.fill("form.card input[name=name]", "CONSOLE_SECRET")
    page.fill("form.card input[name=value]", "never-shown-value")
    page.click("form.card button[type=submit]")
    page.wait_for_url(re.compile(r"/admin/secrets$"))
    assert "CONSOLE_SECRET" in page.inner_text("table.list")
    assert "never-shown-value" not in page.content()
    console.shot("admin-secrets")


@pytest.mark.parametrize(
    "path",
    ["/", "/usage", "/usage?by=job", "/sweeps", "/admin/tokens", "/admin/workspaces", "/admin/secrets"],
)
def test_every_page_renders(console: Console, path: str) -> None:
    page = console.go(path)
    assert page.locator("main h1").count() == 1
    name = path.strip("/").replace("/", "-").replace("?by=", "-") or "overview"
    console.shot(f"page-{name}")

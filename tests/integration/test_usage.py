"""Usage and cost: the store query on every backend, then real jobs on a real server with prices."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from test_cli import run_cli

from aicloud import Client
from aicloud.entities import JobKind, JobStatus
from aicloud.entities.usage import GIB
from aicloud.store import open_store
from aicloud.store.training import JobStore
from aicloud.testing.server import ServerProcess
from aicloud.testing.stores import InMemoryJobStore

from helpers import assert_error
from store_fixtures import postgres_url_fixture, sqlite_url_fixture  # noqa: F401  (fixtures)

# --- JobStore.finished_between on SQLite, PostgreSQL and the in-memory fake -----------------


@dataclass
class Jobs:
    store: JobStore
    workspace: Callable[[str], str]


@pytest.fixture(
    name="jobs", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "memory"]
)
def jobs_fixture(request: pytest.FixtureRequest) -> Iterator[Jobs]:
    if request.param == "memory":
        yield Jobs(InMemoryJobStore(), lambda name: f"ws_{name}")
        return
    url = str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))
    store = open_store(url)
    try:
        yield Jobs(store.jobs, lambda name: store.workspaces.create(name).id)
    finally:
        store.close()


def test_finished_between(jobs: Jobs) -> None:
    ws, other = jobs.workspace("alpha"), jobs.workspace("beta")
    t0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)

    def ended(workspace: str, name: str, at: datetime | None, status: JobStatus = JobStatus.SUCCEEDED) -> str:
        job = jobs.store.create(workspace_id=workspace, name=name, kind=JobKind.COMMAND, spec={})
        if at is not None:
            jobs.store.transition(job.id, expect=[JobStatus.PENDING], status=JobStatus.RUNNING)
            jobs.store.transition(
                job.id, expect=[JobStatus.RUNNING], status=status, finished_at=at, usage={"cost": 1.5}
            )
        return job.id

    late = ended(ws, "late", t0 + timedelta(days=1))
    early = ended(ws, "early", t0 - timedelta(seconds=1), JobStatus.FAILED)
    edge = ended(ws, "edge", t0)
    ended(ws, "running", None)
    ended(other, "elsewhere", t0)

    everything = jobs.store.finished_between(ws)
    assert [j.id for j in everything] == [early, edge, late]  # oldest end first, only ended jobs
    assert everything[0].status is JobStatus.FAILED and everything[0].usage == {"cost": 1.5}
    assert [j.id for j in jobs.store.finished_between(ws, since=t0)] == [edge, late]  # since: inclusive
    assert [j.id for j in jobs.store.finished_between(ws, until=t0)] == [early]  # until: exclusive
    in_day = jobs.store.finished_between(ws, t0, t0 + timedelta(days=1))
    assert [j.id for j in in_day] == [edge]
    berlin = t0.astimezone(datetime.now().astimezone().tzinfo)  # any zone: compared as instants
    assert [j.id for j in jobs.store.finished_between(ws, since=berlin)] == [edge, late]
    assert jobs.store.finished_between(ws, t0 + timedelta(days=2)) == []
    assert len(jobs.store.finished_between(other)) == 1


# --- through a real server -----------------------------------------------------------------

PRICES = {"cpu_hour": 3.6, "gpu_hour": 40.0, "gb_hour": 1.8}
BURN = 'python -c "import time; t = time.time()\nwhile time.time() - t < 0.6: pass"'


@dataclass
class Priced:
    server: ServerProcess
    bob_token: str
    viewer_token: str
    jobs: dict[str, str]  # who → job id


@pytest.fixture(scope="module")
def priced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Priced]:
    """A server with prices, and one finished job each from the admin and from ``bob`` (2 cpus)."""
    env = {
        "AICLOUD_PRICE_CPU_HOUR": str(PRICES["cpu_hour"]),
        "AICLOUD_PRICE_GPU_HOUR": str(PRICES["gpu_hour"]),
        "AICLOUD_PRICE_GB_HOUR": str(PRICES["gb_hour"]),
        "AICLOUD_CURRENCY": "EUR",
    }
    server = ServerProcess(tmp_path_factory.mktemp("usage-home"), env=env).start()
    try:
        with Client(url=server.url, token=server.token) as admin:
            bob = admin.tokens.create("bob", role="member").token
            viewer = admin.tokens.create("auditor", role="viewer").token
            mine = admin.jobs.run(command=BURN, name="admin-burn")
            with Client(url=server.url, token=bob) as as_bob:
                theirs = as_bob.jobs.run(command=BURN, name="bob-burn", cpus=2)
                for job in (mine, theirs):
                    job.wait(timeout=120)
                    assert job.status == "succeeded", job.logs()
        yield Priced(server, bob, viewer, {"admin": mine.id, "bob": theirs.id})
    finally:
        server.stop()


@pytest.fixture
def http(priced: Priced) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {priced.server.token}"}
    with httpx.Client(base_url=priced.server.url, headers=headers, timeout=60) as c:
        yield c


def _usage(priced: Priced, job_id: str) -> dict[str, float]:
    with Client(url=priced.server.url, token=priced.server.token) as c:
        return c.jobs.get(job_id).info.usage


def test_each_job_records_its_cost(priced: Priced) -> None:
    for who, cpus in (("admin", 1), ("bob", 2)):
        usage = _usage(priced, priced.jobs[who])
        wall_h = usage["wall_seconds"] / 3600
        assert usage["wall_seconds"] >= 0.6 and usage["cpu_seconds"] > 0.3 and usage["peak_rss_bytes"] > 0
        assert usage["cpu_hours"] == pytest.approx(cpus * wall_h, abs=1e-9)
        assert usage["gpu_hours"] == 0.0
        assert usage["gb_hours"] == pytest.approx(usage["peak_rss_bytes"] / GIB * wall_h, abs=1e-9)
        expected = cpus * wall_h * PRICES["cpu_hour"] + usage["gb_hours"] * PRICES["gb_hour"]
        assert usage["cost"] == pytest.approx(expected, abs=1e-8) and usage["cost"] > 0
        assert usage["currency"] == "EUR" and usage["prices"] == PRICES


def test_usage_by_user_job_and_day(priced: Priced, http: httpx.Client) -> None:
    admin, bob = (_usage(priced, priced.jobs[who]) for who in ("admin", "bob"))

    by_user = http.get("/api/v1/usage", params={"by": "user"}).json()
    rows = {r["label"]: r for r in by_user["rows"]}
    assert set(rows) == {"bootstrap-admin", "bob"} and by_user["currency"] == "EUR"
    for label, usage in (("bootstrap-admin", admin), ("bob", bob)):
        row = rows[label]
        assert row["jobs"] == 1 and row["currency"] == "EUR"
        for key in ("cost", "cpu_hours", "gb_hours", "wall_seconds", "cpu_seconds"):
            assert row[key] == pytest.approx(usage[key], abs=1e-6), key
    total = by_user["total"]
    assert total["jobs"] == 2 and total["key"] == "total"
    assert total["cost"] == pytest.approx(admin["cost"] + bob["cost"], abs=1e-8)
    assert total["cpu_hours"] == pytest.approx(admin["cpu_hours"] + bob["cpu_hours"], abs=1e-8)

    by_job = http.get("/api/v1/usage", params={"by": "job"}).json()
    assert {r["key"] for r in by_job["rows"]} == set(priced.jobs.values())
    job_row = next(r for r in by_job["rows"] if r["key"] == priced.jobs["bob"])
    assert job_row["label"] == "bob-burn" and job_row["user"] == "bob" and job_row["status"] == "succeeded"
    assert job_row["cost"] == pytest.approx(bob["cost"], abs=1e-9) and job_row["kind"] == "command"
    assert by_job["total"]["cost"] == pytest.approx(total["cost"], abs=1e-8)

    today = datetime.now(UTC).date()
    by_day = http.get("/api/v1/usage", params={"by": "day", "since": today.isoformat()}).json()
    if len(by_day["rows"]) == 1:  # (not when the jobs straddled midnight UTC)
        assert by_day["rows"][0]["key"] == today.isoformat() and by_day["rows"][0]["jobs"] == 2
    assert by_day["total"]["cost"] == pytest.approx(total["cost"], abs=1e-8)
    assert by_day["since"].startswith(today.isoformat())


def test_the_time_range_filters_by_end(priced: Priced, http: httpx.Client) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    past = http.get("/api/v1/usage", params={"until": yesterday}).json()
    assert past["rows"] == [] and past["total"]["jobs"] == 0 and past["total"]["cost"] == 0.0
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert http.get("/api/v1/usage", params={"since": tomorrow}).json()["total"]["jobs"] == 0
    window = {"since": (datetime.now(UTC) - timedelta(hours=1)).isoformat(), "until": tomorrow}
    assert http.get("/api/v1/usage", params=window).json()["total"]["jobs"] == 2


def test_sdk_viewer_and_other_workspaces(priced: Priced) -> None:
    with Client(url=priced.server.url, token=priced.viewer_token) as viewer:
        report = viewer.usage(by="user", since=datetime.now(UTC).date() - timedelta(days=1))
        assert report.total.jobs == 2 and {r.label for r in report.rows} == {"bootstrap-admin", "bob"}
    with Client(url=priced.server.url, token=priced.server.token) as admin:
        other = admin.workspaces.create("usage-elsewhere")
    with Client(url=priced.server.url, token=other.admin_token.token) as elsewhere:
        assert elsewhere.usage().total.jobs == 0  # workspace-scoped


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"by": "week"}, "by"),
        ({"since": "last tuesday"}, "since"),
        ({"until": "2030-02-30"}, "until"),
        ({"since": "2030-06-02", "until": "2030-06-01"}, "until"),
    ],
)
def test_bad_input_is_422(http: httpx.Client, params: dict[str, str], field: str) -> None:
    err = assert_error(http.get("/api/v1/usage", params=params), 422, "validation_error")
    assert err["details"][0]["field"] == field


def test_usage_needs_a_token(priced: Priced) -> None:
    assert_error(httpx.get(f"{priced.server.url}/api/v1/usage"), 401, "unauthenticated")


def test_cli_usage(priced: Priced, tmp_path: Path) -> None:
    out = run_cli(priced.server, "usage", "--by", "user").stdout
    assert "bootstrap-admin" in out and "bob" in out and "total" in out and "EUR" in out
    assert "cpu-hours" in out and "GB-hours" in out
    shown = json.loads(run_cli(priced.server, "usage", "--by", "day", "-o", "json").stdout)
    assert shown["by"] == "day" and shown["total"]["jobs"] == 2
    by_job = run_cli(priced.server, "usage", "--since", "2000-01-01", "--until", "2100-01-01").stdout
    assert "admin-burn" in by_job and "bob-burn" in by_job
    bad = run_cli(priced.server, "usage", "--since", "soon", check=False)
    assert bad.returncode == 1 and "since" in bad.stderr and "Traceback" not in bad.stderr
    week = run_cli(priced.server, "usage", "--by", "week", check=False)
    assert week.returncode != 0 and "Traceback" not in week.stderr
    job = run_cli(priced.server, "job", "show", priced.jobs["bob"]).stdout
    assert "cost" in job and "EUR" in job

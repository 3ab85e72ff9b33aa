"""The web console against hostile input and stolen requests, over plain HTTP (no browser): names
that are markup render as text, a form without its CSRF token or from a viewer is refused, a
revoked token signs the user out, another workspace's objects are 404 pages, and the cookie is
HttpOnly and SameSite=Strict."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from aicloud.testing.server import ServerProcess

XSS = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("console-security")).start()
    yield proc
    proc.stop()


def _api(server: ServerProcess, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token or server.token}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


@contextmanager
def _signed_in(server: ServerProcess, token: str | None = None) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as browser:
        r = browser.post("/signin", data={"token": token or server.token, "next": "/"})
        assert r.status_code == 303, r.text
        yield browser


def _csrf(browser: httpx.Client) -> str:
    match = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', browser.get("/").text)
    assert match, "the layout carries the session's CSRF token"
    return match.group(1)


def _token(server: ServerProcess, name: str, role: str) -> tuple[str, str]:
    with _api(server) as api:
        r = api.post("/api/v1/tokens", json={"name": name, "role": role})
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["token"]


def test_markup_in_names_renders_as_text(console_server: ServerProcess, tmp_path: Path) -> None:
    """A job, a run, a param and a dataset column named like a script: the pages show the text."""
    csv = tmp_path / "xss.csv"
    csv.write_text(f'"{XSS}",label\n1,0\n2,1\n')
    with _api(console_server) as api:
        with csv.open("rb") as f:
            r = api.post("/api/v1/datasets/xss-data/versions", files={"file": ("xss.csv", f)})
        assert r.status_code == 201, r.text
        run = api.post("/api/v1/runs", json={"name": XSS, "params": {XSS: XSS}}).json()
        job = api.post("/api/v1/jobs", json={"kind": "command", "name": XSS, "spec": {"command": "true"}})
    pages = ["/datasets/xss-data", f"/runs/{run['id']}", "/runs", f"/runs?p={XSS}"]
    if job.status_code == 201:  # a job name may be refused by the API; if taken, it is text
        pages += [f"/jobs/{job.json()['id']}", "/jobs"]
    with _signed_in(console_server) as browser:
        for path in pages:
            r = browser.get(path)
            assert r.status_code in (200, 422), (path, r.status_code)
            assert XSS not in r.text, f"{path} put the name into the page as markup"
            assert ESCAPED in r.text or path.startswith("/runs?p="), path


def test_markup_logged_through_the_mlflow_api_renders_as_text(console_server: ServerProcess) -> None:
    """An experiment, a run, a param and a metric value sent by an MLflow client land in the console
    as text."""
    with _api(console_server) as api:
        r = api.post("/mlflow/api/2.0/mlflow/experiments/create", json={"name": XSS})
        assert r.status_code == 200, r.text
        experiment = r.json()["experiment_id"]
        r = api.post(
            "/mlflow/api/2.0/mlflow/runs/create", json={"experiment_id": experiment, "run_name": XSS}
        )
        assert r.status_code == 200, r.text
        run_id = r.json()["run"]["info"]["run_id"]
        r = api.post(
            "/mlflow/api/2.0/mlflow/runs/log-parameter", json={"run_id": run_id, "key": "note", "value": XSS}
        )
        assert r.status_code == 200, r.text
    with _signed_in(console_server) as browser:
        for path in [f"/runs/{run_id}", "/runs?p=note"]:
            r = browser.get(path)
            assert r.status_code == 200, (path, r.text[:500])
            assert XSS not in r.text and ESCAPED in r.text, path


def test_a_form_without_its_csrf_token_is_refused(console_server: ServerProcess) -> None:
    with _signed_in(console_server) as browser:
        body = '{"kind": "command", "spec": {"command": "true"}}'
        r = browser.post("/jobs", data={"body": body})
        assert r.status_code == 403 and "CSRF" in r.text
        r = browser.post("/jobs", data={"body": body, "csrf": "0" * 64})
        assert r.status_code == 403
        r = browser.post("/jobs", data={"body": body}, headers={"X-CSRF-Token": "nope"})
        assert r.status_code == 403
        # the real token works (the job is queued: a redirect to its page)
        r = browser.post("/jobs", data={"body": body, "csrf": _csrf(browser)})
        assert r.status_code == 303 and r.headers["location"].startswith("/jobs/job_")
        # another session's CSRF token is not this session's
        _, other = _token(console_server, "csrf-other", "admin")
        with _signed_in(console_server, other) as second:
            r = second.post("/jobs", data={"body": body, "csrf": _csrf(browser)})
            assert r.status_code == 403


def test_a_viewer_sees_but_cannot_change(console_server: ServerProcess) -> None:
    _, token = _token(console_server, "console-viewer", "viewer")
    with _signed_in(console_server, token) as viewer:
        assert viewer.get("/jobs").status_code == 200
        assert 'id="new-job"' not in viewer.get("/jobs").text  # no submit form offered
        r = viewer.post("/jobs", data={"body": "{}", "csrf": _csrf(viewer)})
        assert r.status_code == 403 and "member role" in r.text
        assert viewer.get("/admin/tokens").status_code == 403


def test_a_revoked_token_signs_the_user_out(console_server: ServerProcess) -> None:
    token_id, token = _token(console_server, "console-revoked", "member")
    with _signed_in(console_server, token) as browser:
        assert browser.get("/runs").status_code == 200
        with _api(console_server) as api:
            assert api.delete(f"/api/v1/tokens/{token_id}").status_code == 204
        r = browser.get("/runs")
        assert r.status_code == 303 and r.headers["location"].startswith("/signin?next=%2Fruns")
        # an htmx request is told where to go instead
        r = browser.get("/runs", headers={"HX-Request": "true"})
        assert r.headers.get("HX-Redirect", "").startswith("/signin")


def test_an_expired_token_cannot_sign_in(console_server: ServerProcess) -> None:
    bogus = "aic_tok_0000000000000000_" + "a" * 43
    r = httpx.post(f"{console_server.url}/signin", data={"token": bogus, "next": "/"})
    assert r.status_code == 401 and "invalid token" in r.text
    assert "aicloud_console" not in r.headers.get("set-cookie", "")


def test_another_workspaces_objects_are_404_pages(console_server: ServerProcess, tmp_path: Path) -> None:
    csv = tmp_path / "mine.csv"
    csv.write_text("a,label\n1,0\n2,1\n")
    with _api(console_server) as api:
        with csv.open("rb") as f:
            assert (
                api.post("/api/v1/datasets/secret-data/versions", files={"file": ("m.csv", f)}).status_code
                == 201
            )
        run = api.post("/api/v1/runs", json={"name": "secret-run"}).json()
        job = api.post(
            "/api/v1/jobs", json={"kind": "command", "name": "secret-job", "spec": {"command": "true"}}
        )
        other = api.post("/api/v1/workspaces", json={"name": "console-other"}).json()
    with _signed_in(console_server, other["admin_token"]["token"]) as stranger:
        for path in ["/datasets/secret-data", f"/runs/{run['id']}", f"/jobs/{job.json()['id']}"]:
            r = stranger.get(path)
            assert r.status_code == 404, (path, r.status_code)
            assert "Not found" in r.text
            assert "secret-run" not in r.text and "secret-job" not in r.text, path
        r = stranger.post(f"/jobs/{job.json()['id']}/cancel", data={"csrf": _csrf(stranger)})
        assert r.status_code == 404


def test_the_cookie_is_httponly_and_samesite_strict(console_server: ServerProcess) -> None:
    r = httpx.post(f"{console_server.url}/signin", data={"token": console_server.token, "next": "/"})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("aicloud_console=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain http here; https (or X-Forwarded-Proto: https) adds it
    r = httpx.post(
        f"{console_server.url}/signin",
        data={"token": console_server.token, "next": "https://evil.example/"},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert "Secure" in r.headers["set-cookie"]
    assert r.headers["location"] == "/"  # never an open redirect


def test_sign_in_from_another_site_is_refused(console_server: ServerProcess) -> None:
    r = httpx.post(
        f"{console_server.url}/signin",
        data={"token": console_server.token, "next": "/"},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_an_unknown_address_is_a_404_page_for_browsers_and_json_for_the_api(
    console_server: ServerProcess,
) -> None:
    html = {"Accept": "text/html,application/xhtml+xml"}
    with httpx.Client(base_url=console_server.url, timeout=60) as anon:
        r = anon.get("/no-such-page", headers=html)
        assert r.status_code == 404 and "text/html" in r.headers["content-type"] and "Not found" in r.text
        for path, headers in [("/api/v1/no-such", html), ("/no-such-page", {"Accept": "application/json"})]:
            r = anon.get(path, headers=headers)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path


def test_console_pages_need_the_cookie(console_server: ServerProcess) -> None:
    with httpx.Client(base_url=console_server.url, timeout=60) as anon:
        for path in [
            "/",
            "/runs",
            "/jobs",
            "/datasets",
            "/models",
            "/deployments",
            "/sweeps",
            "/usage",
            "/admin/tokens",
        ]:
            r = anon.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/signin"), path
        assert anon.post("/jobs", data={"body": "{}"}).status_code == 303
        assert anon.get("/signin").status_code == 200
        assert anon.get("/static/console.js").status_code == 200
        # the API's bearer token is not a console session, nor is the cookie an API credential
        r = anon.get("/runs", headers={"Authorization": f"Bearer {console_server.token}"})
        assert r.status_code == 303
    with httpx.Client(base_url=console_server.url, cookies={"aicloud_console": console_server.token}) as jar:
        assert jar.get("/api/v1/runs").status_code == 401

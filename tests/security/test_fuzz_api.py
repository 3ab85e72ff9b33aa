"""Schemathesis against the running control plane: every ``/api/v1`` operation of its own OpenAPI spec
(fetched with a token, as ``/openapi.json`` needs one), a bounded number of generated requests each,
valid and invalid ones (40 by default, ~25 s in all on 2 cores), sent as a member of a fresh
workspace, so whatever the fuzzer creates stays there. Part of them address a dataset, a model and a
run that exist, so requests get past the lookup.

Checks: no 5xx (``not_a_server_error``), and every 4xx is the aicloud JSON error shape. The admin routes
(key rotation) are left out; a member is refused them anyway. ``AICLOUD_FUZZ_EXAMPLES`` raises the
number of requests per operation for a longer, randomized run (a failure then prints its request).
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from aicloud.testing.server import ServerProcess

from helpers import small_csv

pytestmark = pytest.mark.timeout(900)

#: Generated requests per operation; the default keeps the whole run near a minute on 2 cores.
EXAMPLES = int(os.environ.get("AICLOUD_FUZZ_EXAMPLES", "0")) or 40


@pytest.fixture(scope="module")
def api_schema(server: ServerProcess, member: httpx.Client) -> Any:
    token = member.headers["Authorization"]
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers={"Authorization": token})
    schema.config.update(base_url=server.url, headers={"Authorization": token})
    return schema.include(path_regex=r"^/api/v1/").exclude(path_regex=r"^/api/v1/admin/")


@pytest.fixture(scope="module")
def existing(member: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Path parameters of objects that exist in the fuzzer's workspace, by path prefix."""
    csv = small_csv(tmp_path_factory.mktemp("fuzz") / "small.csv")
    r = member.post(
        "/api/v1/datasets/fuzz-ds/versions", params={"filename": "small.csv"}, content=csv.read_bytes()
    )
    assert r.status_code == 201, r.text
    config = member.post("/api/v1/blobs", content=b"{}", headers={"Content-Type": "application/octet-stream"})
    r = member.post(
        "/api/v1/models/fuzz-model/versions", json={"files": {"config.json": config.json()["digest"]}}
    )
    assert r.status_code == 201, r.text
    run = member.post("/api/v1/runs", json={"name": "fuzz-run"})
    assert run.status_code == 201, run.text
    return {
        "/api/v1/datasets/{name}": {"name": "fuzz-ds"},
        "/api/v1/models/{name}": {"name": "fuzz-model"},
        "/api/v1/runs/{run_id}": {"run_id": run.json()["id"]},
    }


def json_error(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """A 4xx is ``{"error": {"code", "message", "details"}}`` as JSON, with no stack trace."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"{response.status_code} with {content_type!r}"
    body = json.loads(response.content)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert "Traceback" not in response.text, response.text[:500]
    return None


def _strategies(operation: Any, existing: dict[str, dict[str, str]]) -> Any:
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    strategies = [operation.as_strategy(mode) for mode in modes]
    for prefix, params in existing.items():
        if operation.path.startswith(prefix):
            strategies += [operation.as_strategy(mode, path_parameters=params) for mode in modes]
    return st.one_of(strategies)


def test_no_route_answers_a_server_error(api_schema: Any, existing: dict[str, dict[str, str]]) -> None:
    """Every operation runs even when one fails; the failures are listed together. The requests are
    the same every run (derandomized) unless AICLOUD_FUZZ_EXAMPLES is set."""
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=_strategies(operation, existing))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize="AICLOUD_FUZZ_EXAMPLES" not in os.environ,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error, json_error], timeout=60)

        try:
            fuzz()
        except Exception as exc:  # collected, reported below
            failures.append(f"{operation.label}: {str(exc)[:3000]}")
    assert operations >= 40, operations
    assert not failures, "\n\n".join(failures)

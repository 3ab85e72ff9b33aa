"""The deployment controller's alias decision: a deployment of ``name@alias`` gets the version the
alias names now as a new generation (which the rolling update serves); pinned ones stay."""

from __future__ import annotations

from pathlib import Path

from test_deployment_controller import WS, Harness


def harness(tmp_path: Path, names: dict[str, str]) -> Harness:
    """A controller whose alias resolver reads ``names`` (``name@alias`` → version id) as it is now."""
    h = Harness(tmp_path)
    h.controller = h.new_controller(aliases=lambda ws, ref: names.get(ref) if ws == WS else None)
    h.all_ready = True
    return h


def test_a_moved_alias_is_a_new_generation_of_its_version(tmp_path: Path) -> None:
    names = {"digits@production": "mv_1"}
    h = harness(tmp_path, names)
    d = h.deployments.create(
        workspace_id=WS,
        name="digits",
        spec={"model": "digits@production"},
        model_version_id="mv_1",
        desired=1,
    )
    h.tick(2)
    assert h.get(d).generation == 1  # the alias names the version served: nothing to do
    names["digits@production"] = "mv_2"
    h.tick()
    moved = h.get(d)
    assert (moved.generation, moved.model_version_id) == (2, "mv_2")
    h.tick(3)
    assert [r.generation for r in h.replicas(d)] == [2]  # rolled over
    names.pop("digits@production")  # the alias is removed: the deployment keeps its version
    h.tick()
    assert (h.get(d).generation, h.get(d).model_version_id) == (2, "mv_2")


def test_track_alias_false_and_pinned_versions_stay(tmp_path: Path) -> None:
    h = harness(tmp_path, {"digits@production": "mv_2"})
    pinned = h.deployments.create(
        workspace_id=WS,
        name="pinned",
        spec={"model": "digits@production", "track_alias": False},
        model_version_id="mv_1",
        desired=1,
    )
    by_version = h.deployments.create(
        workspace_id=WS, name="v1", spec={"model": "digits:1"}, model_version_id="mv_1", desired=1
    )
    h.tick(2)
    for d in (pinned, by_version):
        assert (h.get(d).generation, h.get(d).model_version_id) == (1, "mv_1")


def test_without_a_resolver_nothing_follows(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    d = h.deployments.create(
        workspace_id=WS,
        name="digits",
        spec={"model": "digits@production"},
        model_version_id="mv_1",
        desired=1,
    )
    h.tick(2)
    assert h.get(d).generation == 1

"""The edge node agent's state and policies (aicloud.edge.agent_state, docs/edge.md#the-node-agent):
agent.json round-trips and is private, serve keys live only in their 0600 files, a pulled bundle is
kept only once it verifies as the assigned version, a reboot serves nothing whose bundle or key
fails, ports come from the range, and the backoff is capped, exponential and jittered."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aicloud.artifacts.bundle import BundleError, public_key_text, write_bundle
from aicloud.edge.agent import Agent, unreachable
from aicloud.edge.agent_children import Child, Counts
from aicloud.edge.agent_state import (
    AgentState,
    Backoff,
    NodeDisk,
    Placed,
    parse_ports,
    pick_port,
)
from aicloud.errors import AicloudError, NotFoundError, UnavailableError, ValidationError
from aicloud.schemas.edge import EdgeAssignment

MEMBERS = {"model.onnx": b"onnx" * 10, "config.json": b"{}", "signature.json": b'{"inputs": []}'}


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def placed(rid: str = "rep_1", vid: str = "mv_1", port: int = 18100) -> Placed:
    return Placed(rid, "digits", "dep_1", "digits", 3, vid, "digits:3", 8, 2.0, 1, port)


def bundle(path: Path, key: Ed25519PrivateKey, version_id: str) -> Path:
    meta = {"model": "digits", "version": 3, "version_id": version_id}
    write_bundle(path, MEMBERS, meta, sign=key.sign, public_key=raw_public(key))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_agent_json_round_trips_privately_and_holds_no_serve_key(tmp_path: Path) -> None:
    disk = NodeDisk(tmp_path)
    assert disk.load() == AgentState()
    state = AgentState(etag="e1", heartbeat_s=7, assignments={"rep_1": placed()})
    disk.save(state)
    disk.write_key("rep_1", "sk-secret")
    assert disk.load() == state
    assert mode(disk.agent_file) == 0o600 and mode(disk.folder) == 0o700
    assert mode(disk.key_path("rep_1")) == 0o600 and disk.read_key("rep_1") == "sk-secret"
    assert "sk-secret" not in disk.agent_file.read_text()
    assert [p.name for p in disk.folder.iterdir() if p.name.startswith(".")] == []  # no temporary left
    disk.delete_key("rep_1")
    assert disk.read_key("rep_1") is None

    doc = json.loads(disk.agent_file.read_text())
    doc["assignments"][0]["added_later"] = 1  # a newer agent's field is ignored
    disk.agent_file.write_text(json.dumps(doc))
    assert disk.load().assignments["rep_1"] == placed()
    disk.agent_file.write_text("{not json")
    with pytest.raises(ValidationError, match=r"agent\.json is not the agent's state"):
        disk.load()


def test_a_pulled_bundle_is_kept_only_when_it_verifies_as_the_assigned_version(tmp_path: Path) -> None:
    disk = NodeDisk(tmp_path)
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    kept = disk.keep(bundle(disk.part_path("mv_1"), key, "mv_1"), "mv_1", raw_public(key))
    assert kept == disk.bundle_path("mv_1") and kept.exists()
    assert disk.verify(kept, "mv_1", raw_public(key))["version_id"] == "mv_1"

    part = bundle(disk.part_path("mv_2"), key, "mv_9")
    with pytest.raises(BundleError, match="not the assigned mv_2"):
        disk.keep(part, "mv_2", raw_public(key))
    part = bundle(disk.part_path("mv_2"), other, "mv_2")
    with pytest.raises(BundleError, match="signature check failed"):
        disk.keep(part, "mv_2", raw_public(key))
    assert sorted(p.name for p in disk.bundles.iterdir()) == ["mv_1.bundle"]


def node_home(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    edge = tmp_path / "edge"
    edge.mkdir(mode=0o700)
    doc = {
        "url": "http://127.0.0.1:9",
        "node_id": "edn_1",
        "name": "pos",
        "token": "t",
        "labels": {"site": "s1"},
    }
    (edge / "node.json").write_text(json.dumps(doc))
    (edge / "trusted.pub").write_text(public_key_text(raw_public(key)) + "\n")
    return tmp_path


def test_a_reboot_serves_nothing_whose_bundle_or_key_fails(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    home = node_home(tmp_path, key)
    disk = NodeDisk(home)
    tampered = bundle(disk.part_path("mv_1"), key, "mv_1").replace(disk.bundle_path("mv_1"))
    tampered.write_bytes(tampered.read_bytes().replace(b"onnxonnx", b"onnxonnX", 1))
    bundle(disk.part_path("mv_2"), key, "mv_2").replace(disk.bundle_path("mv_2"))
    disk.write_key("rep_1", "k1")  # rep_2 has no key file
    disk.save(
        AgentState(assignments={"rep_1": placed("rep_1", "mv_1"), "rep_2": placed("rep_2", "mv_2", 18101)})
    )
    lines: list[str] = []
    agent = Agent(home, say=lines.append)
    try:
        agent.boot()
        assert agent.state.assignments == {} and agent.supervisor.children == {}
        assert "failed verification (digest mismatch" in agent.problems["rep_1"]
        assert "serve key is missing" in agent.problems["rep_2"]
        assert not disk.bundle_path("mv_1").exists()  # a bundle that fails is deleted, pulled again later
        assert any("not serving digits" in line for line in lines)
    finally:
        agent.supervisor.stop_all()


def test_one_agent_per_home(tmp_path: Path) -> None:
    fd = NodeDisk(tmp_path).lock()
    try:
        with pytest.raises(ValidationError, match="another edge agent runs"):
            NodeDisk(tmp_path).lock()
    finally:
        os.close(fd)
    os.close(NodeDisk(tmp_path).lock())  # free again once the holder is gone


def test_the_control_planes_state_is_logged_once_per_change(tmp_path: Path) -> None:
    home = node_home(tmp_path, Ed25519PrivateKey.generate())
    lines: list[str] = []
    agent = Agent(home, say=lines.append)
    try:
        agent.reachable()
        for _ in range(5):
            agent.unreachable(
                UnavailableError("cannot reach aicloud at X (ConnectError); is it running? try `aicloud up`")
            )
        agent.reachable()
        agent.reachable()
        for _ in range(3):
            agent.refused(NotFoundError("no route"))
        agent.refused(ValueError("other"))
        held = "serving what is held, retrying with backoff"
        assert lines == [
            "control plane http://127.0.0.1:9 reachable",
            "control plane unreachable (unavailable: cannot reach aicloud at X (ConnectError)); "
            "serving the 0 assignment(s) held, retrying with backoff",
            "control plane http://127.0.0.1:9 reachable again: status reported, re-syncing the assignments",
            f"the control plane refused a call (not_found: no route); {held}",
            f"the control plane refused a call (ValueError: other); {held}",
        ]
    finally:
        agent.supervisor.stop_all()


def test_ports_come_from_the_range_skipping_held_and_busy_ones() -> None:
    assert parse_ports("18100-18102") == range(18100, 18103) and parse_ports("9000") == range(9000, 9001)
    for bad in ("x", "10-5", "0-3", "65000-70000"):
        with pytest.raises(ValidationError):
            parse_ports(bad)
    assert pick_port(range(10, 14), [10, 11], "h", lambda h, p: p != 12) == 13
    with pytest.raises(ValidationError, match="no free port left in 10-11"):
        pick_port(range(10, 12), [10], "h", lambda h, p: False)


def test_the_backoff_is_capped_exponential_and_jittered() -> None:
    top = Backoff(base=1.0, cap=60.0, rng=lambda: 1.0)
    assert [top.next() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    top.reset()
    assert top.next() == 1
    low = Backoff(base=1.0, cap=60.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.5, 1, 2]
    many = Backoff(base=1.0, cap=60.0)
    for _ in range(200):
        assert 0.5 <= many.next() <= 60


def test_counts_carry_over_a_restart_and_deltas_start_from_what_was_accepted() -> None:
    child = Child(placed=placed())
    child.current = Counts(10, 1, 0.5)
    assert child.total == Counts(10, 1, 0.5)
    child.reported = child.total  # a report accepted
    child.carried, child.current = child.total, Counts()  # the process died: its counts carry over
    child.current = Counts(3, 0, 0.25)
    assert child.total - child.reported == Counts(3, 0, 0.25)
    assert Counts(1, 0, 0.0) - Counts(5, 2, 1.0) == Counts(0, 0, 0.0)  # never negative


def test_what_counts_as_unreachable() -> None:
    assert unreachable(UnavailableError("down")) and unreachable(AicloudError("500"))
    assert not unreachable(NotFoundError("x")) and not unreachable(ValueError("x"))


def test_a_placement_serves_an_assignment_unless_version_or_batching_changed() -> None:
    a = EdgeAssignment(
        replica_id="rep_1",
        deployment="digits",
        deployment_id="dep_1",
        model="digits",
        version=3,
        version_id="mv_1",
        bundle="digits:3",
        serve_key="k",
        max_batch_size=8,
        max_wait_ms=2.0,
        threads=1,
    )
    p = Placed.of(a, 18100)
    assert p == placed() and p.serves_as(a)
    assert not p.serves_as(a.model_copy(update={"version_id": "mv_2"}))
    assert not p.serves_as(a.model_copy(update={"threads": 2}))
    assert "k" not in repr(a)

"""``aicloud edge agent``: the node agent (docs/edge.md#the-node-agent).

It serves the deployments the control plane placed on this node and keeps serving them when the
control plane cannot be reached:

1. **boot**, before any network: the assignments of ``agent.json`` whose bundle verifies again with
   the pinned key and whose serve key is on disk are started (:mod:`aicloud.edge.agent_children`),
   so a node that reboots offline serves from disk;
2. **sync**: the status is reported (``PUT /edge/nodes/{id}/status``), then the assignments are
   fetched (``GET /edge/nodes/{id}/assignments``, no ETag) and applied: new bundles pulled and
   verified, their children started; removed assignments stopped, their keys and bundles deleted.
   Then it long-polls with ``If-None-Match`` and reports every ``heartbeat_s`` (sooner while a child
   changes state), with each replica's request, error and latency deltas;
3. **offline** (connection errors, timeouts, 5xx): it keeps serving, retries with capped
   exponential backoff and jitter, logs one line when the state changes, and when the control plane
   answers again goes back to 2 (report first, then the current assignments);
4. **revoked** (a 401): it stops every child, deletes every bundle, serve key and its state,
   ``node.json`` becomes ``node.json.revoked``, and it exits 1 saying to join again.

SIGINT and SIGTERM stop the children (SIGTERM, then SIGKILL after a grace) and exit 0.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aicloud.artifacts.bundle import BundleError
from aicloud.client import Client
from aicloud.edge import node as node_files
from aicloud.edge.agent_children import Supervisor
from aicloud.edge.agent_state import DEFAULT_PORTS, Backoff, NodeDisk, Placed, pick_port
from aicloud.errors import AicloudError, UnauthenticatedError, UnavailableError, ValidationError
from aicloud.schemas.edge import EdgeAssignment, EdgeAssignments, EdgeNodeStatus, EdgeReplicaStatus

MESSAGE_MAX = 2000


def stderr_line(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} edge agent: {message}", file=sys.stderr, flush=True)


def unreachable(exc: BaseException) -> bool:
    """The control plane did not answer (connection error, timeout) or failed (5xx): retry later."""
    return isinstance(exc, UnavailableError) or (isinstance(exc, AicloudError) and exc.status_code >= 500)


class Agent:
    """One node's agent; :meth:`run` until interrupted or revoked."""

    def __init__(
        self,
        home: Path | None = None,
        *,
        advertise: str | None = None,
        host: str = "127.0.0.1",
        ports: range = DEFAULT_PORTS,
        say: Callable[[str], None] = stderr_line,
    ) -> None:
        self.home, self.advertise, self.host, self.ports, self.say = home, advertise, host, ports, say
        self.node = node_files.load_state(home)
        key = node_files.pinned_key(home)
        if key is None:
            raise ValidationError.field("node", f"no pinned key at {node_files.edge_home(home)}: join again")
        self.key = key
        self.disk = NodeDisk(home)
        self._lock = self.disk.lock()
        self.state = self.disk.load()
        self.supervisor = Supervisor(self.disk, host, say)
        self.verified: set[str] = set()  # version ids whose bundle verified in this run
        self.problems: dict[str, str] = {}  # replica id -> why it is not served
        self.desired: EdgeAssignments | None = None
        self.online: bool | None = None
        self.refusal: str | None = None
        self.retry_at = 0.0

    # --- the whole life

    def run(self) -> int:
        """Serve until SIGINT/SIGTERM (0) or until the control plane revokes the node (1)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _interrupt)
        ports = f"{self.ports.start}-{self.ports.stop - 1}"
        self.say(
            f"edge node {self.node.name} ({self.node.node_id}) of {self.node.url}: children on "
            f"{self.host}, ports {ports}; address {self.advertise or 'none (local traffic only)'}"
        )
        if self.advertise and _loopback(self.host) and not _loopback(urlsplit(self.advertise).hostname or ""):
            self.say(
                f"note: the replicas listen on {self.host} only, so the gateway cannot reach them at "
                f"{self.advertise}: give --host 0.0.0.0 (or that address)"
            )
        try:
            self.boot()
            self.supervisor.start()
            self.loop()
        except _Revoked:
            return self.revoked()
        except KeyboardInterrupt:
            self.say("stopping")
        finally:
            n = self.supervisor.stop_all()
            if n:
                self.say(f"stopped {n} replica(s)")
        return 0

    def boot(self) -> None:
        """Start what ``agent.json`` holds, each bundle verified again with the pinned key."""
        for placed in list(self.state.assignments.values()):
            why = self._servable(placed)
            if why is not None:
                del self.state.assignments[placed.replica_id]
                self.problems[placed.replica_id] = why
                self.say(f"not serving {placed.label} from disk: {why}")
                continue
            self.supervisor.ensure(placed)
        if self.state.assignments:
            self.say(f"serving {len(self.state.assignments)} assignment(s) from disk")

    def _servable(self, placed: Placed) -> str | None:
        if self.disk.read_key(placed.replica_id) is None:
            return "its serve key is missing; it is fetched again at the next sync"
        if placed.version_id not in self.verified:
            path = self.disk.bundle_path(placed.version_id)
            try:
                self.disk.verify(path, placed.version_id, self.key)
            except BundleError as exc:
                path.unlink(missing_ok=True)
                return (
                    f"bundle {path.name} failed verification ({exc.message}); pulled again at the next sync"
                )
            self.verified.add(placed.version_id)
        return None

    def loop(self) -> None:
        backoff = Backoff(base=1.0, cap=60.0)
        resync, next_report = True, 0.0
        with Client(url=self.node.url, token=self.node.token) as client:
            while True:
                try:
                    if resync or time.monotonic() >= next_report or self.supervisor.changed.is_set():
                        self.report(client)
                        next_report = time.monotonic() + self.state.heartbeat_s
                    if resync:
                        got = client.edge.assignments(self.node.node_id, wait=0)
                    else:
                        wait = next_report - time.monotonic()
                        if self.supervisor.any_starting():
                            wait = min(wait, 1.0)
                        wait_s = max(1, min(30, math.ceil(wait)))  # whole seconds, never a busy loop
                        got = client.edge.assignments(self.node.node_id, wait=wait_s, etag=self.state.etag)
                    self.reachable()
                    backoff.reset()
                    resync = False
                    if got is not None:
                        self.apply(client, got)
                    elif self.problems and self.desired is not None and time.monotonic() >= self.retry_at:
                        self.apply(client, self.desired)  # a pull that failed is tried again
                except UnauthenticatedError:
                    raise _Revoked() from None
                except (KeyboardInterrupt, _Revoked):
                    raise
                except Exception as exc:
                    if unreachable(exc):
                        self.unreachable(exc)
                    else:
                        self.refused(exc)
                    resync = True
                    time.sleep(backoff.next())

    # --- sync

    def report(self, client: Client) -> None:
        self.supervisor.changed.clear()
        statuses = self.supervisor.snapshot()
        rows = [
            EdgeReplicaStatus(
                replica_id=s.replica_id,
                state=s.state,
                port=s.port,
                message=s.message[:MESSAGE_MAX],
                requests=s.delta.requests,
                errors=s.delta.errors,
                latency_s_sum=s.delta.latency_s,
            )
            for s in statuses
        ]
        served = {s.replica_id for s in statuses}
        rows += [
            EdgeReplicaStatus(replica_id=rid, state="failed", message=why[:MESSAGE_MAX])
            for rid, why in self.problems.items()
            if rid not in served
        ]
        client.edge.report(self.node.node_id, EdgeNodeStatus(address=self.advertise, assignments=rows))
        self.supervisor.accepted(statuses)

    def apply(self, client: Client, desired: EdgeAssignments) -> None:
        """Make what runs here what ``desired`` says: stop and delete what left, pull and start what came."""
        self.desired = desired
        self.retry_at = time.monotonic() + desired.heartbeat_s
        want = {a.replica_id: a for a in desired.assignments}
        for rid in [rid for rid in self.state.assignments if rid not in want]:
            placed = self.state.assignments.pop(rid)
            self.supervisor.remove(rid)
            self.disk.delete_key(rid)
            self.say(f"removed: {placed.label}")
        for rid in [rid for rid in self.problems if rid not in want]:
            del self.problems[rid]
        self.state.heartbeat_s = desired.heartbeat_s
        for a in desired.assignments:
            self._place(client, a)
        self.state.etag = desired.etag
        self.disk.save(self.state)
        in_use = {p.version_id for p in self.state.assignments.values()}
        for vid in self.verified - in_use:
            self.disk.delete_bundle(vid)
            self.verified.discard(vid)

    def _place(self, client: Client, a: EdgeAssignment) -> None:
        cur = self.state.assignments.get(a.replica_id)
        same_key = self.disk.read_key(a.replica_id) == a.serve_key
        if cur is not None and cur.serves_as(a) and same_key and a.version_id in self.verified:
            return
        try:
            self._fetch(client, a)
            used = [p.port for rid, p in self.state.assignments.items() if rid != a.replica_id]
            port = cur.port if cur is not None else pick_port(self.ports, used, self.host)
        except (UnauthenticatedError, KeyboardInterrupt):
            raise
        except Exception as exc:
            if unreachable(exc):
                raise
            why = exc.message if isinstance(exc, AicloudError) else f"{type(exc).__name__}: {exc}"
            if self.problems.get(a.replica_id) != why:
                self.say(f"cannot serve {a.deployment} ({a.bundle}, replica {a.replica_id}): {why}")
            self.problems[a.replica_id] = why
            return
        self.disk.write_key(a.replica_id, a.serve_key)
        placed = Placed.of(a, port)
        self.state.assignments[a.replica_id] = placed
        self.disk.save(self.state)
        self.problems.pop(a.replica_id, None)
        self.supervisor.ensure(placed, restart=not same_key)

    def _fetch(self, client: Client, a: EdgeAssignment) -> None:
        """Pull and verify ``a``'s bundle unless this run verified it already."""
        if a.version_id in self.verified and self.disk.bundle_path(a.version_id).exists():
            return
        self.say(f"pulling {a.bundle} for {a.deployment}")
        part = self.disk.part_path(a.version_id)
        client.edge.pull(self.node.node_id, a.bundle, part)
        path = self.disk.keep(part, a.version_id, self.key)
        self.verified.add(a.version_id)
        self.say(f"pulled and verified {a.bundle} ({path.name})")

    # --- the control plane's state, one line per change

    def reachable(self) -> None:
        if self.online is not True or self.refusal is not None:
            again = " again: status reported, re-syncing the assignments" if self.online is False else ""
            self.say(f"control plane {self.node.url} reachable{again}")
        self.online, self.refusal = True, None

    def unreachable(self, exc: BaseException) -> None:
        if self.online is not False:
            n = len(self.state.assignments)
            self.say(
                f"control plane unreachable ({_describe(exc)}); serving the {n} assignment(s) held, "
                "retrying with backoff"
            )
        self.online = False

    def refused(self, exc: BaseException) -> None:
        why = _describe(exc)
        if why != self.refusal:
            self.say(f"the control plane refused a call ({why}); serving what is held, retrying with backoff")
        self.refusal = why

    def revoked(self) -> int:
        n = self.supervisor.stop_all()
        keys = self.disk.forget()
        bundles = node_files.forget(self.home)
        self.say(
            f"the control plane at {self.node.url} refused this node's token: node {self.node.name} "
            f"({self.node.node_id}) was removed or its token revoked. Stopped {n} replica(s); deleted "
            f"{bundles} bundle(s), {keys} serve key(s) and the agent's state; node.json is now "
            f"node.json.revoked. To serve again, join again: aicloud edge join {self.node.url} --token T "
            f"--labels {','.join(f'{k}={v}' for k, v in self.node.labels.items()) or 'KEY=VALUE'}"
        )
        return 1


class _Revoked(Exception):
    pass


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AicloudError):
        message = exc.message.split("; is it running?")[0]  # the SDK's hint is for a user's laptop
        return f"{exc.code}: {message}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]

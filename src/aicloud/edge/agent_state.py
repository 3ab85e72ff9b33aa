"""The node agent's state on disk (docs/edge.md#the-node-agent), next to what ``aicloud edge join`` keeps.

Under ``$AICLOUD_HOME/edge/`` (0700):

* ``agent.json`` (0600, written atomically): the assignments the node serves (replica, deployment,
  model version, batching, its port), the assignments' ``etag`` and the heartbeat period. Enough to
  serve again after a reboot with no control plane;
* ``keys/<replica_id>.key`` (0600): each replica's serve key, the one home of it: the child reads it
  (``--token-file``), it is never on a command line or in a log;
* ``bundles/<version_id>.bundle``: each assigned version's signed bundle, kept only once it verified
  with the pinned key, and verified again before a reboot serves it;
* ``logs/<replica_id>.log``: each child's output;
* ``agent.lock``: held (``flock``) by the running agent, so a second one on this home is refused.

Also the agent's policies that need no process: the ports it hands out and the capped exponential
backoff with jitter it retries with.
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from aicloud.artifacts.bundle import BundleError, open_bundle
from aicloud.edge.node import BUNDLES, TRUSTED_KEY, edge_home, private_dir, safe_name, write_private
from aicloud.errors import ValidationError
from aicloud.schemas.edge import EdgeAssignment

AGENT_FILE = "agent.json"
LOCK_FILE = "agent.lock"
KEYS = "keys"
LOGS = "logs"
DEFAULT_HEARTBEAT_S = 15
DEFAULT_PORTS = range(18100, 18200)


@dataclass
class Placed:
    """One assignment as the node keeps it: what it serves, how, and on which port."""

    replica_id: str
    deployment: str
    deployment_id: str
    model: str
    version: int
    version_id: str
    bundle: str
    max_batch_size: int
    max_wait_ms: float
    threads: int
    port: int

    @classmethod
    def of(cls, a: EdgeAssignment, port: int) -> Placed:
        return cls(
            replica_id=a.replica_id,
            deployment=a.deployment,
            deployment_id=a.deployment_id,
            model=a.model,
            version=a.version,
            version_id=a.version_id,
            bundle=a.bundle,
            max_batch_size=a.max_batch_size,
            max_wait_ms=a.max_wait_ms,
            threads=a.threads,
            port=port,
        )

    def serves_as(self, a: EdgeAssignment) -> bool:
        """Whether a child started for this placement serves ``a`` as it asks (key aside)."""
        return (self.version_id, self.max_batch_size, self.max_wait_ms, self.threads) == (
            a.version_id,
            a.max_batch_size,
            a.max_wait_ms,
            a.threads,
        )

    @property
    def label(self) -> str:
        return f"{self.deployment} ({self.model}:{self.version}, replica {self.replica_id}, port {self.port})"


@dataclass
class AgentState:
    etag: str | None = None
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    assignments: dict[str, Placed] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "etag": self.etag,
            "heartbeat_s": self.heartbeat_s,
            "assignments": [asdict(p) for p in self.assignments.values()],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AgentState:
        names = {f.name for f in fields(Placed)}
        placed = [Placed(**{k: v for k, v in a.items() if k in names}) for a in doc.get("assignments") or []]
        return cls(
            etag=doc.get("etag"),
            heartbeat_s=int(doc.get("heartbeat_s") or DEFAULT_HEARTBEAT_S),
            assignments={p.replica_id: p for p in placed},
        )


class NodeDisk:
    """The files of one node agent (the module's docstring); every write is atomic and private."""

    def __init__(self, home: Path | None = None) -> None:
        self.folder = edge_home(home)
        self.agent_file = self.folder / AGENT_FILE
        self.trusted_key = self.folder / TRUSTED_KEY
        self.bundles = self.folder / BUNDLES
        self.keys = self.folder / KEYS
        self.logs = self.folder / LOGS

    # agent.json

    def load(self) -> AgentState:
        """The state the agent kept (empty when it never ran here)."""
        try:
            doc = json.loads(self.agent_file.read_text())
            return AgentState.from_json(doc)
        except FileNotFoundError:
            return AgentState()
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValidationError.field(
                "agent", f"{self.agent_file} is not the agent's state ({exc}); delete it to start empty"
            ) from None

    def save(self, state: AgentState) -> None:
        private_dir(self.folder)
        write_private(self.agent_file, json.dumps(state.to_json(), indent=1) + "\n")

    # serve keys

    def key_path(self, replica_id: str) -> Path:
        return self.keys / f"{safe_name(replica_id)}.key"

    def write_key(self, replica_id: str, key: str) -> Path:
        private_dir(self.keys)
        path = self.key_path(replica_id)
        write_private(path, key + "\n")
        return path

    def read_key(self, replica_id: str) -> str | None:
        try:
            return self.key_path(replica_id).read_text().strip() or None
        except FileNotFoundError:
            return None

    def delete_key(self, replica_id: str) -> None:
        self.key_path(replica_id).unlink(missing_ok=True)

    # bundles

    def bundle_path(self, version_id: str) -> Path:
        return self.bundles / f"{safe_name(version_id)}.bundle"

    def part_path(self, version_id: str) -> Path:
        private_dir(self.bundles)
        return self.bundles / f".{safe_name(version_id)}.part"

    def verify(self, path: Path, version_id: str, public_key: bytes) -> dict[str, Any]:
        """Verify the bundle at ``path`` with the pinned key and check it is version ``version_id``.

        Raises:
            BundleError: it failed a check, or it is another version's bundle.
        """
        manifest = open_bundle(path, public_key).manifest
        if str(manifest.get("version_id")) != version_id:
            raise BundleError(
                f"the bundle is version {manifest.get('version_id')}, not the assigned {version_id}",
                check="member",
                member="manifest.json",
            )
        return manifest

    def keep(self, part: Path, version_id: str, public_key: bytes) -> Path:
        """Verify a pulled bundle and only then keep it as ``bundles/<version_id>.bundle``; a bundle
        that fails is deleted (raises :class:`BundleError`)."""
        try:
            self.verify(part, version_id, public_key)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        dest = self.bundle_path(version_id)
        os.replace(part, dest)
        return dest

    def delete_bundle(self, version_id: str) -> None:
        self.bundle_path(version_id).unlink(missing_ok=True)

    # logs

    def log_path(self, replica_id: str) -> Path:
        private_dir(self.logs)
        return self.logs / f"{safe_name(replica_id)}.log"

    def forget(self) -> int:
        """Delete the agent's state and every serve key (the node was removed); bundles and
        ``node.json`` are :func:`aicloud.edge.node.forget`'s, logs stay. Returns how many keys."""
        self.agent_file.unlink(missing_ok=True)
        for part in self.bundles.glob(".*.part*") if self.bundles.exists() else []:
            part.unlink(missing_ok=True)  # a pull cut short: never verified
        n = 0
        for path in self.keys.glob("*.key") if self.keys.exists() else []:
            path.unlink(missing_ok=True)
            n += 1
        return n

    def lock(self) -> int:
        """Hold ``agent.lock`` for this process's life (one agent per home); returns its descriptor.

        Raises:
            ValidationError: another agent holds it.
        """
        import fcntl

        private_dir(self.folder)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ValidationError.field(
                "agent", f"another edge agent runs from {self.folder} (it holds {LOCK_FILE})"
            ) from None
        return fd


def parse_ports(text: str) -> range:
    """``18100-18199`` (inclusive) or one port."""
    low, sep, high = text.partition("-")
    try:
        ports = range(int(low), int(high if sep else low) + 1)
    except ValueError:
        raise ValidationError.field("ports", f"expected LOW-HIGH, e.g. 18100-18199, got {text!r}") from None
    if not ports or ports.start < 1 or ports.stop > 65536:
        raise ValidationError.field("ports", f"{text!r} is not a range of ports within 1-65535")
    return ports


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(
    ports: range, used: Iterable[int], host: str, free: Callable[[str, int], bool] = port_is_free
) -> int:
    """The first port of ``ports`` that no assignment holds and nobody listens on.

    Raises:
        ValidationError: every port of the range is taken.
    """
    taken = set(used)
    for port in ports:
        if port not in taken and free(host, port):
            return port
    raise ValidationError.field(
        "ports", f"no free port left in {ports.start}-{ports.stop - 1} ({len(taken)} held by assignments)"
    )


class Backoff:
    """Capped exponential backoff with jitter: the n-th delay is drawn from [d/2, d], d = min(cap,
    base·2ⁿ); :meth:`reset` after a success."""

    def __init__(
        self, base: float = 1.0, cap: float = 60.0, rng: Callable[[], float] = random.random
    ) -> None:
        self.base, self.cap, self.rng = base, cap, rng
        self.failures = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 30))
        self.failures += 1
        return ceiling * (0.5 + self.rng() / 2)

    def reset(self) -> None:
        self.failures = 0

"""The Ray executor: jobs run on an existing Ray cluster (``AICLOUD_EXECUTOR=ray``).

Each worker of a job is a *detached, named* Ray actor
(:class:`~aicloud.executors.ray_worker.JobWorker`) that reserves the worker's ``cpus`` and
``gpus`` and runs the workload as a subprocess on its node. A multi-worker job first gets
a placement group with one bundle per worker (strategy ``placement_strategy``: ``PACK`` by
default, ``SPREAD``/``STRICT_SPREAD`` to use more nodes); rank 0's actor reports its node's
IP and a free port, which become every worker's ``MASTER_ADDR``/``MASTER_PORT``.

The control plane is a Ray *driver*: it connects lazily (first submit or poll) through
:func:`aicloud.executors.ray_connect.connect`, which fails in seconds with a message saying
what to fix (a :class:`RayUnavailable`, so the job fails with reason ``launch``) where
``ray.init`` would wait for minutes. The token (``AICLOUD_RAY_TOKEN``) is never logged and
never reaches a job: the Ray variables of the control plane's environment are dropped from
every job's environment.

Layout of ``jobs_dir`` on the control plane (folders 0700, files 0600)::

    <jobs_dir>/<job_id>/job.log      the workers' logs, pulled by poll() in whole lines; those of
                                     rank r > 0 start with "[rank r] " (as on the local executor)
    <jobs_dir>/<job_id>/ray.json     {"offsets": [...]}: how much of each worker's log is here
    <jobs_dir>/<job_id>/cancel.json  written by cancel()
    <jobs_dir>/<job_id>/exit.json    the job's end, written once by poll()

The handle names the actors and the placement group, so a restarted control plane
re-attaches with ``ray.get_actor``. ``poll`` asks every actor for its state and new log
bytes (one call each, answers awaited ``call_timeout_s`` at most): all exited 0 → exit 0;
one failed → the others are stopped and the job's exit is the first failure; an actor that
is gone (killed, its node died) → ``lost`` (or -9 after a cancel); no answer for
``lost_after_s`` → ``lost``. ``cleanup`` kills the actors and removes the placement group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError
from ray.util.placement_group import (
    PlacementGroup,
    get_placement_group,
    placement_group,
    remove_placement_group,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from aicloud.executors.base import Executor, ExitInfo, LaunchError, LaunchRequest, job_folder, thread_env
from aicloud.executors.logs import whole_lines
from aicloud.executors.ray_connect import RayUnavailable, cause, connect
from aicloud.executors.ray_worker import JobWorker
from aicloud.executors.supervise import read_json, write_json_atomic

if TYPE_CHECKING:
    from aicloud.config import Settings

__all__ = ["RayExecutor", "RayUnavailable"]

log = logging.getLogger("aicloud.executors.ray")

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
PULL_BYTES = 1024 * 1024
DRAIN_BUDGET_S = 5.0
# Variables of the control plane's own Ray connection that a job never gets.
_PRIVATE_ENV = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS")
_Worker = ray.remote(JobWorker)


class RayExecutor(Executor):
    """Runs jobs as detached actors on a Ray cluster; see the module docstring."""

    def __init__(
        self,
        address: str,
        jobs_dir: Path,
        *,
        token: str | None = None,
        namespace: str = "aicloud",
        max_log_bytes: int = 50 * 1024 * 1024,
        default_grace_s: float = 10.0,
        placement_strategy: str = "PACK",
        start_timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        call_timeout_s: float = 1.0,
        lost_after_s: float = 60.0,
        local_node: bool = False,
        sandbox_hidden: list[str] | None = None,
    ) -> None:
        if not address:
            raise ValueError("AICLOUD_EXECUTOR=ray needs AICLOUD_RAY_ADDRESS (the Ray head's host:port)")
        strategy = placement_strategy.upper()
        if strategy not in STRATEGIES:
            raise ValueError(f"placement strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        self.address = address
        self.sandbox_hidden = sandbox_hidden  # None: unsandboxed; else the folders no workload sees
        self.jobs_dir = Path(jobs_dir)
        self._token = token
        self.namespace = namespace
        self.max_log_bytes = max_log_bytes
        self.default_grace_s = default_grace_s
        self.placement_strategy = strategy
        self.start_timeout_s = start_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.call_timeout_s = call_timeout_s
        self.lost_after_s = lost_after_s
        self.local_node = local_node
        self._lock = threading.RLock()
        self._unanswered_since: dict[str, float] = {}  # job id -> first poll without an answer
        self._stopping: set[str] = set()  # jobs whose other workers were told to stop

    def __repr__(self) -> str:  # never the token
        return f"RayExecutor(address={self.address!r}, namespace={self.namespace!r})"

    @classmethod
    def from_settings(
        cls, settings: Settings, *, local_node: bool = False, sandboxed: bool = False
    ) -> RayExecutor:
        """The executor the control plane uses (``AICLOUD_RAY_*`` settings). ``local_node``:
        every worker on the control plane's own Ray node (serving replicas, which the
        gateway reaches on 127.0.0.1). ``sandboxed``: each workload in its node's sandbox."""
        if not settings.ray_address:
            raise ValueError("AICLOUD_EXECUTOR=ray needs AICLOUD_RAY_ADDRESS (the Ray head's host:port)")
        return cls(
            settings.ray_address,
            settings.resolved_jobs_dir,
            token=settings.ray_token,
            namespace=settings.ray_namespace,
            max_log_bytes=settings.max_log_bytes,
            default_grace_s=settings.cancel_grace_seconds,
            placement_strategy=settings.ray_placement_strategy,
            start_timeout_s=settings.ray_start_timeout_seconds,
            local_node=local_node,
            sandbox_hidden=[str(settings.home), str(settings.resolved_jobs_dir)] if sandboxed else None,
        )

    # -- connection --------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect this process to the cluster (once); RayUnavailable says why it cannot."""
        connect(self.address, namespace=self.namespace, token=self._token, timeout_s=self.connect_timeout_s)

    # -- paths -------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return job_folder(self.jobs_dir, job_id)

    @staticmethod
    def _dir(handle: dict[str, Any]) -> Path:
        if not isinstance(handle, dict) or handle.get("executor") != "ray" or "job_dir" not in handle:
            raise ValueError(f"not a Ray executor handle: {handle!r}")
        return Path(handle["job_dir"])

    def log_path(self, handle: dict[str, Any]) -> Path:
        """``<job_dir>/job.log``: the workers' logs as far as ``poll`` has pulled them."""
        return self._dir(handle) / "job.log"

    # -- submit ------------------------------------------------------------------------------

    def submit(self, req: LaunchRequest) -> dict[str, Any]:
        """Place the job's workers, start them, and return the handle."""
        if not req.argv:
            raise LaunchError("argv is empty: nothing to run", permanent=True)
        if req.cpus < 1 or req.workers < 1 or req.gpus < 0:
            raise LaunchError(
                f"need cpus >= 1, workers >= 1, gpus >= 0 (not {req.cpus}, {req.workers}, {req.gpus})",
                permanent=True,
            )
        job_dir = self.job_dir(req.job_id)
        self.connect()
        self._check_fits(req)
        self.jobs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        job_dir.mkdir(mode=0o700, exist_ok=True)
        for stale in ("exit.json", "cancel.json", "ray.json"):
            (job_dir / stale).unlink(missing_ok=True)  # from an earlier attempt at the same job
        tag = f"aicloud-{req.job_id}-{uuid.uuid4().hex[:8]}"
        names = [f"{tag}-{rank}" for rank in range(req.workers)]
        pg_name = tag if req.workers > 1 else None
        deadline = time.monotonic() + self.start_timeout_s
        try:
            pg = self._placement_group(req, pg_name, deadline) if pg_name else None
            actors = [self._create_actor(req, name, rank, pg) for rank, name in enumerate(names)]
            nodes = self._get([a.node.remote() for a in actors], deadline, req)
            sandbox = None
            if self.sandbox_hidden is not None:
                sandbox = {"hidden": self.sandbox_hidden, "rlimits": req.limits.rlimits()}
            envs = self._worker_envs(req, nodes)
            self._get(
                [
                    a.start.remote(req.argv, env, req.cwd, sandbox)
                    for a, env in zip(actors, envs, strict=True)
                ],
                deadline,
                req,
            )
        except BaseException as exc:
            self._destroy(names, pg_name)
            if isinstance(exc, LaunchError):
                raise
            if isinstance(exc, Exception):
                raise LaunchError(f"the job's Ray workers failed to start: {cause(exc)}") from None
            raise
        os.close(os.open(job_dir / "job.log", os.O_WRONLY | os.O_CREAT, 0o600))  # a restart appends
        write_json_atomic(str(job_dir / "ray.json"), {"offsets": [0] * req.workers})
        return {
            "executor": "ray",
            "job_id": req.job_id,
            "job_dir": str(job_dir.resolve()),
            "address": self.address,
            "namespace": self.namespace,
            "actors": names,
            "placement_group": pg_name,
            "nodes": [{"node_id": n["node_id"], "ip": n["ip"]} for n in nodes],
            "workers": req.workers,
            "submitted_at": time.time(),
        }

    def _check_fits(self, req: LaunchRequest) -> None:
        """Fail at once when no node could ever hold one worker (instead of waiting for it)."""
        fits = 0
        for node in ray.nodes():
            res = node.get("Resources") or {}
            if node.get("Alive") and res.get("CPU", 0) >= req.cpus and res.get("GPU", 0) >= req.gpus:
                fits += 1
        need = req.workers if req.workers > 1 and self.placement_strategy == "STRICT_SPREAD" else 1
        if fits < need:
            raise LaunchError(
                f"the Ray cluster has {fits} node(s) with {req.cpus} CPU(s) and {req.gpus} GPU(s) "
                f"for one worker; the job needs {need} (workers={req.workers}, "
                f"strategy {self.placement_strategy})",
                permanent=True,
            )

    def _placement_group(self, req: LaunchRequest, name: str, deadline: float) -> PlacementGroup:
        bundle: dict[str, float] = {"CPU": req.cpus}
        if req.gpus:
            bundle["GPU"] = req.gpus
        pg = placement_group(
            [dict(bundle) for _ in range(req.workers)],
            strategy=self.placement_strategy,
            name=name,
            lifetime="detached",
        )
        ready, _ = ray.wait([pg.ready()], timeout=max(0.1, deadline - time.monotonic()))
        if not ready:
            raise LaunchError(
                f"the Ray cluster could not place {req.workers} workers ({req.cpus} CPU(s), "
                f"{req.gpus} GPU(s) each, strategy {self.placement_strategy}) within "
                f"{self.start_timeout_s:g}s: not enough free resources"
            )
        return pg

    def _create_actor(self, req: LaunchRequest, name: str, rank: int, pg: PlacementGroup | None) -> Any:
        options: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "lifetime": "detached",
            "num_cpus": req.cpus,
            "num_gpus": req.gpus,
            "max_restarts": 0,
            "max_concurrency": 4,
        }
        if pg is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=rank
            )
        elif self.local_node:
            here = ray.get_runtime_context().get_node_id()
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(here, soft=False)
        cap = max(1024, self.max_log_bytes // req.workers)
        return _Worker.options(**options).remote(req.job_id, rank, cap, req.gpus)

    def _get(self, refs: list[Any], deadline: float, req: LaunchRequest) -> list[Any]:
        try:
            return list(ray.get(refs, timeout=max(0.1, deadline - time.monotonic())))
        except GetTimeoutError:
            raise LaunchError(
                f"the job's {req.workers} Ray worker(s) ({req.cpus} CPU(s), {req.gpus} GPU(s) each) "
                f"did not start within {self.start_timeout_s:g}s: the cluster lacks free resources"
            ) from None

    def _worker_envs(self, req: LaunchRequest, nodes: list[dict[str, Any]]) -> list[dict[str, str]]:
        base = {k: v for k, v in req.env.items() if k not in _PRIVATE_ENV}
        if base.get("PYTHONBREAKPOINT", "").startswith("ray."):  # set by ray.init in the driver
            del base["PYTHONBREAKPOINT"]
        for name, value in thread_env(req).items():
            base.setdefault(name, value)
        envs = []
        for rank, node in enumerate(nodes):
            env = dict(base, AICLOUD_NODE_ID=node["node_id"], AICLOUD_NODE_IP=node["ip"])
            if req.gpus:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(node["gpu_ids"])
            if req.workers > 1:
                same = [r for r, n in enumerate(nodes) if n["node_id"] == node["node_id"]]
                node_ids = list(dict.fromkeys(n["node_id"] for n in nodes))
                env.update(
                    GROUP_RANK=str(node_ids.index(node["node_id"])),
                    RANK=str(rank),
                    WORLD_SIZE=str(req.workers),
                    LOCAL_RANK=str(same.index(rank)),
                    LOCAL_WORLD_SIZE=str(len(same)),
                    MASTER_ADDR=nodes[0]["ip"],
                    MASTER_PORT=str(nodes[0]["port"]),
                )
            envs.append(env)
        return envs

    # -- poll --------------------------------------------------------------------------------

    def poll(self, handle: dict[str, Any]) -> ExitInfo:
        """The job's state now; see the module docstring. Never raises for a dead job."""
        job_dir = self._dir(handle)
        with self._lock:
            done = self._exit_info(job_dir)
            if done is not None:
                return done
            try:
                self.connect()
            except LaunchError:
                return self._unanswered(handle)
            return self._poll(handle, job_dir)

    def _poll(self, handle: dict[str, Any], job_dir: Path) -> ExitInfo:
        job_id = str(handle["job_id"])
        names: list[str] = list(handle["actors"])
        offsets: list[int] = list((read_json(job_dir / "ray.json") or {}).get("offsets") or [0] * len(names))
        states, _ = self._pull(job_dir, names, offsets)
        if any(s == "gone" for s in states):
            self._stop(names, 0.0)
            if (job_dir / "cancel.json").exists():
                return self._finish(job_dir, handle, [], cancelled=True)
            return ExitInfo("lost", wall_seconds=self._wall(handle))
        if any(s is None for s in states):
            return self._unanswered(handle)
        self._unanswered_since.pop(job_id, None)
        exits: list[dict[str, Any]] = [s for s in states if isinstance(s, dict)]
        if len(exits) == len(names):
            deadline = time.monotonic() + DRAIN_BUDGET_S
            left = True
            while left and time.monotonic() < deadline:
                _, left = self._pull(job_dir, names, offsets)
            return self._finish(job_dir, handle, exits)
        if any(e["exit_code"] != 0 for e in exits) and job_id not in self._stopping:
            self._stopping.add(job_id)  # the first failure ends the job: stop the others
            self._stop(names, self.default_grace_s)
        return ExitInfo("running")

    def _pull(self, job_dir: Path, names: list[str], offsets: list[int]) -> tuple[list[Any], bool]:
        """Ask each worker for new log bytes and its state; append complete lines to the log.

        Returns, per worker, its exit record, ``"running"``, ``"gone"`` (no such actor any
        more) or None (no answer in time); and whether log bytes are still left to pull.
        """
        refs: list[Any] = []
        states: list[Any] = []
        for name, offset in zip(names, offsets, strict=True):
            actor = self._actor(name)
            states.append("gone" if actor is None else None)
            refs.append(None if actor is None else actor.pull.remote(offset, PULL_BYTES))
        live = [r for r in refs if r is not None]
        if live:
            ray.wait(live, num_returns=len(live), timeout=self.call_timeout_s)
        before = list(offsets)
        left = False
        with open(job_dir / "job.log", "ab") as out:
            for rank, ref in enumerate(refs):
                if ref is None:
                    continue
                try:
                    answer = ray.get(ref, timeout=0)
                except ActorUnavailableError:  # temporarily: no answer, not gone
                    continue
                except RayActorError:
                    states[rank] = "gone"
                    continue
                except Exception:  # no answer in time (GetTimeoutError) or a transient failure
                    continue
                ended = answer["exit"] is not None
                data: bytes = answer["data"]
                final = ended and offsets[rank] + len(data) >= answer["size"]
                chunk, consumed = whole_lines(data, final=final, limit=PULL_BYTES, rank=rank)
                out.write(chunk)
                offsets[rank] += consumed
                left = left or offsets[rank] < answer["size"]
                states[rank] = answer["exit"] if ended else "running"
        if offsets != before:
            write_json_atomic(str(job_dir / "ray.json"), {"offsets": offsets})
        return states, left

    def _actor(self, name: str) -> Any:
        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None

    def _unanswered(self, handle: dict[str, Any]) -> ExitInfo:
        """No answer from the cluster or a worker: running for a while, then lost."""
        first = self._unanswered_since.setdefault(str(handle["job_id"]), time.monotonic())
        if time.monotonic() - first < self.lost_after_s:
            return ExitInfo("running")
        log.warning(
            "job %s: no answer from its Ray workers for %.0fs: lost", handle["job_id"], self.lost_after_s
        )
        return ExitInfo("lost", wall_seconds=self._wall(handle))

    @staticmethod
    def _wall(handle: dict[str, Any]) -> float:
        return round(max(0.0, time.time() - float(handle.get("submitted_at") or time.time())), 3)

    def _finish(
        self, job_dir: Path, handle: dict[str, Any], exits: list[dict[str, Any]], cancelled: bool = False
    ) -> ExitInfo:
        """Record the job's end (the first failure, else 0) in exit.json and return it."""
        failed = sorted(
            (e for e in exits if e["exit_code"] != 0), key=lambda e: float(e.get("finished_at", 0))
        )
        code = int(failed[0]["exit_code"]) if failed else 0
        if cancelled and not exits:  # the workers were gone before they could report
            code = -9  # as on the local executor: the cancel's SIGKILL
        cpu = [e["cpu_seconds"] for e in exits if e.get("cpu_seconds") is not None]
        rss = [e["peak_rss_bytes"] for e in exits if e.get("peak_rss_bytes") is not None]
        walls = [e["wall_seconds"] for e in exits if e.get("wall_seconds") is not None]
        record = {
            "exit_code": code,
            "cpu_seconds": round(sum(cpu), 3) if cpu else None,
            "peak_rss_bytes": sum(rss) if rss else None,  # the workers together, as on the local executor
            "wall_seconds": max(walls) if walls else self._wall(handle),
            "workers": exits,
            "finished_at": time.time(),
        }
        write_json_atomic(str(job_dir / "exit.json"), record)
        self._unanswered_since.pop(str(handle["job_id"]), None)
        self._stopping.discard(str(handle["job_id"]))
        info = self._exit_info(job_dir)
        assert info is not None
        return info

    @staticmethod
    def _exit_info(job_dir: Path) -> ExitInfo | None:
        record = read_json(job_dir / "exit.json")
        if record is None:
            return None
        return ExitInfo.from_record(record)

    # -- cancel / cleanup --------------------------------------------------------------------

    def cancel(self, handle: dict[str, Any], grace_s: float) -> None:
        """Record the cancel (first call wins) and ask every worker to stop; returns at once."""
        job_dir = self._dir(handle)
        cancel_path = job_dir / "cancel.json"
        if not cancel_path.exists():
            write_json_atomic(
                str(cancel_path), {"requested_at": time.time(), "grace_s": max(0.0, float(grace_s))}
            )
        if (job_dir / "exit.json").exists():
            return
        try:
            self.connect()
        except LaunchError as exc:
            log.warning("job %s: cannot reach Ray to cancel it: %s", handle.get("job_id"), exc)
            return
        self._stop(list(handle["actors"]), max(0.0, float(grace_s)))

    def _stop(self, names: list[str], grace_s: float) -> None:
        """SIGTERM every worker's workload now, SIGKILL after ``grace_s`` (fire and forget)."""
        for name in names:
            actor = self._actor(name)
            if actor is not None:
                actor.terminate.remote(grace_s)

    def cleanup(self, handle: dict[str, Any]) -> None:
        """Kill the job's workloads and actors, remove its placement group. Idempotent."""
        try:
            self.connect()
        except LaunchError as exc:
            log.warning("job %s: cannot reach Ray to clean up: %s", handle.get("job_id"), exc)
            return
        self._destroy(list(handle.get("actors") or []), handle.get("placement_group"))
        (self._dir(handle) / "ray.json").unlink(missing_ok=True)

    def _destroy(self, names: list[str], pg_name: str | None) -> None:
        actors = [a for a in (self._actor(n) for n in names) if a is not None]
        if actors:  # kill the workloads and remove the folders first: a killed actor cannot
            with contextlib.suppress(Exception):
                ray.wait([a.shutdown.remote() for a in actors], num_returns=len(actors), timeout=5.0)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        if pg_name:
            with contextlib.suppress(Exception):
                remove_placement_group(get_placement_group(pg_name))

"""The tracking session's checkpoint calls: a job's latest checkpoint on the control plane.

``client.jobs.put_checkpoint``/``get_checkpoint`` (``PUT``/``GET /api/v1/jobs/{id}/checkpoint``) inside
a job, retried by the session's transport while the control plane is away; offline, one file under
``./aicloud-run/``. The format (safetensors + JSON, never pickle) is :mod:`aicloud.training.checkpoint`,
imported only when a checkpoint is made or read, so that a session without checkpoints never loads torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aicloud.client import Client
    from aicloud.client.http import Transport
    from aicloud.training.checkpoint import Checkpoint
    from aicloud.training.env import WorkloadEnv

OFFLINE_RUN_DIR = "aicloud-run"
OFFLINE_CHECKPOINT = "checkpoint.safetensors"


class SessionCheckpoints:
    """Part of :class:`aicloud.training.session.Session`: its checkpoint methods."""

    env: WorkloadEnv
    workdir: Path
    transport: Transport | None

    if TYPE_CHECKING:

        @property
        def client(self) -> Client: ...

    def _checkpoint_path(self) -> Path:
        return self.workdir / OFFLINE_RUN_DIR / OFFLINE_CHECKPOINT

    def put_checkpoint(
        self, data: bytes, *, epoch: int | None = None, step: int | None = None
    ) -> dict[str, Any]:
        """Store checkpoint bytes as the job's latest checkpoint; returns its record."""
        if self.transport is None or not self.env.job_id:
            path = self._checkpoint_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            return {"path": str(path), "epoch": epoch, "step": step, "size": len(data)}
        return self.client.jobs.put_checkpoint(self.env.job_id, data, epoch=epoch, step=step)

    def get_checkpoint(self) -> bytes | None:
        """The job's latest checkpoint, or None when it has none."""
        if self.transport is None or not self.env.job_id:
            path = self._checkpoint_path()
            return path.read_bytes() if path.exists() else None
        return self.client.jobs.get_checkpoint(self.env.job_id)

    def save_checkpoint(
        self,
        state: Any,
        *,
        epoch: int | None = None,
        step: int | None = None,
        extra: Mapping[str, Any] | None = None,
        rng: bool = True,
    ) -> dict[str, Any]:
        from aicloud.training.checkpoint import pack, rng_state

        if not self.env.chief:
            return {}
        data = pack(state, epoch=epoch, step=step, extra=extra, rng=rng_state() if rng else None)
        return self.put_checkpoint(data, epoch=epoch, step=step)

    def load_checkpoint(self, *, restore_rng: bool = True) -> Checkpoint | None:
        from aicloud.training.checkpoint import set_rng_state, unpack

        data = self.get_checkpoint()
        if data is None:
            return None
        ckpt = unpack(data)
        if restore_rng and ckpt.rng is not None:
            set_rng_state(ckpt.rng)
        return ckpt

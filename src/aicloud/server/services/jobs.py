"""The job controller's hooks into the control plane: launching a job and wrapping it up.

:class:`JobLauncher` gives the :class:`~aicloud.controllers.jobs.JobController` its ``launcher`` (a
run, a job-scoped token and the workload's environment, secrets included) and its ``on_finished``
hook (keep the log as a blob, revoke the token, close the run).
"""

from __future__ import annotations

import json
import logging
import sys

from aicloud.entities import Job, JobStatus, Role, RunStatus
from aicloud.executors.base import LaunchRequest, WorkloadLimits
from aicloud.executors.runtime_env import wrap as wrap_runtime_env
from aicloud.server.services.secrets import open_secret
from aicloud.server.services.workloads import scoped_token, workload_env
from aicloud.server.state import AppState

log = logging.getLogger("aicloud.jobs")


class JobLauncher:
    """The control plane's side of running a job: launch and wrap-up."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def server_url(self) -> str:
        host = self.state.settings.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{host}:{self.state.settings.port}"

    def launch(self, job: Job) -> LaunchRequest:
        """A run (the job's existing one on a restart), a fresh job token (revoking an earlier
        attempt's), and the LaunchRequest: the bootstrap on ``spec.workers`` workers, in the spec's
        ``runtime_env`` when it has one (:mod:`aicloud.executors.runtime_env`)."""
        store = self.state.store
        if job.run_id:  # a restart (job.attempt > 0): the run goes on
            run_id = job.run_id
            self._revoke_tokens(job)
        else:
            params = job.spec.get("params") or {}
            run_id = store.runs.create(
                workspace_id=job.workspace_id, job_id=job.id, name=job.name, params=params
            ).id
            store.jobs.update(job.id, run_id=run_id)
        token = scoped_token(self.state, job.workspace_id, f"job-{job.id}", Role.MEMBER, f"job:{job.id}")
        extra = {k: str(v) for k, v in (job.spec.get("env") or {}).items()}
        for name in job.spec.get("secrets") or []:
            extra[name] = open_secret(self.state, job.workspace_id, name)
        env = workload_env(
            self.server_url(),
            token,
            extra,
            AICLOUD_JOB_ID=job.id,
            AICLOUD_RUN_ID=run_id,
            AICLOUD_JOB_SPEC=json.dumps({"kind": job.kind.value, "name": job.name, **job.spec}),
            AICLOUD_ATTEMPT=str(job.attempt),
        )
        # a spec with a runtime_env (any kind that has the field) starts in the env's prelude
        argv = wrap_runtime_env(
            [sys.executable, "-m", "aicloud.training.bootstrap"],
            env,
            job.spec.get("runtime_env"),
            self.state.settings,
            job.workspace_id,
        )
        return LaunchRequest(
            job_id=job.id,
            argv=argv,
            env=env,
            cpus=int(job.spec.get("cpus") or 1),
            workers=int(job.spec.get("workers") or 1),
            gpus=int(job.spec.get("gpus") or 0),
            limits=WorkloadLimits.from_spec(job.spec.get("limits")),
        )

    def _revoke_tokens(self, job: Job) -> None:
        store = self.state.store
        for token in store.tokens.list(job.workspace_id):
            if token.scope == f"job:{job.id}":
                store.tokens.delete(job.workspace_id, token.id)
                self.state.principals.forget_token(token.id)

    def finished(self, job: Job) -> None:
        """Keep the log as an encrypted blob, revoke the job's token, close its run (with the
        job's status). The controller calls it before the job turns terminal in the store, and
        again if the control plane stopped in between: a log kept is gone from its file, so it is
        not kept twice, and a run already closed as wanted is left alone."""
        store = self.state.store
        controller = self.state.jobs
        path = controller.executor.log_path(job.handle) if controller is not None and job.handle else None
        if path is not None and path.exists():
            with self.state.blobs.writer() as w, open(path, "rb") as f:
                while chunk := f.read(1024 * 1024):
                    w.write(chunk)
                info = w.commit()
            # the job store references the log's blob (BlobOwner.JOB_LOG) in the same update
            self.state.keep_blob(info.digest, lambda: store.jobs.update(job.id, log_digest=info.digest))
            path.unlink(missing_ok=True)
        self._revoke_tokens(job)
        if job.run_id:
            # the run ends as the job did (a multi-worker or restarted job's rank 0 may have left
            # it open, or marked it cancelled when it was only stopped because a peer failed)
            run = store.runs.get(job.workspace_id, job.run_id)
            status = {JobStatus.SUCCEEDED: RunStatus.SUCCEEDED, JobStatus.CANCELLED: RunStatus.CANCELLED}
            wanted = status.get(job.status, RunStatus.FAILED)
            if run.status is not wanted:
                store.runs.finish(job.workspace_id, run.id, wanted)

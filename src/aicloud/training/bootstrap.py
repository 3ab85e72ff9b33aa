"""The workload entry point: ``python -m aicloud.training.bootstrap`` (see docs/training.md).

Started by an executor in a fresh working folder with ``AICLOUD_URL``, ``AICLOUD_TOKEN``,
``AICLOUD_JOB_ID``, ``AICLOUD_RUN_ID`` and ``AICLOUD_JOB_SPEC`` set, it:

1. downloads the job's dataset versions into ``data/<role>.<format>`` and sets ``AICLOUD_DATASETS``
   (JSON role → path) and ``AICLOUD_DATASET_<ROLE>``;
2. ``train`` jobs: runs the built-in task (:func:`aicloud.training.tasks.run_task`), logging params and
   metrics to the run, and registers the model (name: the spec's ``model_name``, else the job name);
   ``finetune`` jobs: fine-tunes the base model version (:mod:`aicloud.training.finetune`) and
   registers the result; ``command`` jobs: downloads and safely extracts the code archive into
   ``code/``, then runs ``/bin/sh -c <command>`` there with ``AICLOUD_OUTPUT_DIR`` set, its output
   passed straight through and SIGTERM forwarded to it;
3. marks the run finished (succeeded, failed or cancelled) and exits with the job's exit code
   (the command's; 1 after an error, whose traceback goes to stderr, i.e. the job log). A job that
   the control plane will restart (``max_restarts`` left) leaves its run open instead: the run goes
   on in the next attempt, and the control plane closes it with the job's final status.

Multi-worker jobs start one bootstrap per worker (``RANK``, ``WORLD_SIZE``... set by the executor).
Every rank downloads the data (rank r > 0 into its own ``rank<r>/`` folder) and runs the task or
command; only rank 0 logs params and metrics, checkpoints, registers the model and finishes the run.
A restarted attempt (``AICLOUD_ATTEMPT`` > 0) of a ``train`` job resumes from the job's latest
checkpoint, if it has one.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from aicloud.artifacts.archive import extract_archive
from aicloud.errors import DataCorruptedError, ValidationError
from aicloud.schemas.training import CommandSpec, TrainSpec
from aicloud.training.env import JobDoc, WorkloadEnv
from aicloud.training.params import param_env
from aicloud.training.session import Session, use_session

if TYPE_CHECKING:  # the checkpoint module imports torch
    from aicloud.training.checkpoint import Checkpoint


class Cancelled(BaseException):
    """SIGTERM arrived (the job was cancelled)."""


def log(message: str) -> None:
    print(f"[aicloud] {message}", flush=True)


# -----------------------------------------------------------------------------------------------------
# datasets and code


def _dataset_refs(sess: Session, job: JobDoc) -> dict[str, dict[str, Any]]:
    """Role → ``{"name", "version", "format"}``: the server's resolved versions, else resolved here."""
    if job.resolved:
        return {role: dict(info) for role, info in job.resolved.items() if info}
    if job.kind in ("train", "finetune"):
        wanted = {"train": job.spec.get("dataset"), "eval": job.spec.get("eval_dataset")}
    else:
        wanted = dict(job.spec.get("datasets") or {})
    refs: dict[str, dict[str, Any]] = {}
    for role, ref in wanted.items():
        if not ref:
            continue
        info = sess.client.datasets.resolve(str(ref))
        refs[role] = {"name": info.name, "version": info.version, "format": info.format}
    return refs


def download_datasets(sess: Session, job: JobDoc, dest: Path) -> dict[str, Path]:
    """Download each dataset version of the job into ``dest/<role>.<format>``."""
    if sess.transport is None:
        raise ValidationError.field("AICLOUD_RUN_ID", "the bootstrap needs AICLOUD_URL and AICLOUD_RUN_ID")
    paths: dict[str, Path] = {}
    for role, info in _dataset_refs(sess, job).items():
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / f"{role}.{info.get('format') or 'bin'}"
        version = info["version"]
        size, _ = sess.client.datasets.fetch(str(info["name"]), version, path)
        log(f"dataset {role}: {info['name']}:{version} → {path} ({size} bytes)")
        paths[role] = path
    return paths


def expose_datasets(paths: dict[str, Path], environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Set ``AICLOUD_DATASETS`` (JSON role → path) and ``AICLOUD_DATASET_<ROLE>``."""
    environ["AICLOUD_DATASETS"] = json.dumps({role: str(p) for role, p in paths.items()})
    for role, path in paths.items():
        environ[f"AICLOUD_DATASET_{role.upper()}"] = str(path)


def download_blob(sess: Session, digest: str, path: Path) -> None:
    """Download a blob and check its sha256 against the digest."""
    _, sha = sess.client.blobs.fetch(digest, path)
    if sha != digest:
        raise DataCorruptedError(f"the code archive does not match its digest {digest}")


# -----------------------------------------------------------------------------------------------------
# the two kinds of job


class JobCheckpoints:
    """The built-in loop's checkpoints, kept by the control plane as the job's latest checkpoint."""

    def __init__(self, sess: Session) -> None:
        self.sess = sess

    def save(self, state: dict[str, Any], epoch: int, extra: dict[str, Any]) -> None:
        record = self.sess.save_checkpoint(state, epoch=epoch, step=epoch, extra=extra)
        log(f"checkpoint after epoch {epoch} ({record.get('size', '?')} bytes)")

    def latest(self) -> Checkpoint | None:
        ckpt = self.sess.load_checkpoint(restore_rng=False)  # the loop restores each worker's generator
        if ckpt is not None:
            log(f"attempt {self.sess.env.attempt}: resuming from the checkpoint of epoch {ckpt.epoch}")
        else:
            log(f"attempt {self.sess.env.attempt}: no checkpoint yet; starting from the beginning")
        return ckpt


def run_train(sess: Session, env: WorkloadEnv, paths: dict[str, Path], output: Path) -> int:
    if env.chief:
        sess.start_system_metrics()  # before torch's import, which takes seconds
    from aicloud.training.tasks import run_task

    spec = TrainSpec.model_validate(env.job.spec)
    if "train" not in paths:
        raise ValidationError.field("spec.dataset", "no training dataset was resolved for this job")
    if env.chief and env.attempt == 0:
        refs = {r: f"{i['name']}:{i['version']}" for r, i in _dataset_refs(sess, env.job).items()}
        sess.log_params(
            {
                **spec.params.model_dump(),
                "task": spec.task,
                "target": spec.target,
                "dataset": refs.get("train", spec.dataset),
                "eval_dataset": refs.get("eval", spec.eval_dataset),
                "workers": spec.workers,
                "precision": spec.precision,
            }
        )
    checkpoints = JobCheckpoints(sess)
    resume = checkpoints.latest() if env.attempt > 0 else None
    result = run_task(
        spec,
        paths["train"],
        paths.get("eval"),
        output,
        tracker=sess,
        rank=env.rank,
        world_size=env.world_size,
        checkpoints=checkpoints if spec.checkpoint_interval > 0 else None,
        resume=resume,
    )
    sess.flush()
    if env.chief and result.model_dir is not None:
        name = spec.model_name or env.job.name or "model"
        sess.register_model(result.model_dir, name=name, metrics=result.metrics)
    return 0


def mlflow_env(env: WorkloadEnv) -> dict[str, str]:
    """An MLflow script runs unchanged in a job: its tracking URI and token are the control plane's
    MLflow tracking API and the job's token (docs/mlflow.md). The spec's ``env`` may override them."""
    if not env.url or not env.token:
        return {}
    return {"MLFLOW_TRACKING_URI": env.url.rstrip("/") + "/mlflow", "MLFLOW_TRACKING_TOKEN": env.token}


def keras_env(child_env: dict[str, str], workdir: Path) -> None:
    """Keras in a command (docs/keras.md): ``KERAS_BACKEND`` defaults to torch, and autolog is on
    through a ``sitecustomize.py`` first on ``PYTHONPATH`` (the one already there still runs),
    unless the job's env sets ``AICLOUD_AUTOLOG=0``."""
    from aicloud.training import keras_site
    from aicloud.training.keras import autolog_enabled, default_backend

    default_backend(child_env)
    if not autolog_enabled(child_env):
        return
    site = workdir / ".aicloud-site"
    site.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keras_site.__file__, site / "sitecustomize.py")
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), child_env.get("PYTHONPATH")]))


def run_command(sess: Session, env: WorkloadEnv, workdir: Path, output: Path) -> tuple[int, str]:
    """Run the user's command; returns (exit code, run status)."""
    spec = CommandSpec.model_validate(env.job.spec)
    code_dir = workdir / "code"
    code_dir.mkdir(parents=True, exist_ok=True)
    if spec.code:
        archive = workdir / "code.tar.gz"
        download_blob(sess, spec.code, archive)
        count = extract_archive(archive, code_dir)
        archive.unlink()
        log(f"code: {count} files from blob {spec.code[:12]} → {code_dir}")
    child_env = dict(os.environ)
    child_env.update(mlflow_env(env))
    child_env.update(spec.env)
    child_env.update(param_env(spec.params))  # a sweep trial's params (training/params.py)
    child_env["AICLOUD_OUTPUT_DIR"] = str(output)
    keras_env(child_env, workdir)
    log(f"$ {spec.command}")
    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.Popen(["/bin/sh", "-c", spec.command], cwd=code_dir, env=child_env)
    forwarded: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        forwarded.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        sess.start_system_metrics(pid=proc.pid)
        rc = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    code = rc if rc >= 0 else 128 - rc
    log(f"command exited with code {code}")
    if forwarded:  # cancelled: however the command ended
        return code, "cancelled"
    return code, "succeeded" if rc == 0 else "failed"


# -----------------------------------------------------------------------------------------------------

#: The job kinds run by a function of their own module (imported only by a job of that kind, so that
#: a command job never imports torch or Keras): kind → ``module:function(sess, env, paths, output)``,
#: which returns the exit code.
RUNNERS: dict[str, str] = {
    "finetune": "aicloud.training.finetune:run_finetune",
    "keras": "aicloud.training.keras_job:run_keras",
    "evaluate": "aicloud.training.evaluate:run_evaluate",
    "batch_predict": "aicloud.training.batch_predict:run_batch_predict",
}


def runner(kind: str) -> Callable[[Session, WorkloadEnv, dict[str, Path], Path], int]:
    """The function that runs a job of ``kind`` (one of :data:`RUNNERS`)."""
    module, _, name = RUNNERS[kind].partition(":")
    return cast(
        Callable[[Session, WorkloadEnv, dict[str, Path], Path], int],
        getattr(importlib.import_module(module), name),
    )


def main() -> int:
    workdir = Path.cwd()
    try:
        env = WorkloadEnv.from_environ()
        if env.rank > 0:  # each worker downloads and unpacks into a folder of its own
            workdir = workdir / f"rank{env.rank}"
            workdir.mkdir(parents=True, exist_ok=True)
            os.chdir(workdir)
        sess = Session(env, workdir=workdir)
    except Exception:
        traceback.print_exc()
        return 1
    use_session(sess)
    status, code = "failed", 1

    def cancel(signum: int, frame: FrameType | None) -> None:
        raise Cancelled()

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        log(f"job {env.job_id} ({env.job.kind} {env.job.name!r}), run {env.run_id}")
        if env.world_size > 1:
            log(f"worker rank {env.rank} of {env.world_size}")
        output = env.output_dir if env.output_dir is not None and env.chief else workdir / "output"
        output.mkdir(parents=True, exist_ok=True)
        os.environ["AICLOUD_OUTPUT_DIR"] = str(output)
        paths = download_datasets(sess, env.job, workdir / "data")
        expose_datasets(paths)
        if env.job.kind == "train":
            code = run_train(sess, env, paths, output)
            status = "succeeded"
        elif env.job.kind == "command":  # SIGTERM: Cancelled until the command starts, then forwarded
            code, status = run_command(sess, env, workdir, output)
        elif env.job.kind in RUNNERS:
            code = runner(env.job.kind)(sess, env, paths, output)
            status = "succeeded"
        else:
            raise ValidationError.field(
                "kind",
                f"unknown job kind {env.job.kind!r}; expected train, command or {', '.join(RUNNERS)}",
            )
    except Cancelled:
        log("cancelled (SIGTERM)")
        status, code = "cancelled", 128 + signal.SIGTERM
    except (Exception, KeyboardInterrupt):
        traceback.print_exc()
        sys.stderr.flush()
        status, code = "failed", 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        # a job that may be restarted keeps its run open; the control plane closes it at the very end
        final = status if status == "succeeded" or env.restarts_left == 0 else None
        try:
            sess.finish(final)
        except Exception as exc:
            print(f"[aicloud] warning: could not finish the run: {exc}", file=sys.stderr, flush=True)
        use_session(None)
    return code


if __name__ == "__main__":
    sys.exit(main())

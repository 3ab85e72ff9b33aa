"""Run artifacts for the MLflow tracking API (docs/mlflow.md): where a proxy path points, and
the rules for storing, listing, reading and deleting a run's files.

A path is ``<experiment id>/<run id>/artifacts/<file path>``; the experiment id is MLflow's and
only the run decides where the file goes. File paths are relative, ``/``-separated, without
``.``, ``..`` or empty parts, at most 1024 characters: anything else is refused (400) before a
byte is stored. Files are blobs (encrypted at rest) referenced by their run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aicloud.auth import Principal
from aicloud.entities import Run, RunArtifact
from aicloud.errors import BadRequestError, NotFoundError
from aicloud.server.services.mlflow import RunViews, check_id, get_run, writable_run
from aicloud.server.state import AppState

MAX_PATH_CHARS = 1024


@dataclass(frozen=True)
class Located:
    run_id: str
    path: str  # relative to the run's artifact root; "" is the root


def check_path(path: str, *, folder: bool) -> str:
    if len(path) > MAX_PATH_CHARS:
        raise BadRequestError(f"artifact paths are at most {MAX_PATH_CHARS} characters")
    if not path:
        if folder:
            return ""
        raise BadRequestError("the artifact path names no file")
    if path.startswith("/") or "\\" in path or "\x00" in path or path.endswith("/"):
        raise BadRequestError(f"invalid artifact path {path!r}: relative, '/'-separated, naming a file")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise BadRequestError(f"invalid artifact path {path!r}: no '.', '..' or empty parts")
    return path


def locate(path: str, *, folder: bool = False) -> Located:
    """The run and file a proxy path names (``<experiment>/<run>/artifacts/<path>``)."""
    parts = path.strip("/").split("/", 3) if folder else path.split("/", 3)
    if len(parts) < 3 or parts[2] != "artifacts":
        raise BadRequestError(
            f"invalid artifact path {path!r}: expected <experiment id>/<run id>/artifacts/<path>"
        )
    check_id(parts[0], "the experiment id")
    run_id = check_id(parts[1], "the run id")
    return Located(run_id, check_path(parts[3] if len(parts) == 4 else "", folder=folder))


def find_run(state: AppState, principal: Principal, located: Located) -> Run:
    return get_run(state, principal, located.run_id)


def experiment_of(state: AppState, principal: Principal, run: Run) -> str:
    return RunViews(state, principal.workspace.id).experiment_id(run)


def writable(state: AppState, principal: Principal, located: Located) -> Run:
    run = writable_run(state, principal, located.run_id)
    if run.deleted:
        raise BadRequestError(f"run {run.id} is deleted: restore it before logging to it")
    return run


def record(state: AppState, principal: Principal, located: Located, digest: str, size: int) -> None:
    """Make the stored blob the run's file at the path; free the blob it replaced if nothing
    else holds it."""
    workspace_id = principal.workspace.id
    tracking = state.store.tracking
    try:
        before = state.keep_blob(
            digest, lambda: tracking.put_artifact(workspace_id, located.run_id, located.path, digest, size)
        )
    except BaseException:
        # refused (a file/folder clash, a run deleted meanwhile): the bytes just stored go unless held
        state.drop_blobs(lambda: [] if state.store.blob_refs.in_use(digest) else [digest])
        raise
    if before is not None:
        state.drop_blobs(lambda: tracking.release_artifact(workspace_id, located.run_id, before))


def find(state: AppState, principal: Principal, located: Located) -> RunArtifact:
    for artifact in state.store.tracking.artifacts(principal.workspace.id, located.run_id, located.path):
        if artifact.path == located.path:
            return artifact
    raise NotFoundError(
        f"run {located.run_id} has no artifact {located.path!r}", details={"kind": "artifact"}
    )


def listing(state: AppState, principal: Principal, located: Located) -> list[dict[str, Any]]:
    """MLflow's FileInfo of each file and folder directly in the folder (names relative to it);
    empty for a file or a folder that holds nothing."""
    files = state.store.tracking.artifacts(principal.workspace.id, located.run_id, located.path)
    start = len(located.path) + 1 if located.path else 0
    entries: dict[str, dict[str, Any]] = {}
    for artifact in files:
        if artifact.path == located.path:
            continue  # the path is a file: MLflow lists nothing
        name, below, _ = artifact.path[start:].partition("/")
        if below:
            entries.setdefault(name, {"path": name, "is_dir": True})
        else:
            entries[name] = {"path": name, "is_dir": False, "file_size": artifact.size}
    return [entries[name] for name in sorted(entries)]


def delete(state: AppState, principal: Principal, located: Located) -> None:
    run = writable(state, principal, located)
    if not located.path:
        raise BadRequestError("name the file or folder to delete")
    state.drop_blobs(
        lambda: state.store.tracking.delete_artifacts(principal.workspace.id, run.id, located.path)
    )

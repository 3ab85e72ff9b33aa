"""The model zoo behind ``/api/v1/zoo`` (docs/zoo.md): the catalog, and pulling an entry into the zoo's
system workspace, whose versions every workspace reads as ``zoo/<entry>`` and none writes.

Pulling registers an entry once for the whole server, so it takes a server admin (an admin token of
the ``default`` workspace). A ``files`` entry's shipped folder is stored as it is; a ``convert`` entry
(MiniLM) is made by the compression worker in the workload sandbox (it imports torch and
transformers; the control plane does not), and registered only once the worker answered. A pull of an
entry pulled already (same entry revision) returns the version it has.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aicloud.artifacts.format import CONFIG, read_config
from aicloud.auth import Principal
from aicloud.compression.runner import run_worker
from aicloud.entities import ModelVersion
from aicloud.entities.core import ZOO_REF_PREFIX, ZOO_WORKSPACE_ID, ZOO_WORKSPACE_NAME
from aicloud.errors import ConflictError, NotFoundError, PermissionDeniedError
from aicloud.schemas.jobs import ModelVersionOut
from aicloud.schemas.zoo import ZooEntryOut, ZooPullOut
from aicloud.server.services.tokens import require_server_admin
from aicloud.server.state import AppState
from aicloud.zoo.catalog import Entry, get_entry, load_catalog, require_installed

__all__ = ["entry_out", "list_entries", "pull_entry", "pulled_version"]

#: the MiniLM conversion imports torch and exports a 90 MB graph: minutes on a busy machine
PULL_TIMEOUT_S = 900.0
_pulling = threading.Lock()  # one pull at a time in this process: a second waits, then finds it pulled


def ensure_zoo_workspace(state: AppState) -> None:
    try:
        state.store.workspaces.get(ZOO_WORKSPACE_ID)
    except NotFoundError:
        with contextlib.suppress(ConflictError):  # another server process made it
            state.store.workspaces.create(ZOO_WORKSPACE_NAME, workspace_id=ZOO_WORKSPACE_ID)


def pulled_version(state: AppState, entry: Entry) -> ModelVersion | None:
    """The zoo's newest version of ``entry`` made from this revision of it, if pulled."""
    try:
        versions = state.store.models.list_versions(ZOO_WORKSPACE_ID, entry.name, newest_first=True, limit=50)
    except NotFoundError:
        return None
    for v in versions:
        if (v.lineage.get("zoo") or {}).get("version") == entry.version:
            return v
    return None


def entry_out(state: AppState, entry: Entry) -> ZooEntryOut:
    raw = entry.to_dict()
    missing = entry.missing()
    version = pulled_version(state, entry)
    size = raw["size_bytes"]
    if version is not None:
        size = sum(state.blobs.size(d) for d in version.files.values() if state.blobs.exists(d))
    return ZooEntryOut(
        name=entry.name,
        ref=ZOO_REF_PREFIX + entry.name,
        title=entry.title,
        task=entry.task,
        summary=entry.summary,
        use=entry.use,
        source=entry.source,
        licence=entry.licence,
        version=entry.version,
        requires=raw["requires"],
        installed=not missing,
        install=sorted({r.pip for r in missing}),
        signature=entry.signature,
        metrics=entry.metrics,
        notes=entry.notes,
        size_bytes=size,
        pulled=version is not None,
        model_version=ModelVersionOut.model_validate(version) if version is not None else None,
    )


def list_entries(state: AppState) -> list[ZooEntryOut]:
    return [entry_out(state, e) for e in load_catalog().values()]


def show_entry(state: AppState, name: str) -> ZooEntryOut:
    return entry_out(state, get_entry(name))


def _build(state: AppState, entry: Entry, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The entry's model folder (and the conversion's check)."""
    if entry.build["kind"] == "convert":
        request = {"op": "zoo", "entry": entry.to_dict(), "out": str(workdir / "out")}
        check = run_worker(request, workdir, state.compress_confine, timeout_s=PULL_TIMEOUT_S)
        return workdir / "out", dict(check or {})
    folder = entry.files_folder()
    if folder is None or not (folder / CONFIG).is_file():
        raise NotFoundError(
            f"zoo entry {entry.name!r}: its files are not installed on the server ({folder})",
            details={"kind": "zoo files", "name": entry.name},
        )
    return folder, {}


def _register(state: AppState, entry: Entry, folder: Path, check: dict[str, Any]) -> ModelVersion:
    config = read_config(folder)
    files: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file():
            writer = state.blobs.writer()
            try:
                with open(path, "rb") as src:
                    while chunk := src.read(4 << 20):
                        writer.write(chunk)
                files[path.name] = writer.commit().digest
            except BaseException:
                writer.abort()
                raise
    metrics = {k: float(v) for k, v in entry.metrics.items() if isinstance(v, (int, float))}
    zoo: dict[str, Any] = {
        "entry": entry.name,
        "version": entry.version,
        "source": entry.source,
        "licence": entry.licence,
    }
    if check:
        zoo["check"] = check
    lineage: dict[str, Any] = {
        "job_id": None,
        "run_id": None,
        "datasets": [],
        "code_digest": None,
        "task": entry.task,
        "zoo": zoo,
    }
    with state.blob_lock:  # as AppState.keep_blob, for every file
        if not all(state.blobs.exists(d) for d in files.values()):
            raise ConflictError("a stored file was removed by a concurrent delete; try again")
        return state.store.models.create_version(
            workspace_id=ZOO_WORKSPACE_ID,
            name=entry.name,
            files=files,
            signature=dict(config.get("signature") or {}),
            config=config,
            metrics=metrics,
            lineage=lineage,
        )


def pull_entry(state: AppState, principal: Principal, name: str) -> ZooPullOut:
    """Register ``name`` in the zoo (a server admin only); a no-op when it is there already."""
    try:
        require_server_admin(principal)
    except PermissionDeniedError as exc:
        raise PermissionDeniedError(
            f"pulling registers a zoo entry for every workspace: {exc.message}", details=exc.details
        ) from None
    entry = get_entry(name)
    with _pulling:
        existing = pulled_version(state, entry)
        if existing is not None:
            return ZooPullOut(entry=entry_out(state, entry), created=False)
        require_installed(entry)
        ensure_zoo_workspace(state)
        started = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="aicloud-zoo-"))
        try:
            folder, check = _build(state, entry, workdir)
            _register(state, entry, folder, check)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        seconds = time.monotonic() - started
    return ZooPullOut(entry=entry_out(state, entry), created=True, seconds=round(seconds, 3), check=check)

"""Datasets beyond HTTP: a stored upload profiled into a version, splits, deletes, previews.

Uploaded files are never parsed here: their format is detected from the name and first bytes,
and profiles and splits run in the parser pool's worker processes (``AppState.parsers``,
:mod:`aicloud.data.isolation`). The blob is stored before its version row is written, under
``AppState.keep_blob``, so a concurrent delete of the same bytes is a conflict, never a
dangling reference.
"""

from __future__ import annotations

import functools
import posixpath
from typing import Any

from aicloud import data
from aicloud.blobs import BlobInfo
from aicloud.entities import DatasetVersion
from aicloud.errors import AicloudError
from aicloud.schemas import SplitRequest
from aicloud.server.state import AppState

__all__ = ["clean_filename", "delete_dataset", "ingest_upload", "split_version"]


def clean_filename(name: str) -> str:
    """Keep only a harmless base name: the file name is metadata, never a path."""
    base = posixpath.basename(name.replace("\\", "/")).strip().lstrip(".")
    return "".join(c for c in base if c.isprintable())[:200] or "upload"


def _discard(state: AppState, digest: str) -> None:
    """Remove a blob stored for an upload that failed, unless any reference holds the same bytes."""
    state.drop_blobs(lambda: [] if state.store.blob_refs.in_use(digest) else [digest])


def ingest_upload(
    state: AppState,
    workspace_id: str,
    name: str,
    blob: BlobInfo,
    filename: str,
    declared: str | None,
    lineage: dict[str, Any] | None = None,
) -> DatasetVersion:
    """The stored upload ``blob`` as the next version of dataset ``name``: its format (``declared``,
    else from ``filename`` and the first bytes) and profile (in a worker process). A file that does
    not parse is refused (4xx) and its blob removed."""
    digest = blob.digest
    filename = clean_filename(filename)
    try:
        with state.blobs.open(digest) as f:
            fmt = data.detect_format(filename, f.read(512), declared)
            f.seek(0)
            prof = state.parsers.profile(fmt, f, size=blob.size)  # in a worker process
    except AicloudError:
        _discard(state, digest)
        raise
    return state.keep_blob(
        digest,
        lambda: state.store.datasets.create_version(
            workspace_id=workspace_id,
            name=name,
            format=fmt,
            filename=filename,
            blob_digest=digest,
            size_bytes=blob.size,
            num_rows=prof.num_rows,
            schema=prof.schema,
            stats=prof.stats,
            lineage=lineage or {"source": "upload"},
        ),
    )


def split_version(
    state: AppState, workspace_id: str, parent: DatasetVersion, body: SplitRequest
) -> dict[str, DatasetVersion]:
    """Split ``parent`` into new versions of ``<name>-train`` and ``<name>-test`` (keys ``train`` and
    ``test``), deterministic for a seed, each with its profile and lineage to the parent."""
    # The split and the profiles of its parts run in one worker process; the parts come back through
    # its pipe and are encrypted here.
    with state.parsers.session() as parser:
        with (
            state.blobs.open(parent.blob_digest) as f,
            state.blobs.writer() as w_train,
            state.blobs.writer() as w_test,
        ):
            parser.split(
                parent.format,
                f,
                w_train,
                w_test,
                train_size=body.train_size,
                seed=body.seed,
                stratify=body.stratify,
                size=parent.size_bytes,
            )
            blobs = {"train": w_train.commit(), "test": w_test.commit()}
        profiles: dict[str, data.Profile] = {}
        for part, info in blobs.items():
            with state.blobs.open(info.digest) as f:
                profiles[part] = parser.profile(parent.format, f, size=info.size)
    out: dict[str, DatasetVersion] = {}
    params = body.model_dump()
    for part, info in blobs.items():
        prof = profiles[part]
        out[part] = state.keep_blob(
            info.digest,
            functools.partial(
                state.store.datasets.create_version,
                workspace_id=workspace_id,
                name=f"{parent.name}-{part}",
                format=parent.format,
                filename=f"{parent.name}-v{parent.version}-{part}.{parent.format}",
                blob_digest=info.digest,
                size_bytes=info.size,
                num_rows=prof.num_rows,
                schema=prof.schema,
                stats=prof.stats,
                lineage={
                    "source": "split",
                    "parent": {"id": parent.id, "name": parent.name, "version": parent.version},
                    "part": part,
                    "params": params,
                },
            ),
        )
    return out


def delete_dataset(state: AppState, workspace_id: str, name: str) -> None:
    """Delete a dataset with all its versions (and their cached answers); a stored file is removed
    only when no reference of any kind, in any workspace, holds it any more."""
    state.drop_blobs(lambda: state.store.datasets.delete_dataset(workspace_id, name))
    state.versions.discard_where(lambda key, _: key[:2] == (workspace_id, name))


def preview_version(state: AppState, version: DatasetVersion, rows: int = 20) -> dict[str, Any]:
    """The first ``rows`` rows of a stored version (``{"columns", "rows"}``), read in a parser
    worker and never stored (the console's dataset page)."""
    with state.blobs.open(version.blob_digest) as f:
        return state.parsers.preview(version.format, f, rows, size=version.size_bytes)

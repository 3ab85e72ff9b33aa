"""Monitoring beyond HTTP: drift reports between two stored dataset versions.

The two files are never parsed here: they go to one parser worker (:mod:`aicloud.data.isolation`)
back to back, as one file the worker reads in ranges, and it answers with the report of
:func:`aicloud.data.drift.drift_report`. Prediction logging, alert rules and the retrain trigger of
issue #24 build on the report's ``drift_score``.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, BinaryIO

from aicloud.data.seekable import SeekableReader
from aicloud.entities import DatasetVersion
from aicloud.errors import NotFoundError, ValidationError
from aicloud.schemas.monitoring import DriftReport, DriftRequest
from aicloud.server.services.names import check_name, parse_version
from aicloud.server.state import AppState

__all__ = ["drift_report"]


class _Joined(SeekableReader):
    """Two seekable files read as one, the first's bytes then the second's."""

    def __init__(self, first: BinaryIO, first_size: int, second: BinaryIO, second_size: int) -> None:
        super().__init__(first_size + second_size)
        self._parts = ((first, 0, first_size), (second, first_size, second_size))

    def read(self, size: int = -1) -> bytes:
        """At most ``size`` bytes, never across the two files (callers loop for full reads)."""
        for f, start, length in self._parts:
            if start <= self._pos < start + length:
                want = start + length - self._pos if size is None or size < 0 else size
                f.seek(self._pos - start)
                data = f.read(min(want, start + length - self._pos))
                self._pos += len(data)
                return data
        return b""


def _dataset(state: AppState, workspace_id: str, ref: str, field: str) -> DatasetVersion:
    name, _, version = ref.partition(":")
    try:
        return state.store.datasets.get_version(
            workspace_id, check_name(name, field), parse_version(version or "latest")
        )
    except NotFoundError as exc:
        problem = f"dataset {ref!r}: {exc.message}"
        raise NotFoundError(f"{field}: {problem}", details=[{"field": field, "message": problem}]) from None
    except ValidationError as exc:
        raise ValidationError.field(field, f"dataset {ref!r}: {exc.message}") from None


def _side(v: DatasetVersion) -> dict[str, Any]:
    return {"name": v.name, "version": v.version, "id": v.id}


def drift_report(state: AppState, workspace_id: str, body: DriftRequest) -> DriftReport:
    """The drift of ``body.current`` against ``body.reference`` (both of this workspace), computed in
    a parser worker under its limits. An unknown dataset (or one of another workspace) is a 404
    naming the field."""
    ref = _dataset(state, workspace_id, body.reference, "reference")
    cur = _dataset(state, workspace_id, body.current, "current")
    job = {"ref_fmt": ref.format, "ref_size": ref.size_bytes, "fmt": cur.format, "threshold": body.threshold}
    if body.columns is not None:
        job["columns"] = body.columns
    with ExitStack() as stack:
        f_ref = stack.enter_context(state.blobs.open(ref.blob_digest))
        f_cur = stack.enter_context(state.blobs.open(cur.blob_digest))
        joined = _Joined(f_ref, ref.size_bytes, f_cur, cur.size_bytes)
        with state.parsers.session() as parser:
            result = parser.drift(job, joined, ref.size_bytes + cur.size_bytes)  # type: ignore[arg-type]
    return DriftReport.model_validate({**result, "reference": _side(ref), "current": _side(cur)})

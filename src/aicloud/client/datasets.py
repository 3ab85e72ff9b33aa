"""Datasets in the SDK: upload files as versions, split them, download them back."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload
from urllib.parse import quote

from aicloud.client.progress import Advance, transfer_bar
from aicloud.errors import DataCorruptedError, ValidationError
from aicloud.schemas import DatasetSummaryOut, DatasetVersionOut, SplitResponse

if TYPE_CHECKING:
    from aicloud.client.http import Transport

CHUNK = 1024 * 1024
DATASETS = "/api/v1/datasets"


def _versions(name: str) -> str:
    return f"{DATASETS}/{name}/versions"


@dataclass
class DatasetVersion:
    """One immutable version of a dataset, as the server recorded it."""

    id: str
    name: str
    version: int
    format: str
    filename: str
    sha256: str
    size_bytes: int
    num_rows: int
    schema: list[dict[str, Any]]
    stats: dict[str, dict[str, Any]]
    lineage: dict[str, Any]
    created_at: datetime
    _api: DatasetsAPI = field(repr=False, compare=False)

    @classmethod
    def _from_wire(cls, api: DatasetsAPI, out: DatasetVersionOut) -> DatasetVersion:
        return cls(_api=api, **{k: getattr(out, k) for k in _FIELDS}, schema=out.schema_)

    @property
    def ref(self) -> str:
        """``name:version``, how specs and the CLI name a version."""
        return f"{self.name}:{self.version}"

    def split(
        self, train_size: float = 0.8, seed: int = 0, stratify: str | None = None
    ) -> tuple[DatasetVersion, DatasetVersion]:
        """Split into new versions of ``<name>-train`` and ``<name>-test``; same seed, same split."""
        return self._api.split(self.name, self.version, train_size=train_size, seed=seed, stratify=stratify)

    def download(self, path: str | os.PathLike[str], progress: bool = False) -> Path:
        """Write the file to ``path`` (a folder gets the original file name); checks the sha256."""
        return self._api.download(self.name, path, version=self.version, progress=progress)


_FIELDS = [f for f in DatasetVersion.__dataclass_fields__ if f not in {"_api", "schema"}]


def _multipart(
    path: Path, filename: str, fields: dict[str, str], advance: Advance
) -> tuple[str, int, Iterator[bytes]]:
    """A streamed multipart/form-data body with a known length: fields, then the ``file`` part."""
    boundary = "aicloud-" + secrets.token_hex(16)
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + path.stat().st_size + len(tail)

    def body() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                advance(len(chunk))
                yield chunk
        yield tail

    return f"multipart/form-data; boundary={boundary}", length, body()


class DatasetsAPI:
    """``client.datasets``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def _version(self, payload: Any) -> DatasetVersion:
        return DatasetVersion._from_wire(self, DatasetVersionOut.model_validate(payload))

    @overload
    def create(
        self,
        name: str,
        path: str | os.PathLike[str],
        format: str | None = None,
        progress: bool = False,
    ) -> DatasetVersion: ...

    @overload
    def create(
        self,
        name: str,
        path: None = None,
        format: str | None = None,
        progress: bool = False,
        *,
        files: Sequence[str | os.PathLike[str]],
    ) -> dict[str, DatasetVersion]: ...

    def create(
        self,
        name: str,
        path: str | os.PathLike[str] | None = None,
        format: str | None = None,
        progress: bool = False,
        *,
        files: Sequence[str | os.PathLike[str]] | None = None,
    ) -> DatasetVersion | dict[str, DatasetVersion]:
        """Upload ``path`` as the next version of dataset ``name`` (CSV, Parquet, NPZ or JSON Lines).

        With ``files=[...]`` instead, each file becomes the next version of ``<name>-<stem>``
        (``train.csv`` → ``<name>-train``, as splits name theirs); returns stem → DatasetVersion."""
        if files is not None:
            if path is not None:
                raise ValidationError.field("files", "give a path or files, not both")
            return self._create_many(name, [Path(f) for f in files], format, progress)
        if path is None:
            raise ValidationError.field("path", "a file to upload (or files=[...])")
        path = Path(path)
        fields = {"format": format} if format else {}
        with transfer_bar(f"upload {path.name}", path.stat().st_size, progress) as advance:
            ctype, length, body = _multipart(path, path.name, fields, advance)
            payload = self._t.json(
                "POST",
                _versions(name),
                content=body,
                headers={"Content-Type": ctype, "Content-Length": str(length)},
                timeout=None,
            )
        return self._version(payload)

    def _create_many(
        self, name: str, files: list[Path], format: str | None, progress: bool
    ) -> dict[str, DatasetVersion]:
        stems = [f.name.split(".")[0] for f in files]
        if not files or len(set(stems)) != len(stems) or not all(stems):
            raise ValidationError.field("files", f"one file or more, each of a stem of its own: {stems}")
        missing = [str(f) for f in files if not f.is_file()]
        if missing:  # before any upload: nothing half-written
            raise ValidationError.field("files", f"no such file(s): {', '.join(missing)}")
        return {
            stem: self.create(f"{name}-{stem}", f, format=format, progress=progress)
            for stem, f in zip(stems, files, strict=True)
        }

    upload = create

    def get(self, name: str, version: int | None = None) -> DatasetVersion:
        """A version of ``name``; the latest when ``version`` is None."""
        return self._version(self._t.json("GET", f"{_versions(name)}/{version or 'latest'}"))

    def versions(
        self, name: str, *, offset: int = 0, limit: int = 1000, newest_first: bool = False
    ) -> list[DatasetVersion]:
        """A dataset's versions, oldest first (or newest first): ``limit`` (up to 1,000) after ``offset``."""
        params = {"offset": offset, "limit": limit, "newest_first": newest_first}
        return [self._version(v) for v in self._t.json("GET", _versions(name), params=params)]

    def split(
        self,
        name: str,
        version: int | None = None,
        *,
        train_size: float = 0.8,
        seed: int = 0,
        stratify: str | None = None,
    ) -> tuple[DatasetVersion, DatasetVersion]:
        body = {"train_size": train_size, "seed": seed, "stratify": stratify}
        payload = self._t.json("POST", f"{_versions(name)}/{version or 'latest'}/split", json=body)
        out = SplitResponse.model_validate(payload)
        return DatasetVersion._from_wire(self, out.train), DatasetVersion._from_wire(self, out.test)

    def delete(self, name: str) -> None:
        self._t.request("DELETE", f"{DATASETS}/{name}")

    def download(
        self, name: str, path: str | os.PathLike[str], version: int | None = None, progress: bool = False
    ) -> Path:
        """Stream a version to ``path`` via a temporary file; the sha256 is checked before the rename."""
        target = Path(path)
        with self._t.stream(
            "GET", f"{_versions(name)}/{version or 'latest'}/content", timeout=None
        ) as response:
            if target.is_dir():
                disposition = response.headers.get("content-disposition", "")
                target = target / (disposition.partition('filename="')[2].rstrip('"') or name)
            expected = response.headers.get("x-aicloud-sha256", "")
            total = int(response.headers.get("content-length", "0")) or None
            tmp = target.with_name(f".{target.name}.part{os.getpid()}")
            digest = hashlib.sha256()
            try:
                with (
                    open(tmp, "wb") as f,
                    transfer_bar(f"download {target.name}", total, progress) as advance,
                ):
                    for chunk in response.iter_bytes(CHUNK):
                        f.write(chunk)
                        digest.update(chunk)
                        advance(len(chunk))
                if expected and digest.hexdigest() != expected:
                    raise DataCorruptedError(f"download of {name} does not match its sha256 {expected}")
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return target

    def list(self, *, offset: int = 0, limit: int = 100) -> list[DatasetSummaryOut]:
        """Datasets, newest first: ``limit`` (up to 1,000) after ``offset``."""
        params = {"offset": offset, "limit": limit}
        return [DatasetSummaryOut.model_validate(d) for d in self._t.json("GET", DATASETS, params=params)]

    def resolve(self, ref: str) -> DatasetVersion:
        """The version a job spec's ``name:version`` (or ``name``: the latest) names."""
        name, _, version = ref.partition(":")
        return self._version(self._t.json("GET", f"{_versions(quote(name, safe=''))}/{version or 'latest'}"))

    def fetch(self, name: str, version: int | str, dest: Path) -> tuple[int, str]:
        """Stream a version's file into ``dest`` as it arrives, under the transport's timeout and retry
        policy (no temporary file, no sha256 check: see :meth:`download` for those); returns
        (bytes, sha256 hex)."""
        return self._t.download(f"{_versions(quote(name, safe=''))}/{version}/content", dest)

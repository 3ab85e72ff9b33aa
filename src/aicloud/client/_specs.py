"""What the job, sweep and deployment APIs put in a request, and the job states that end a wait.

The one home of these helpers: :mod:`aicloud.client.jobs`, :mod:`aicloud.client.sweeps` and
:mod:`aicloud.client.deployments` import them from here (none imports another's private names).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path
from typing import Any

from aicloud.errors import ValidationError

__all__ = ["TERMINAL", "dataset_ref", "pack_code"]

#: A job (or sweep) in one of these states has ended.
TERMINAL = {"succeeded", "failed", "cancelled"}


def dataset_ref(value: Any) -> str:
    """A DatasetVersion, or ``name`` / ``name:version`` text."""
    if hasattr(value, "ref"):
        return str(value.ref)
    return str(value)


def pack_code(path: str | os.PathLike[str]) -> bytes:
    """A file or a folder as a .tar.gz (paths relative to it; caches and VCS folders left out)."""
    root = Path(path)
    if not root.exists():
        raise ValidationError.field("code", f"{root} does not exist; give the file or folder of your code")
    buf = io.BytesIO()
    skip = {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache"}
    # gzip's header time is fixed, so unchanged files pack to the same blob (an idempotent apply)
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        if root.is_file():
            tar.add(root, arcname=root.name)
        else:
            for p in sorted(root.rglob("*")):
                if p.is_file() and not p.is_symlink() and not (set(p.relative_to(root).parts) & skip):
                    tar.add(p, arcname=str(p.relative_to(root)))
    return buf.getvalue()

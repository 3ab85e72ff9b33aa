"""Code-archive extraction: the one safe way a ``.tar`` / ``.tar.gz`` of user code (a command job's code,
a Service's code) becomes a folder. Absolute paths, ``..`` and links leaving the folder are refused.
"""

from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path

from aicloud.errors import InvalidDataError


def _refuse(name: str, why: str) -> InvalidDataError:
    return InvalidDataError(f"refusing to extract {name!r} from the code archive: {why}")


def _escapes(path: str) -> bool:
    norm = posixpath.normpath(path)
    return norm == ".." or norm.startswith("../")


def extract_archive(archive: Path, dest: Path) -> int:
    """Extract a ``.tar`` / ``.tar.gz`` into ``dest`` safely; returns the number of members.

    Refuses absolute paths, ``..`` components, and links pointing outside ``dest`` (explicitly, with a
    message naming the member), then extracts with tarfile's ``data`` filter (no devices, no setuid,
    nothing outside the destination).
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                name = m.name.replace("\\", "/")
                if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
                    raise _refuse(m.name, "absolute path")
                if ".." in name.split("/"):
                    raise _refuse(m.name, "'..' in the path")
                if m.issym():
                    target = m.linkname.replace("\\", "/")
                    if target.startswith("/") or _escapes(posixpath.join(posixpath.dirname(name), target)):
                        raise _refuse(m.name, f"a link to {m.linkname!r}, outside the archive")
                if m.islnk() and (m.linkname.startswith("/") or _escapes(m.linkname)):
                    raise _refuse(m.name, f"a hard link to {m.linkname!r}, outside the archive")
            tar.extractall(dest, members=members, filter="data")
            return len(members)
    except tarfile.TarError as exc:
        raise InvalidDataError(f"the code archive cannot be extracted: {exc}") from None

"""``$AICLOUD_HOME`` is private to the control plane's user: the folder 0700, and the files that hold
keys, tokens or metadata 0600 (the SQLite database and its ``-wal``/``-shm`` files, ``master.key``,
``credentials``, the server log and pid file).

A new home and database are created with these modes; an existing home with wider ones is tightened
at start (with a warning saying what changed), or, when this user does not own the path, left as it
is with a warning. The blob store and the executors create their own folders 0700 and files 0600.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from aicloud.config import Settings

log = logging.getLogger("aicloud.server")

HOME_MODE = 0o700
FILE_MODE = 0o600
#: Files directly under the home that must not be readable by other users.
PRIVATE_FILES = ("master.key", "credentials", "server.log", "server.pid")


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite database URL; None for other databases and in-memory SQLite."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def tighten(path: Path, mode: int) -> None:
    """Take away from ``path`` every permission bit ``mode`` does not have (a missing path is fine)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        return  # the link's target is someone else's to protect
    current = stat.S_IMODE(st.st_mode)
    if not current & ~mode:
        return
    if st.st_uid != os.geteuid():
        log.warning("%s has mode %o and belongs to another user; it should be %o", path, current, mode)
        return
    os.chmod(path, current & mode)
    log.warning("%s had mode %o; changed it to %o (only its owner may use it)", path, current, current & mode)


def prepare_home(settings: Settings) -> None:
    """Create the home (0700) and the SQLite database file (0600, so SQLite gives its ``-wal`` and
    ``-shm`` files the same mode), and tighten what an older version left wider."""
    home = settings.home
    home.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    tighten(home, HOME_MODE)
    for name in PRIVATE_FILES:
        tighten(home / name, FILE_MODE)
    database = sqlite_file(settings.resolved_database_url)
    if database is None:
        return
    database.parent.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    os.close(os.open(database, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), FILE_MODE))
    for suffix in ("", "-wal", "-shm", "-journal"):
        tighten(database.with_name(database.name + suffix), FILE_MODE)

"""Engines and transactions: the one place that talks to the database driver.

``Database.run(fn)`` runs ``fn(session)`` in one transaction: it commits, rolls back on
error, translates database errors into aicloud errors, and retries when the database is
busy (SQLite's "database is locked", PostgreSQL deadlocks and serialization failures),
so that a busy database never reaches a caller as an error.

SQLite connections run in WAL mode with a busy timeout and foreign keys on. SQLAlchemy
emits BEGIN itself (the pysqlite recipe): ``BEGIN IMMEDIATE`` for writing transactions,
which takes the write lock up front so two writers queue instead of deadlocking on a lock
upgrade, and a deferred ``BEGIN`` for reads, which never block in WAL mode.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from aicloud.errors import AicloudError, ConflictError, UnavailableError

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long one SQLite statement waits for a lock before the driver reports "locked"."""

BUSY_RETRY_DEADLINE_S = 120.0
"""How long ``Database.run`` keeps retrying a transaction that found the database busy."""

_BEGIN_OPTION = "aicloud_sqlite_begin"

ErrorFactory = Callable[[], AicloudError]


class StoreBusyError(UnavailableError):
    """The database stayed busy (locked, deadlocked) past the retry deadline."""


def count_rows(session: Session, table: Any, *where: Any) -> int:
    """How many rows of ``table`` match ``where`` (the stores' counts for a page's "of N")."""
    return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def safe_url(url: str | URL) -> str:
    """The URL as text with any password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _finite(item())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_dumps(value: Any) -> str:
    """JSON for the database: NaN and infinities become null (PostgreSQL rejects them)."""
    return json.dumps(_finite(value), default=_json_default, allow_nan=False, separators=(",", ":"))


def json_normalize(value: Any) -> Any:
    """``value`` as it will read back from the database (lists for tuples, None for NaN)."""
    return json.loads(json_dumps(value))


def _is_sqlite_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def create_db_engine(url: str | URL) -> Engine:
    """An engine for ``url``, safe to share between threads, with aicloud's SQLite settings.

    A ``postgresql://`` URL that names no driver gets psycopg (3), the one ``aicloud[postgres]``
    installs; without it, :class:`~aicloud.client.extras.MissingExtraError` says to install that
    extra, in one line.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(
                parsed, pool_size=10, max_overflow=20, pool_pre_ping=True, json_serializer=json_dumps
            )
        except ImportError as exc:  # the driver (psycopg without its libpq, too)
            from aicloud.client.extras import MissingExtraError

            what = f"the metadata store at {safe_url(parsed)}"
            raise MissingExtraError(what, "postgres", [exc.name or parsed.get_driver_name()]) from None
    memory = _is_sqlite_memory(parsed)
    if not memory:
        # Create the folder of a new database; when that fails, connecting says why.
        with contextlib.suppress(OSError):
            Path(str(parsed.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        parsed,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        json_serializer=json_dumps,
        **({"poolclass": StaticPool} if memory else {}),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN (see _on_begin); the driver still commits and rolls back.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine (and pool), for transactions that write: SQLite begins them IMMEDIATE."""
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def is_busy(exc: DBAPIError) -> bool:
    """A transient failure worth retrying: SQLite locks, PostgreSQL deadlocks and serialization."""
    if exc.connection_invalidated:
        return False
    message = str(exc.orig).lower()
    if "database is locked" in message or "database table is locked" in message:
        return True
    return _sqlstate(exc) in {"40001", "40P01", "55P03"}


def _is_unique_violation(exc: IntegrityError) -> bool:
    return _sqlstate(exc) == "23505" or "unique constraint failed" in str(exc.orig).lower()


def _is_foreign_key_violation(exc: IntegrityError) -> bool:
    return _sqlstate(exc) == "23503" or "foreign key constraint failed" in str(exc.orig).lower()


def first_line(exc: DBAPIError) -> str:
    text = str(exc.orig).strip()
    return text.splitlines()[0] if text else type(exc.orig).__name__


def translate(
    exc: DBAPIError, *, conflict: ErrorFactory | None = None, missing: ErrorFactory | None = None
) -> Exception:
    """The aicloud error for a database error, or the error itself when it is a bug."""
    if isinstance(exc, IntegrityError):
        if _is_unique_violation(exc):
            return conflict() if conflict else ConflictError("the object already exists")
        if _is_foreign_key_violation(exc) and missing:
            return missing()
        return exc
    if is_busy(exc):
        return StoreBusyError("the metadata database is busy; try again")
    if isinstance(exc, OperationalError):
        return UnavailableError(f"the metadata database is unavailable: {first_line(exc)}")
    return exc


class Database:
    """One engine and the transaction helpers every store module uses."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        self._writer = writer(self.engine)
        # An in-memory SQLite database is one shared connection: run one transaction at a time.
        parsed = make_url(url)
        self._serial = (
            threading.RLock() if parsed.get_backend_name() == "sqlite" and _is_sqlite_memory(parsed) else None
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session_scope(
        self,
        *,
        write: bool = True,
        conflict: ErrorFactory | None = None,
        missing: ErrorFactory | None = None,
    ) -> Iterator[Session]:
        """A session in one transaction: commit on success, roll back and translate on error."""
        session = Session(bind=self._writer if write else self.engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except DBAPIError as exc:
            session.rollback()
            translated = translate(exc, conflict=conflict, missing=missing)
            if translated is exc:
                raise
            raise translated from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def run(
        self,
        fn: Callable[[Session], T],
        *,
        write: bool = True,
        conflict: ErrorFactory | None = None,
        missing: ErrorFactory | None = None,
    ) -> T:
        """``fn(session)`` in one transaction, retried with backoff while the database is busy."""
        return retry_busy(lambda: self._run_once(fn, write=write, conflict=conflict, missing=missing))

    def _run_once(
        self,
        fn: Callable[[Session], T],
        *,
        write: bool,
        conflict: ErrorFactory | None,
        missing: ErrorFactory | None,
    ) -> T:
        with (
            self._serial or nullcontext(),
            self.session_scope(write=write, conflict=conflict, missing=missing) as session,
        ):
            return fn(session)

    def dispose(self) -> None:
        self.engine.dispose()


def retry_busy(fn: Callable[[], T], *, deadline_s: float = BUSY_RETRY_DEADLINE_S) -> T:
    """Call ``fn`` until it does not raise StoreBusyError (or a busy DBAPIError), with backoff."""
    deadline = time.monotonic() + deadline_s
    delay = 0.005
    while True:
        try:
            return fn()
        except StoreBusyError:
            if time.monotonic() >= deadline:
                raise
        except DBAPIError as exc:
            if not is_busy(exc):
                raise
            if time.monotonic() >= deadline:
                raise StoreBusyError("the metadata database is busy; try again") from exc
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.5)

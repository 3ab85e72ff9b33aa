"""SqlMetadataStore: every resource store over one SQLite or PostgreSQL database."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from aicloud.errors import UnavailableError
from aicloud.store.base import MetadataStore
from aicloud.store.sql import migrate as migrations
from aicloud.store.sql.alerts import SqlAlertStore
from aicloud.store.sql.blobrefs import SqlBlobRefStore
from aicloud.store.sql.datasets import SqlDatasetStore
from aicloud.store.sql.deployments import SqlDeploymentStore
from aicloud.store.sql.edge import SqlEdgeNodeStore
from aicloud.store.sql.jobs import SqlJobStore
from aicloud.store.sql.models import SqlModelStore
from aicloud.store.sql.runs import SqlRunStore
from aicloud.store.sql.secrets import SqlSecretStore
from aicloud.store.sql.session import Database, first_line, safe_url
from aicloud.store.sql.tokens import SqlTokenStore
from aicloud.store.sql.tracking import SqlTrackingStore
from aicloud.store.sql.workspaces import SqlWorkspaceStore


class SqlMetadataStore(MetadataStore):
    """The metadata store at a SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).

    With ``migrate`` the schema is upgraded to head first (safe when several processes start
    at once); without it, a database behind head raises StoreSchemaError.
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self._db = Database(url)
        try:
            if migrate:
                migrations.upgrade_engine(self._db.engine)
            else:
                migrations.check_schema_engine(self._db.engine)
        except OperationalError as exc:
            self._db.dispose()
            raise UnavailableError(
                f"cannot open the metadata database at {safe_url(url)}: {first_line(exc)}",
                details={"url": safe_url(url)},
            ) from exc
        except BaseException:
            self._db.dispose()
            raise
        self.workspaces = SqlWorkspaceStore(self._db)
        self.tokens = SqlTokenStore(self._db)
        self.datasets = SqlDatasetStore(self._db)
        self.secrets = SqlSecretStore(self._db)
        self.jobs = SqlJobStore(self._db)
        self.runs = SqlRunStore(self._db)
        self.models = SqlModelStore(self._db)
        self.blob_refs = SqlBlobRefStore(self._db)
        self.deployments = SqlDeploymentStore(self._db)
        self.tracking = SqlTrackingStore(self._db)
        self.edge_nodes = SqlEdgeNodeStore(self._db)
        self.alerts = SqlAlertStore(self._db)

    @property
    def database(self) -> Database:
        """The engine and transaction helpers, for health checks and tests."""
        return self._db

    def close(self) -> None:
        self._db.dispose()

    def __repr__(self) -> str:
        return f"SqlMetadataStore({safe_url(self.url)!r})"

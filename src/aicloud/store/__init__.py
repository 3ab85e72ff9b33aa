"""Metadata stores: the interface and the SQL backend, chosen by URL scheme."""

from aicloud.store.base import MetadataStore

__all__ = ["MetadataStore", "open_store"]


def open_store(url: str, *, migrate: bool = True) -> MetadataStore:
    """Open the metadata store at ``url`` (``sqlite:///...`` or ``postgresql+psycopg://...``).

    With ``migrate`` the Alembic migrations run to head first; without it a database
    behind head raises StoreSchemaError naming ``aicloud admin migrate``.
    """
    from aicloud.store.sql.store import SqlMetadataStore

    return SqlMetadataStore(url, migrate=migrate)

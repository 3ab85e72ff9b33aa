"""What the control plane holds for its lifetime: settings, the metadata store, the blob store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aicloud.blobs import BlobStore
from aicloud.config import Settings
from aicloud.schemas import DatasetVersionOut
from aicloud.server.auth import PrincipalCache
from aicloud.server.cache import TTLCache

if TYPE_CHECKING:
    from aicloud.controllers.jobs import JobController
from aicloud.store import MetadataStore


@dataclass
class AppState:
    settings: Settings
    store: MetadataStore
    blobs: BlobStore
    jobs: JobController | None = None
    principals: PrincipalCache = field(init=False)
    #: Numbered dataset versions are immutable: (workspace id, name, version) → wire model.
    versions: TTLCache[tuple[str, str, int], DatasetVersionOut] = field(init=False)

    def __post_init__(self) -> None:
        self.principals = PrincipalCache(ttl=self.settings.auth_cache_seconds)
        self.versions = TTLCache(ttl=60.0)

    def wake_jobs(self) -> None:
        """Nudge the job controller after a submit or cancel, so it does not wait for its next tick."""
        if self.jobs is not None:
            self.jobs.wake()

"""What the control plane holds for its lifetime: settings, the metadata store, the blob store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aicloud.blobs import BlobStore
from aicloud.config import Settings
from aicloud.gateway.proxy import Gateway
from aicloud.gateway.registry import EndpointRegistry
from aicloud.schemas import DatasetVersionOut
from aicloud.server.auth import PrincipalCache
from aicloud.server.cache import TTLCache

if TYPE_CHECKING:
    from aicloud.controllers.deployments import DeploymentController
    from aicloud.controllers.jobs import JobController
    from aicloud.controllers.sweeps import SweepController
from aicloud.store import MetadataStore


@dataclass
class AppState:
    settings: Settings
    store: MetadataStore
    blobs: BlobStore
    jobs: JobController | None = None
    deployments: DeploymentController | None = None
    sweeps: SweepController | None = None
    endpoints: EndpointRegistry = field(default_factory=EndpointRegistry)
    gateway: Gateway = field(init=False)
    principals: PrincipalCache = field(init=False)
    #: Numbered dataset versions are immutable: (workspace id, name, version) → wire model.
    versions: TTLCache[tuple[str, str, int], DatasetVersionOut] = field(init=False)

    def __post_init__(self) -> None:
        self.principals = PrincipalCache(ttl=self.settings.auth_cache_seconds)
        self.versions = TTLCache(ttl=60.0)
        self.gateway = Gateway(self.endpoints, channel=self.settings.gateway_channel)

    def wake_jobs(self) -> None:
        """Nudge the job and sweep controllers after a submit or cancel, so they do not wait for
        their next tick (an idle controller ticks only every few seconds)."""
        if self.jobs is not None:
            self.jobs.wake()
        if self.sweeps is not None:
            self.sweeps.wake()

    def wake_deployments(self) -> None:
        if self.deployments is not None:
            self.deployments.wake()

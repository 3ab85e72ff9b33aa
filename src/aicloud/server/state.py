"""What the control plane holds for its lifetime: settings, the metadata store, the blob store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from aicloud.auth import PrincipalCache
from aicloud.blobs import BlobStore
from aicloud.cache import TTLCache
from aicloud.config import Settings
from aicloud.data import ParseLimits, ParserPool
from aicloud.errors import ConflictError
from aicloud.gateway.proxy import Gateway
from aicloud.gateway.registry import EndpointRegistry
from aicloud.schemas import DatasetVersionOut

if TYPE_CHECKING:
    from aicloud.compression.runner import Confine
    from aicloud.controllers.alerts import AlertController
    from aicloud.controllers.deployments import DeploymentController
    from aicloud.controllers.jobs import JobController
    from aicloud.controllers.sweeps import SweepController
from aicloud.store import MetadataStore

T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    store: MetadataStore
    blobs: BlobStore
    jobs: JobController | None = None
    deployments: DeploymentController | None = None
    sweeps: SweepController | None = None
    alerts: AlertController | None = None
    endpoints: EndpointRegistry = field(default_factory=EndpointRegistry)
    gateway: Gateway = field(init=False)
    principals: PrincipalCache = field(init=False)
    #: Numbered dataset versions are immutable: (workspace id, name, version) → wire model.
    versions: TTLCache[tuple[str, str, int], DatasetVersionOut] = field(init=False)
    #: Uploaded files are parsed in worker processes (started by the app's lifespan).
    parsers: ParserPool = field(init=False)
    #: Runs a compression worker's command line in the workload sandbox (set at start-up; None:
    #: workloads are not confined, AICLOUD_ISOLATION=none).
    compress_confine: Confine | None = None
    #: Orders removing unreferenced blobs against recording references to blobs just stored.
    blob_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.principals = PrincipalCache(ttl=self.settings.auth_cache_seconds)
        self.versions = TTLCache(ttl=60.0)
        self.gateway = Gateway(self.endpoints, channel=self.settings.gateway_channel)
        s = self.settings
        self.parsers = ParserPool(
            ParseLimits(
                max_depth=s.parse_max_depth,
                max_expanded_bytes=s.parse_max_expanded_bytes,
                max_expansion_ratio=s.parse_max_expansion_ratio,
                max_memory_bytes=s.parse_max_memory_bytes,
                max_cpu_seconds=s.parse_max_cpu_seconds,
                timeout_seconds=s.parse_timeout_seconds,
            )
        )

    def keep_blob(self, digest: str, record: Callable[[], T]) -> T:
        """Run ``record`` (it writes the row that references ``digest``, a blob this request just
        stored) unless a concurrent delete of the same bytes removed the blob meanwhile: under
        ``blob_lock``, so that delete either sees the new reference or has removed the file,
        which is then a conflict (store the file again) instead of a dangling reference."""
        with self.blob_lock:
            if not self.blobs.exists(digest):
                raise ConflictError(
                    "the stored file was removed by a concurrent delete; upload it again",
                    details={"digest": digest},
                )
            return record()

    def drop_blobs(self, release: Callable[[], list[str]]) -> list[str]:
        """Run ``release`` (it removes references and returns the digests nothing references any
        more, decided in its transaction) and remove those blobs, under ``blob_lock``."""
        with self.blob_lock:
            digests = release()
            for digest in digests:
                self.blobs.delete(digest)
            return digests

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

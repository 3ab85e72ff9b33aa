"""What the control plane holds for its lifetime: settings, the metadata store, the blob store."""

from __future__ import annotations

from dataclasses import dataclass

from aicloud.blobs import BlobStore
from aicloud.config import Settings
from aicloud.store import MetadataStore


@dataclass
class AppState:
    settings: Settings
    store: MetadataStore
    blobs: BlobStore

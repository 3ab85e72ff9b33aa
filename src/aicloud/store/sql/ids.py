"""Resource ids: a short prefix naming the kind, then 20 random lowercase hex characters."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

WORKSPACE = "ws"
DATASET = "ds"
DATASET_VERSION = "dsv"
SECRET = "sec"
EDGE_NODE = "edn"


def new_id(prefix: str) -> str:
    """``prefix_`` + 80 random bits, e.g. ``ws_3f9a0c1d2e4b5a6978c0``."""
    return f"{prefix}_{secrets.token_hex(10)}"


def utcnow() -> datetime:
    return datetime.now(UTC)

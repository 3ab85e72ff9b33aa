"""aicloud: a self-hosted AI cloud. The public surface is :class:`Client`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]

if TYPE_CHECKING:
    from aicloud.client import Client


def __getattr__(name: str) -> Any:
    if name == "Client":
        from aicloud.client import Client

        return Client
    raise AttributeError(name)

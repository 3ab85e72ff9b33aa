"""aicloud: a self-hosted AI cloud. The public surface: :class:`Client`, :class:`Model` (a Keras model
trained remotely), :class:`Service`, :func:`handler`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "Model", "Service", "__version__", "handler"]

if TYPE_CHECKING:
    from aicloud.client import Client
    from aicloud.client.keras_model import Model
    from aicloud.serving.service import Service, handler


def __getattr__(name: str) -> Any:
    if name == "Client":
        from aicloud.client import Client

        return Client
    if name == "Model":  # keras itself is imported only when a Model is used
        from aicloud.client.keras_model import Model

        return Model
    if name in ("Service", "handler"):
        from aicloud.serving import service

        return getattr(service, name)
    raise AttributeError(name)

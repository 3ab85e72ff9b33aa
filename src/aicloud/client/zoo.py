"""``client.zoo``: the model zoo's catalog and pulling an entry (docs/zoo.md).

A pulled entry is a read-only model version every workspace uses as ``zoo/<entry>``: deploy it
(``model: zoo/digits-cnn``), read it (``client.models.get("zoo/minilm")``) or fine-tune it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aicloud.schemas.zoo import ZooEntryOut, ZooPullOut

if TYPE_CHECKING:
    from aicloud.client.http import Transport

ZOO = "/api/v1/zoo"
#: a pull of MiniLM converts it to ONNX in the server's compression worker: a minute or more
PULL_TIMEOUT_S = 960.0


class ZooAPI:
    """``client.zoo``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def list(self) -> list[ZooEntryOut]:
        """Every entry: what it is for, source, licence, size, signature, and whether it is pulled."""
        return [ZooEntryOut.model_validate(e) for e in self._t.json("GET", ZOO)]

    def show(self, name: str) -> ZooEntryOut:
        return ZooEntryOut.model_validate(self._t.json("GET", f"{ZOO}/{name}"))

    def pull(self, name: str) -> ZooPullOut:
        """Register ``name`` for every workspace (an admin token of the ``default`` workspace); a no-op
        (``created`` false) when it is pulled already. Raises ValidationError (422) naming what to
        ``pip install`` on the server when a package the entry needs is missing."""
        out = self._t.json("POST", f"{ZOO}/{name}/pull", retry=False, timeout=PULL_TIMEOUT_S)
        return ZooPullOut.model_validate(out)

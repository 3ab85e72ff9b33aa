"""``client.edge``: edge nodes (docs/edge.md). An edge machine joins with a member token and then
pulls signed bundles with the node's own token (:mod:`aicloud.edge.node` keeps them on disk); the node
agent (:mod:`aicloud.edge.agent`) long-polls its assignments and reports its status with that token."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from aicloud.client.models import COMPRESSION_TIMEOUT_S
from aicloud.schemas.edge import EdgeAssignments, EdgeNodeJoined, EdgeNodeOut, EdgeNodeStatus, EdgeStatusAck

if TYPE_CHECKING:
    from aicloud.client.http import Transport

NODES = "/api/v1/edge/nodes"


class EdgeAPI:
    """``client.edge``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def join(self, name: str, labels: Mapping[str, str] | None = None) -> EdgeNodeJoined:
        """Register this machine as edge node ``name``: its own token (shown once) and the
        workspace's signing key, to pin."""
        body = {"name": name, "labels": dict(labels or {})}
        return EdgeNodeJoined.model_validate(self._t.json("POST", NODES, json=body, retry=False))

    def nodes(self) -> list[EdgeNodeOut]:
        return [EdgeNodeOut.model_validate(n) for n in self._t.json("GET", NODES)]

    def remove(self, node_id: str) -> None:
        """Remove a node and revoke its token."""
        self._t.request("DELETE", f"{NODES}/{quote(node_id, safe='')}")

    def pull(self, node_id: str, ref: str, path: str | os.PathLike[str]) -> Path:
        """As node ``node_id`` (with its own token), write the signed bundle of ``ref`` to ``path``."""
        dest = Path(path)
        tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
        url = f"{NODES}/{quote(node_id, safe='')}/bundle"
        try:
            with (
                self._t.stream("POST", url, json={"model": ref}, timeout=COMPRESSION_TIMEOUT_S) as response,
                open(tmp, "wb") as f,
            ):
                for chunk in response.iter_bytes(1 << 20):
                    f.write(chunk)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def assignments(self, node_id: str, *, wait: int = 0, etag: str | None = None) -> EdgeAssignments | None:
        """As node ``node_id``: its assignments, long-polled up to ``wait`` whole seconds (at most 30)
        for a change from ``etag``; None when they are still ``etag`` (a 304)."""
        url = f"{NODES}/{quote(node_id, safe='')}/assignments"
        headers = {"If-None-Match": etag} if etag else {}
        response = self._t.request(
            "GET",
            url,
            params={"wait": wait},
            headers=headers,
            timeout=httpx.Timeout(wait + 15, connect=10),
            retry=False,
        )
        if response.status_code == 304:
            return None
        return EdgeAssignments.model_validate(response.json())

    def report(self, node_id: str, status: EdgeNodeStatus, *, timeout: float = 20) -> EdgeStatusAck:
        """As node ``node_id``: its address and each assignment's state and counts since the last report."""
        url = f"{NODES}/{quote(node_id, safe='')}/status"
        body = status.model_dump(mode="json")
        return EdgeStatusAck.model_validate(
            self._t.json("PUT", url, json=body, timeout=httpx.Timeout(timeout, connect=10), retry=False)
        )

"""The replica app's shared request/response helpers: ASGI types, error responses, queued work.

:func:`error_response` answers an :class:`~aicloud.errors.AicloudError` in the aicloud shape (with
``Retry-After`` on a full queue), or, on the Open Inference Protocol's routes (``oip=True``, see
:func:`is_oip_path`), in the protocol's ``{"error": "<message>"}``; :func:`send_error` does the same
on the raw ASGI layer, before the FastAPI app is reached. :func:`submit` queues one request's work
on a batcher and drops it when the client disconnects meanwhile (:class:`ClientGone`, answered 499).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from aicloud.errors import AicloudError
from aicloud.serving.batcher import BatchItem, DynamicBatcher, QueueFullError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = "application/json"
#: Where a 500 from user code sends the caller.
SEE_LOGS = "see the replica log: aicloud deploy logs NAME"


class ClientGone(Exception):
    """The client disconnected while its request waited."""


def is_oip_path(path: str) -> bool:
    """Whether ``path`` is an Open Inference Protocol route (``/v2...``): errors there are
    ``{"error": "<message>"}``."""
    return path == "/v2" or path.startswith("/v2/")


def error_body(exc: AicloudError, oip: bool = False) -> bytes:
    """aicloud's ``{"error": {"code", "message", "details"}}``, or with ``oip`` the protocol's
    ``{"error": "<message>"}`` (what Triton and KServe clients parse)."""
    if oip:
        return json.dumps({"error": exc.message}).encode()
    return json.dumps(exc.to_payload(), default=str).encode()


def error_response(
    exc: AicloudError, headers: dict[str, str] | None = None, *, oip: bool = False
) -> Response:
    body = error_body(exc, oip)
    headers = dict(headers or {})
    if isinstance(exc, QueueFullError):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return Response(body, status_code=exc.status_code, media_type=JSON, headers=headers)


async def send_error(
    send: Send, exc: AicloudError, extra: dict[str, str] | None = None, *, oip: bool = False
) -> None:
    extra = dict(extra or {})
    if isinstance(exc, QueueFullError):
        extra["Retry-After"] = str(max(1, round(exc.retry_after)))
    await send_body(send, exc.status_code, error_body(exc, oip), extra)


async def send_body(send: Send, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
    """A whole JSON response on the raw ASGI layer."""
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def submit(receive: Receive, batcher: DynamicBatcher, value: Any, size: int) -> Any:
    """Queue one request's work; a client that disconnects meanwhile drops its work (:class:`ClientGone`).

    ``receive`` is the request's ASGI receive, its body already read: the next message it yields is
    the disconnect. One watch task per request, unless ``receive`` offers ``disconnected()`` (a
    future that resolves when the caller goes, as the gateway channel's does); the batcher's own
    timer enforces its timeout.
    """
    item = batcher.enqueue(value, size)
    gone = getattr(receive, "disconnected", None)
    if gone is not None:  # the gateway channel's receive: a future, no watch task needed
        watch: asyncio.Future[Any] = gone()
    else:
        watch = asyncio.ensure_future(wait_disconnect(receive))
    dropped = partial(_client_gone, batcher, item)
    watch.add_done_callback(dropped)
    try:
        return await item.future
    except asyncio.CancelledError:
        batcher.discard(item)
        raise
    finally:
        if gone is not None:
            watch.remove_done_callback(dropped)
        else:
            watch.cancel()


def _client_gone(batcher: DynamicBatcher, item: BatchItem, watch: asyncio.Future[None]) -> None:
    if not watch.cancelled():
        batcher.discard(item, ClientGone())


def request_body(request: Request) -> bytes:
    """The body :class:`~aicloud.serving.app.ReplicaApp` read once (``scope["aicloud.body"]``)."""
    body = request.scope.get("aicloud.body")
    return body if isinstance(body, bytes) else b""

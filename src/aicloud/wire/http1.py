"""uvicorn's HTTP/1.1 protocol (httptools), sending each small response in one write.

uvicorn writes a response's head (status line and headers) as soon as the app sends
``http.response.start``, and its body on ``http.response.body``: two writes, so two TCP segments
and two wake-ups of the reader for every response. :class:`OneWriteProtocol` gives each request's
response cycle a :class:`HeadHolder` that holds the head until the body's first write, or until the
end of the event-loop iteration when the body does not follow at once (a streamed response whose
first chunk is not ready), and sends a head and a body up to ``JOIN_LIMIT`` bytes as one buffer.
An interim ``100 Continue`` (a caller that sent ``Expect: 100-continue`` waits for it before it
sends the body) is not a head: it goes at once.
Both the control plane (the gateway's answers to callers) and the replicas serve with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Bodies up to this size are joined to the held head (one copy); larger ones follow it in their own write.
JOIN_LIMIT = 64 * 1024


class HeadHolder:
    """The transport a response cycle writes to: its first write (the head) waits for the next one."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = b""  # b"": nothing written yet; None: the head has gone

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._transport.write(data)
            return
        if not held:  # the head, unless an interim answer ("100 Continue") that must go at once
            if data.startswith(b"HTTP/1.1 1"):
                self._transport.write(data)
                return
            self._held = data
            self._loop.call_soon(self.flush)
            return
        self._held = None
        if len(data) <= JOIN_LIMIT:
            self._transport.write(held + data)
        else:
            self._transport.write(held)
            self._transport.write(data)

    def flush(self) -> None:
        """Send a head still held (the body did not follow within the loop iteration)."""
        held = self._held
        if held:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # anything else the cycle asks of its transport
        return getattr(self._transport, name)


class OneWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose response cycles write through a :class:`HeadHolder`."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not isinstance(cycle.transport, HeadHolder):  # a new cycle
            cycle.transport = HeadHolder(cycle.transport, self.loop)

"""A Service's handler routes: one ``POST /<name>`` per handler of the class.

The request body is the handler's generated request model (its parameters); the response is its
return value, dumped through its return type. A ``batch=True`` handler runs through its own
:class:`~aicloud.serving.batcher.DynamicBatcher`; other handlers run under the replica's timeout,
``async`` ones on the loop and plain ones in the handler thread pool. A handler that raises, or
returns a value that does not match its return type, answers 500 without a stack trace.

:class:`HandlerRoute` serves a handler on the raw ASGI layer: :class:`~aicloud.serving.app.ReplicaApp`
hands it the body it read, and the request is validated with the request model's own JSON parser
(``model_validate_json``), queued and answered without FastAPI's routing, dependency injection and
response models on the way, which cost more CPU per request than a batched model call's share on
small CPU replicas. The same handler is also added to the FastAPI app (:func:`add_handler_route`) so
that it shows, with its schemas, in the endpoint's OpenAPI document.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from aicloud.errors import AicloudError, BadRequestError
from aicloud.serving.asgi import JSON, SEE_LOGS, ClientGone, Receive, Send, send_body, send_error, submit
from aicloud.serving.batcher import DynamicBatcher, RequestTimeoutError
from aicloud.serving.service import HandlerInfo, Service

log = logging.getLogger("aicloud.serving")


def validation_error(errors: list[Any], skip: tuple[str, ...] = ()) -> BadRequestError:
    """A 400 naming each bad field of a pydantic validation (``skip``: location parts to leave out)."""
    details = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in skip]
        details.append({"field": ".".join(loc) or "body", "message": str(err.get("msg", ""))})
    first = details[0] if details else {"field": "body", "message": "invalid"}
    return BadRequestError(f"{first['field']}: {first['message']}", details=details)


class HandlerRoute:
    """Calls ``service.<info.name>`` for one request (through ``batcher`` when given)."""

    def __init__(
        self,
        service: Service,
        info: HandlerInfo,
        *,
        batcher: DynamicBatcher | None,
        pool: ThreadPoolExecutor,
        timeout: float,
    ) -> None:
        self.info = info
        self.method = getattr(service, info.name)
        self.batcher = batcher
        self.pool = pool
        self.timeout = timeout
        self._validate = info.request_model.model_validate_json
        self._dump = info.response_adapter.dump_json

    async def serve(self, body: bytes, receive: Receive, send: Send) -> None:
        """Answer one request whose whole ``body`` was read; errors in the aicloud shape."""
        try:
            try:
                parsed = self._validate(body)
            except ValidationError as exc:
                raise validation_error(exc.errors(include_url=False)) from None
            payload = await self.call({p: getattr(parsed, p) for p in self.info.params}, receive)
        except AicloudError as exc:
            await send_error(send, exc)
            return
        except ClientGone:
            await send({"type": "http.response.start", "status": 499, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_body(send, 200, payload)

    async def call(self, kwargs: dict[str, Any], receive: Receive) -> bytes:
        """The handler's JSON answer to ``kwargs``; raises AicloudError (or ClientGone)."""
        info = self.info
        try:
            if self.batcher is not None:
                result = await submit(receive, self.batcher, kwargs[info.params[0]], 1)
            else:
                async with asyncio.timeout(self.timeout):
                    if info.is_async:
                        result = await self.method(**kwargs)
                    else:
                        loop = asyncio.get_running_loop()
                        result = await loop.run_in_executor(self.pool, partial(self.method, **kwargs))
        except (AicloudError, ClientGone):
            raise
        except TimeoutError:
            raise RequestTimeoutError(self.timeout) from None
        except Exception as exc:
            log.error("handler %s raised", info.name, exc_info=exc)
            raise AicloudError(f"the handler {info.name!r} raised {type(exc).__name__}; {SEE_LOGS}") from None
        try:
            return self._dump(result)
        except Exception as exc:
            log.error("handler %s returned a value that does not match its return type: %s", info.name, exc)
            raise AicloudError(
                f"the handler {info.name!r} returned a value that does not match its return type"
            ) from None


def add_handler_route(api: FastAPI, route: HandlerRoute) -> None:
    """Add ``POST /<name>`` for ``route`` to the FastAPI app: its schemas for the OpenAPI document
    (the replica serves the requests themselves on the raw layer, :meth:`HandlerRoute.serve`)."""
    info = route.info

    async def endpoint(request: Request, body: Any) -> Response:
        payload = await route.call({p: getattr(body, p) for p in info.params}, request.receive)
        return Response(payload, media_type=JSON)

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=info.request_model),
        ]
    )
    endpoint.__name__ = info.name
    api.add_api_route(
        f"/{info.name}",
        endpoint,
        methods=["POST"],
        response_model=info.response_type,
        name=info.name,
        summary=f"{type(route.method.__self__).__name__}.{info.name}",
        description=inspect.getdoc(route.method) or None,
    )

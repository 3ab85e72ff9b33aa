"""A Service's handler routes: one ``POST /<name>`` per handler of the class.

The request body is the handler's generated request model (its parameters); the response is its
return value, dumped through its return type. A ``batch=True`` handler runs through its own
:class:`~aicloud.serving.batcher.DynamicBatcher`; other handlers run under the replica's timeout,
``async`` ones on the loop and plain ones in the handler thread pool. A handler that raises, or
returns a value that does not match its return type, answers 500 without a stack trace.
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

from aicloud.errors import AicloudError
from aicloud.serving.asgi import JSON, ClientGone, submit
from aicloud.serving.batcher import DynamicBatcher, RequestTimeoutError
from aicloud.serving.service import HandlerInfo, Service

log = logging.getLogger("aicloud.serving")


def add_handler_route(
    api: FastAPI,
    service: Service,
    info: HandlerInfo,
    *,
    batcher: DynamicBatcher | None,
    pool: ThreadPoolExecutor,
    timeout: float,
) -> None:
    """Add ``POST /<info.name>`` calling ``service.<info.name>`` (through ``batcher`` if given)."""
    method = getattr(service, info.name)
    adapter = info.response_adapter

    async def endpoint(request: Request, body: Any) -> Response:
        kwargs = {p: getattr(body, p) for p in info.params}
        try:
            if batcher is not None:
                result = await submit(request, batcher, kwargs[info.params[0]], 1)
            else:
                async with asyncio.timeout(timeout):
                    if info.is_async:
                        result = await method(**kwargs)
                    else:
                        loop = asyncio.get_running_loop()
                        result = await loop.run_in_executor(pool, partial(method, **kwargs))
        except (AicloudError, ClientGone):
            raise
        except TimeoutError:
            raise RequestTimeoutError(timeout) from None
        except Exception as exc:
            log.error("handler %s raised", info.name, exc_info=exc)
            raise AicloudError(
                f"the handler {info.name!r} raised {type(exc).__name__}; see the replica log"
            ) from None
        try:
            payload = adapter.dump_json(result)
        except Exception as exc:
            log.error("handler %s returned a value that does not match its return type: %s", info.name, exc)
            raise AicloudError(
                f"the handler {info.name!r} returned a value that does not match its return type"
            ) from None
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
        summary=f"{type(service).__name__}.{info.name}",
        description=inspect.getdoc(method) or None,
    )

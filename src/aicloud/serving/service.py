"""User code as a service: a class with handler methods (Lepton's Photon, LitServe's LitAPI).

    from aicloud import Service, handler

    class Echo(Service):
        def setup(self) -> None:          # optional: runs once per replica, before it is ready
            self.prefix = ""

        @handler
        def echo(self, text: str) -> str:  # POST /echo  {"text": "hi"}  →  "hi"
            return self.prefix + text

        @handler(batch=True, max_batch_size=32)
        def embed(self, text: list[str]) -> list[list[float]]:   # POST /embed {"text": "hi"} → [...]
            return [[float(len(t))] for t in text]

A handler is ``POST /<method name>``. Its JSON body is an object of the method's parameters, checked
against their type hints (a pydantic model built from them); its response is the return value,
serialised by the return annotation. Both schemas appear in the replica's ``/openapi.json``.

``@handler(batch=True)``: the method takes ONE parameter annotated ``list[X]`` and returns a list of
the same length; each request sends one ``X`` (``{"<param>": X}``) and gets one element back, and
concurrent requests are grouped by the dynamic batcher (``max_batch_size``/``max_wait_ms`` default to
the deployment's). A slot holding an ``Exception`` instance fails only that request.

Plain handlers may be ``async def`` (run on the event loop) or ``def`` (run in a worker thread).
Mistakes are refused when the class is defined, with a message saying what to change.

**A registered model** (``model: NAME@ALIAS`` in the deployment beside the service, and
``runtime: auto | torch | onnxruntime``): the replica loads the version and sets ``self.model``
before ``setup()`` runs, chosen as for a plain model deployment (``auto``: the fastest runtime whose
outputs match the version's own, measured at start; the replica's log and ``deploy show`` say which
and why). The service keeps its own pre- and postprocessing (tokenizing, pooling...)::

    class Embed(Service):
        def setup(self) -> None:
            self.tokenizer = Tokenizer.from_file("tokenizer.json")   # shipped with the code
            print(self.model.input_names, self.model.runtime)        # ['input_ids', 'attention_mask']

        @handler(batch=True)
        def embed(self, text: list[str]) -> list[list[float]]:
            ids, mask = tokenize(self.tokenizer, text)                   # int64 arrays (rows, length)
            return self.model(input_ids=ids, attention_mask=mask).tolist()

``self.model(name=array, ...)`` (or one dict of arrays; a model of one input takes the array) runs
the model on numpy inputs, batch first, and returns its output as a numpy array, whatever runs it;
``self.model.inputs`` lists the inputs (``.name``, ``.dtype``, ``.shape``, ``-1``: any length). A
service without ``model`` has ``self.model`` None. torch is imported only when torch runs the model.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_origin, overload

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model

if TYPE_CHECKING:
    from aicloud.serving.runtimes import ServiceModel

F = TypeVar("F", bound=Callable[..., Any])

RESERVED = {"predict", "metrics", "openapi.json", "docs", "redoc", "v2", "health"}
_MARK = "__aicloud_handler__"


@dataclass(frozen=True)
class HandlerOptions:
    batch: bool = False
    max_batch_size: int | None = None
    max_wait_ms: float | None = None


@dataclass(frozen=True)
class HandlerInfo:
    """A resolved handler: its route name, request model, response type and how to call it."""

    name: str
    options: HandlerOptions
    request_model: type[BaseModel]
    response_type: Any
    response_adapter: TypeAdapter[Any]
    params: tuple[str, ...]
    is_async: bool

    @property
    def batch(self) -> bool:
        return self.options.batch


@overload
def handler(fn: F, /) -> F: ...


@overload
def handler(
    *, batch: bool = False, max_batch_size: int | None = None, max_wait_ms: float | None = None
) -> Callable[[F], F]: ...


def handler(
    fn: Any = None,
    /,
    *,
    batch: bool = False,
    max_batch_size: int | None = None,
    max_wait_ms: float | None = None,
) -> Any:
    """Mark a :class:`Service` method as the route ``POST /<method name>`` (see the module docstring)."""
    if max_batch_size is not None and (not isinstance(max_batch_size, int) or max_batch_size < 1):
        raise TypeError(f"@handler(max_batch_size=...) must be an int >= 1, got {max_batch_size!r}")
    if max_wait_ms is not None and max_wait_ms < 0:
        raise TypeError(f"@handler(max_wait_ms=...) must be >= 0, got {max_wait_ms!r}")
    if (max_batch_size is not None or max_wait_ms is not None) and not batch:
        raise TypeError("@handler(max_batch_size=..., max_wait_ms=...) only applies with batch=True")
    options = HandlerOptions(batch=bool(batch), max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)

    def mark(func: F) -> F:
        if isinstance(func, (staticmethod, classmethod)) or not inspect.isfunction(func):
            raise TypeError(f"@handler goes on a plain method of a Service subclass, not on {func!r}")
        if func.__name__.startswith("_") or func.__name__ in RESERVED:
            raise TypeError(
                f"@handler {func.__name__!r}: the name is reserved or private; rename the method "
                f"(reserved: {', '.join(sorted(RESERVED))})"
            )
        params = list(inspect.signature(func).parameters.values())
        if not params or params[0].name != "self":
            raise TypeError(f"@handler {func.__qualname__}: the first parameter must be self")
        for p in params[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                raise TypeError(
                    f"@handler {func.__qualname__}: parameter {p.name!r} must be a named parameter "
                    "(no *args, **kwargs or positional-only parameters): the JSON body is an object of them"
                )
            if p.annotation is inspect.Parameter.empty:
                raise TypeError(
                    f"@handler {func.__qualname__}: parameter {p.name!r} has no type hint; annotate it, "
                    f"e.g. `{p.name}: str`, so that the request schema can be built"
                )
        if inspect.signature(func).return_annotation is inspect.Signature.empty:
            raise TypeError(
                f"@handler {func.__qualname__}: add a return type hint (e.g. `-> str`): "
                "it is the response schema"
            )
        if batch:
            if len(params) != 2:
                raise TypeError(
                    f"@handler(batch=True) {func.__qualname__}: takes exactly one parameter besides self, "
                    "annotated list[X]; each request sends one X"
                )
            if inspect.iscoroutinefunction(func):
                raise TypeError(
                    f"@handler(batch=True) {func.__qualname__}: must be a plain `def` "
                    "(batches run in a worker thread)"
                )
        setattr(func, _MARK, options)
        return func

    if fn is not None:
        return mark(fn)
    return mark


def _list_item(annotation: Any, where: str) -> Any:
    if get_origin(annotation) not in (list, typing.List):  # noqa: UP006
        raise TypeError(f"{where}: with batch=True it must be annotated list[X], got {annotation!r}")
    args = get_args(annotation)
    return args[0] if args else Any


def resolve_handlers(cls: type) -> dict[str, HandlerInfo]:
    """The handlers of a Service class, with request/response schemas built from their type hints."""
    out: dict[str, HandlerInfo] = {}
    for attr in dir(cls):
        func = getattr(cls, attr, None)
        options = getattr(func, _MARK, None)
        if not isinstance(options, HandlerOptions):
            continue
        assert func is not None
        where = f"@handler {cls.__name__}.{attr}"
        try:
            hints = typing.get_type_hints(func, include_extras=True)
        except Exception as exc:
            raise TypeError(
                f"{where}: cannot resolve its type hints ({exc}); import the types it uses"
            ) from None
        sig = inspect.signature(func)
        params = [p for p in sig.parameters.values() if p.name != "self"]
        fields: dict[str, Any] = {}
        for p in params:
            annotation = hints.get(p.name, Any)
            if options.batch:
                annotation = _list_item(annotation, f"{where}: parameter {p.name!r}")
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (annotation, default)
        ret = hints.get("return", Any)
        if options.batch:
            ret = _list_item(ret, f"{where}: the return type")
        model_name = f"{cls.__name__}_{attr}_Request"
        try:
            model = create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
            adapter: TypeAdapter[Any] = TypeAdapter(ret)
        except Exception as exc:
            raise TypeError(f"{where}: its type hints cannot be turned into a JSON schema: {exc}") from None
        out[attr] = HandlerInfo(
            name=attr,
            options=options,
            request_model=model,
            response_type=ret,
            response_adapter=adapter,
            params=tuple(p.name for p in params),
            is_async=inspect.iscoroutinefunction(func),
        )
    return out


class Service:
    """Base class of user services: define ``@handler`` methods, and optionally ``setup(self)``.

    Handlers are checked when the subclass is defined (a missing type hint raises TypeError then).
    """

    __aicloud_handlers__: dict[str, HandlerInfo] = {}
    #: The deployment's registered model (``model:`` beside the service), set before ``setup()``;
    #: None without one. See the module docstring and :class:`aicloud.serving.runtimes.ServiceModel`.
    model: ServiceModel | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        try:
            cls.__aicloud_handlers__ = resolve_handlers(cls)
        except TypeError as exc:
            if "cannot resolve its type hints" not in str(exc):
                raise
            cls.__aicloud_handlers__ = {}  # forward references: resolved again by handlers_of()

    def setup(self) -> None:
        """Runs once per replica before it takes traffic: load weights, open files, warm caches."""


def handlers_of(cls: type[Service], *, required: bool = True) -> dict[str, HandlerInfo]:
    """The handlers of ``cls``; raises TypeError (saying what to change) when there are none and
    ``required`` (a generation Service serves OpenAI's routes without any)."""
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise TypeError(f"{cls!r} is not a subclass of aicloud.Service")
    found = cls.__dict__.get("__aicloud_handlers__") or resolve_handlers(cls)
    if not found and required:
        raise TypeError(f"{cls.__name__} has no @handler methods; decorate at least one method with @handler")
    return dict(found)

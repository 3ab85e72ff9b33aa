"""OpenAI's chat and completions routes in a replica serving a :class:`~aicloud.serving.generation.Generator`.

``POST /v1/chat/completions`` (messages through the Service's chat template) and ``POST
/v1/completions`` (a prompt, or a list of prompts), streaming (server-sent events: ``data: {chunk}``
per new text, ``data: [DONE]`` at the end; ``stream_options.include_usage`` adds a last chunk with
the usage) or not; ``max_tokens`` (``max_completion_tokens`` too), ``temperature`` (0: greedy),
``top_p``, ``stop`` (a string or up to 4), ``seed`` (choice ``i`` samples with ``seed + i``: the
same request gives the same text), ``n``. A prompt and ``max_tokens`` beyond the context is a 400.
Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``. A caller that hangs up
cancels its sequences: the engine drops them before its next step (``aicloud_generation_cancelled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any, Protocol, TypeGuard

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aicloud.serving.asgi import Receive, Send, wait_disconnect
from aicloud.serving.generation import Event, GenerationEngine, Generator, Sampling, Sequence
from aicloud.wire.openai import error_body

MAX_N = 16
MAX_STOPS = 4
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TPS_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class OpenAIError(Exception):
    """An error answered in OpenAI's shape (:mod:`aicloud.wire.openai`)."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> bytes:
        return error_body(self.status, self.message, param=self.param, code=self.code)


async def send_openai_error(send: Send, err: OpenAIError) -> None:
    body = err.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GenerationMetrics:
    """Time to first token, tokens/s per sequence, tokens, cancelled sequences, on the replica's /metrics."""

    def __init__(self, registry: CollectorRegistry, engine: GenerationEngine) -> None:
        r = registry
        self.ttft = Histogram(
            "aicloud_generation_time_to_first_token_seconds",
            "From a sequence's arrival to its first sampled token",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tps = Histogram(
            "aicloud_generation_tokens_per_second",
            "Tokens per second of each finished sequence after its first token",
            buckets=TPS_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("aicloud_generation_tokens", "Tokens generated", registry=r)
        self.cancelled = Counter(
            "aicloud_generation_cancelled", "Sequences dropped because their caller hung up", registry=r
        )
        active = Gauge("aicloud_generation_active_sequences", "Sequences in the running batch", registry=r)
        active.set_function(lambda: engine.active)

    def observe(self, name: str, value: float) -> None:
        if name == "ttft":
            self.ttft.observe(value)
        elif name == "tps":
            self.tps.observe(value)
        elif name == "token":
            self.tokens.inc(value)
        elif name == "cancelled":
            self.cancelled.inc(value)


def _number(doc: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = doc.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise OpenAIError(400, f"{name} must be a number between {low:g} and {high:g}", param=name)
    return float(value)


def _integer(doc: dict[str, Any], name: str, low: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OpenAIError(400, f"{name} must be an integer >= {low}", param=name)
    return value


def _stops(doc: dict[str, Any]) -> tuple[str, ...]:
    stop = doc.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) and s for s in stops)
        or len(stops) > MAX_STOPS
    ):
        raise OpenAIError(
            400, f"stop must be a non-empty string or a list of up to {MAX_STOPS}", param="stop"
        )
    return tuple(stops)


def _messages(doc: dict[str, Any]) -> list[dict[str, str]]:
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "messages must be a non-empty list of {role, content}", param="messages")
    out = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant") or not isinstance(content, str):
            raise OpenAIError(
                400, f"messages[{i}] must have a role and a string content", param=f"messages.{i}"
            )
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


class GenerationRoutes:
    """The chat and completions routes of one replica (see the module docstring)."""

    def __init__(
        self, service: Generator, name: str, registry: CollectorRegistry, max_waiting: int = 1024
    ) -> None:
        self.service = service
        self.name = name
        self.max_waiting = max_waiting  # sequences waiting for a place in the batch (max_queue)
        self.engine = GenerationEngine(service)
        self.metrics = GenerationMetrics(registry, self.engine)
        self.engine.observe = self.metrics.observe

    def routes(self) -> dict[str, _Route]:
        return {"/v1/chat/completions": _Route(self, True), "/v1/completions": _Route(self, False)}

    def models(self) -> dict[str, Any]:
        entry = {"id": self.name, "object": "model", "created": 0, "owned_by": "aicloud"}
        return {"object": "list", "data": [entry]}

    async def serve(self, chat: bool, body: bytes, receive: Receive, send: Send) -> None:
        try:
            doc = json.loads(body or b"null")
            if not isinstance(doc, dict):
                raise OpenAIError(400, "the body must be a JSON object")
            await self._serve(chat, doc, receive, send)
        except json.JSONDecodeError as exc:
            await send_openai_error(send, OpenAIError(400, f"the body is not valid JSON: {exc}"))
        except OpenAIError as err:
            await send_openai_error(send, err)

    def _prompts(self, chat: bool, doc: dict[str, Any]) -> list[list[int]]:
        svc = self.service
        if chat:
            return [svc.tokenize(svc.chat_template(_messages(doc)))]
        prompt = doc.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise OpenAIError(400, "prompt must be a string or a non-empty list of strings", param="prompt")
        return [svc.tokenize(p) for p in prompts]

    def _sampling(self, chat: bool, doc: dict[str, Any], prompt: list[int]) -> Sampling:
        context = self.service.context_length
        room = context - len(prompt)
        param = "messages" if chat else "prompt"
        if room <= 0:
            raise OpenAIError(
                400,
                f"the prompt is {len(prompt)} tokens; this model's context is {context} tokens",
                param=param,
                code="context_length_exceeded",
            )
        max_tokens = _integer(doc, "max_completion_tokens", 1) if chat else None
        if max_tokens is None:
            max_tokens = _integer(doc, "max_tokens", 1)
        if max_tokens is None:
            max_tokens = room if chat else min(16, room)
        if max_tokens > room:
            raise OpenAIError(
                400,
                f"this model's context is {context} tokens: the prompt ({len(prompt)} tokens) and "
                f"max_tokens ({max_tokens}) come to {len(prompt) + max_tokens}; "
                "lower max_tokens or the prompt",
                param="max_tokens",
                code="context_length_exceeded",
            )
        seed = doc.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise OpenAIError(400, "seed must be an integer", param="seed")
        return Sampling(
            max_tokens=max_tokens,
            temperature=_number(doc, "temperature", 1.0, 0.0, 2.0),
            top_p=_number(doc, "top_p", 1.0, 1e-9, 1.0),
            stop=_stops(doc),
            seed=seed,
        )

    async def _serve(self, chat: bool, doc: dict[str, Any], receive: Receive, send: Send) -> None:
        n = _integer(doc, "n", 1) or 1
        if n > MAX_N:
            raise OpenAIError(400, f"n must be at most {MAX_N}", param="n")
        stream = bool(doc.get("stream", False))
        options = doc.get("stream_options") or {}
        include_usage = stream and isinstance(options, dict) and bool(options.get("include_usage"))
        given = doc.get("model")
        model = given if isinstance(given, str) and given else self.name
        prompts = self._prompts(chat, doc)
        samplings = [self._sampling(chat, doc, p) for p in prompts]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        seqs: list[Sequence] = []
        for p, (prompt, sampling) in enumerate(zip(prompts, samplings, strict=True)):
            for i in range(n):
                index = p * n + i
                seed = None if sampling.seed is None else sampling.seed + i
                seqs.append(Sequence(prompt, _with_seed(sampling, seed), _emitter(loop, queue, index)))
        reply = _Reply(chat, model, include_usage, sum(len(p) for p in prompts), len(seqs))
        if self.engine.waiting + len(seqs) > self.max_waiting:
            raise OpenAIError(503, "the replica's queue is full (max_queue sequences wait); retry shortly")
        self.engine.submit(seqs)
        gone_future = getattr(receive, "disconnected", None)
        gone: asyncio.Future[Any] = (
            gone_future() if gone_future is not None else asyncio.ensure_future(wait_disconnect(receive))
        )
        try:
            if stream:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
                    }
                )
                if chat:
                    for i in range(len(seqs)):
                        await _sse(send, reply.chunk(i, {"role": "assistant", "content": ""}, None))
            left = len(seqs)
            while left:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    self.engine.cancel(seqs)
                    return
                index, event = getter.result()
                if event.finish_reason == "error" and not stream:
                    self.engine.cancel(seqs)
                    raise OpenAIError(500, "generation failed; see the replica's log")
                reply.add(index, event)
                if event.finish_reason is not None:
                    left -= 1
                if stream and (event.text or event.finish_reason):
                    delta = {"content": event.text} if chat else event.text
                    if event.text and event.finish_reason:
                        await _sse(send, reply.chunk(index, delta, None))
                        delta = {} if chat else ""
                    await _sse(send, reply.chunk(index, delta, event.finish_reason))
            if stream:
                if include_usage:
                    await _sse(send, reply.usage_chunk())
                await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
            else:
                body = json.dumps(reply.whole()).encode()
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
        except OSError:  # the caller's connection broke while we wrote
            self.engine.cancel(seqs)
        finally:
            if gone_future is None:
                gone.cancel()


def _with_seed(s: Sampling, seed: int | None) -> Sampling:
    return Sampling(max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p, stop=s.stop, seed=seed)


def _emitter(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[int, Event]], index: int) -> Any:
    def emit(event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed
            loop.call_soon_threadsafe(queue.put_nowait, (index, event))

    return emit


async def _sse(send: Send, doc: dict[str, Any]) -> None:
    data = b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
    await send({"type": "http.response.body", "body": data, "more_body": True})


class _Reply:
    """The response being built: choices' texts, finish reasons, usage, chunk shapes."""

    def __init__(self, chat: bool, model: str, include_usage: bool, prompt_tokens: int, choices: int) -> None:
        self.chat, self.model, self.include_usage = chat, model, include_usage
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.texts = [""] * choices
        self.reasons: list[str | None] = [None] * choices
        self.tokens = [0] * choices
        self.prompt_tokens = prompt_tokens

    def add(self, index: int, event: Event) -> None:
        self.texts[index] += event.text
        self.tokens[index] = max(self.tokens[index], event.tokens)
        if event.finish_reason is not None:
            self.reasons[index] = event.finish_reason

    def usage(self) -> dict[str, int]:
        done = sum(self.tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def chunk(self, index: int, delta: Any, reason: str | None) -> dict[str, Any]:
        if self.chat:
            choice = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}
            doc = {**self._head("chat.completion.chunk"), "choices": [choice]}
        else:
            choice = {"index": index, "text": delta, "finish_reason": reason, "logprobs": None}
            doc = {**self._head("text_completion"), "choices": [choice]}
        if self.include_usage:
            doc["usage"] = None
        return doc

    def usage_chunk(self) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": self.usage()}

    def whole(self) -> dict[str, Any]:
        if self.chat:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": self.reasons[i],
                    "logprobs": None,
                }
                for i, text in enumerate(self.texts)
            ]
            return {**self._head("chat.completion"), "choices": choices, "usage": self.usage()}
        choices = [
            {"index": i, "text": text, "finish_reason": self.reasons[i], "logprobs": None}
            for i, text in enumerate(self.texts)
        ]
        return {**self._head("text_completion"), "choices": choices, "usage": self.usage()}


def is_generator(service: object) -> TypeGuard[Generator]:
    return isinstance(service, Generator)


class RawRoute(Protocol):
    async def serve(self, body: bytes, receive: Receive, send: Send) -> None: ...


class _Route:
    """A raw route of :class:`~aicloud.serving.app.ReplicaApp` (``serve(body, receive, send)``)."""

    def __init__(self, routes: GenerationRoutes, chat: bool) -> None:
        self.routes, self.chat = routes, chat

    async def serve(self, body: bytes, receive: Receive, send: Send) -> None:
        await self.routes.serve(self.chat, body, receive, send)

"""The generation protocol: a Service that generates tokens, run with continuous batching.

    from aicloud.serving.generation import Generator, Sequence

    class MyLM(Generator):
        context_length = 256            # prompt + max_tokens must fit (else a 400)
        max_sequences = 16              # sequences generating at once (the running batch)
        eos_token_ids = (0,)

        def setup(self) -> None: ...    # load weights, the tokenizer, allocate caches
        def tokenize(self, text: str) -> list[int]: ...
        def detokenize(self, ids: list[int]) -> str: ...
        def step(self, batch: list[Sequence]) -> np.ndarray:
            # logits [len(batch), vocab] of each sequence's next token. seq.pending: the tokens the
            # model has not seen yet (the whole prompt on a sequence's first step, then the one token
            # sampled last); seq.fed: how many it has seen (the position of pending[0]);
            # seq.state: yours (a KV-cache slot...), None before the first step.
            ...
        def release(self, seq: Sequence) -> None: ...   # a sequence left the batch: free its state

A replica serving a :class:`Generator` answers ``POST /v1/chat/completions``, ``POST /v1/completions``
and ``GET /v1/models`` (:mod:`aicloud.serving.openai_chat`). One engine thread
(:class:`GenerationEngine`) owns the model: between two steps it admits waiting sequences into the
running batch (up to ``max_sequences``) and drops the finished and the cancelled ones (a caller
that hung up), so requests join and leave without waiting for each other (continuous batching).
Sampling (temperature, top-p, a seed per request), stop strings, ``max_tokens`` and the context
limit are the engine's; the Service only maps tokens to logits. ``chat_template`` turns messages
into a prompt (see :func:`chat_prompt`); override it for another format.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aicloud.serving.service import Service

log = logging.getLogger("aicloud.serving")

ROLES = ("system", "user", "assistant")


def chat_prompt(messages: list[dict[str, str]]) -> str:
    """The default chat template: ``<|role|>\\n{content}<|end|>\\n`` per message, then
    ``<|assistant|>\\n``."""
    parts = [f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages]
    return "".join(parts) + "<|assistant|>\n"


@dataclass(frozen=True)
class Sampling:
    """How one sequence is sampled and when it ends."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Event:
    """What a sequence produced in one step: new text, and why it ended (None while it goes on)."""

    text: str
    finish_reason: str | None = None
    tokens: int = 0


@dataclass(eq=False)
class Sequence:
    """One generated sequence in the running batch (one choice of a request)."""

    prompt: list[int]
    sampling: Sampling
    emit: Callable[[Event], None]
    tokens: list[int] = field(default_factory=list)  # generated so far
    fed: int = 0  # tokens the model has seen
    state: Any = None  # the Service's own (a KV-cache slot...)
    cancelled: bool = False
    id: int = field(default_factory=itertools.count().__next__)
    rng: np.random.Generator = field(init=False)
    sent: int = 0  # characters of text emitted
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.sampling.seed)

    @property
    def all_tokens(self) -> list[int]:
        return self.prompt + self.tokens

    @property
    def pending(self) -> list[int]:
        return self.all_tokens[self.fed :]


class Generator(Service):
    """Base class of generation Services (see the module docstring)."""

    context_length: int = 256
    max_sequences: int = 16
    eos_token_ids: tuple[int, ...] = ()

    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError

    def detokenize(self, ids: list[int]) -> str:
        raise NotImplementedError

    def step(self, batch: list[Sequence]) -> np.ndarray:
        raise NotImplementedError

    def release(self, seq: Sequence) -> None:
        """A sequence left the batch (finished, cancelled or failed): free what ``step`` kept for it."""

    def chat_template(self, messages: list[dict[str, str]]) -> str:
        return chat_prompt(messages)


def sample(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """Greedy at temperature 0; else softmax(logits / temperature) cut to the top-p nucleus."""
    if sampling.temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / sampling.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if sampling.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = int(np.searchsorted(np.cumsum(p[order]), sampling.top_p)) + 1
        cut = np.zeros_like(p)
        cut[order[:keep]] = p[order[:keep]]
        p = cut / cut.sum()
    return int(rng.choice(len(p), p=p))


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of ``text`` not to emit yet: a partial UTF-8 character, or the start of
    a stop string."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    if text.endswith("\ufffd"):
        hold = max(hold, len(text) - len(text.rstrip("\ufffd")))
    return hold


class GenerationEngine:
    """Continuous batching over one :class:`Generator` in a thread of its own."""

    def __init__(self, service: Generator, observe: Callable[[str, float], None] | None = None) -> None:
        self.service = service
        self.observe = observe or (lambda _name, _value: None)
        self._waiting: deque[Sequence] = deque()
        self._active: list[Sequence] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="aicloud-generation", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, seqs: list[Sequence]) -> None:
        with self._cv:
            self._waiting.extend(seqs)
            self._cv.notify_all()

    def cancel(self, seqs: list[Sequence]) -> None:
        for s in seqs:
            s.cancelled = True  # dropped before the next step

    # --- the engine thread
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._waiting and not self._active:
                    self._cv.wait()
                if self._closed:
                    return
                room = self.service.max_sequences - len(self._active)
                while room > 0 and self._waiting:
                    self._active.append(self._waiting.popleft())
                    room -= 1
            for s in [s for s in self._active if s.cancelled]:
                self._leave(s, None)
                self.observe("cancelled", 1)
            if not self._active:
                continue
            batch = list(self._active)
            try:
                logits = self.service.step(batch)
            except Exception:
                log.exception("generation step failed")
                for s in batch:
                    self._leave(s, Event("", "error"))
                continue
            for s, row in zip(batch, logits, strict=True):
                self._advance(s, row)

    def _advance(self, s: Sequence, row: np.ndarray) -> None:
        svc = self.service
        s.fed = len(s.all_tokens)
        token = sample(row, s.sampling, s.rng)
        now = time.perf_counter()
        if s.first_token_at is None:
            s.first_token_at = now
            self.observe("ttft", now - s.started)
        if token in svc.eos_token_ids:
            self._finish(s, "stop")
            return
        s.tokens.append(token)
        self.observe("token", 1)
        text = svc.detokenize(s.tokens)
        for stop in s.sampling.stop:
            at = text.find(stop)
            if at >= 0:
                self._finish(s, "stop", text[:at])
                return
        if len(s.tokens) >= s.sampling.max_tokens or len(s.all_tokens) >= svc.context_length:
            self._finish(s, "length", text)
            return
        ready = len(text) - _held_back(text, s.sampling.stop)
        if ready > s.sent:
            s.emit(Event(text[s.sent : ready], None, len(s.tokens)))
            s.sent = ready

    def _finish(self, s: Sequence, reason: str, text: str | None = None) -> None:
        if text is None:
            text = self.service.detokenize(s.tokens)
        tail = text[s.sent :] if len(text) > s.sent else ""
        s.sent = len(text)
        if s.first_token_at is not None and len(s.tokens) > 1:
            span = time.perf_counter() - s.first_token_at
            if span > 0:
                self.observe("tps", (len(s.tokens) - 1) / span)
        self._leave(s, Event(tail, reason, len(s.tokens)))

    def _leave(self, s: Sequence, event: Event | None) -> None:
        with contextlib.suppress(ValueError):
            self._active.remove(s)
        try:
            self.service.release(s)
        except Exception:
            log.exception("release() failed")
        if event is not None:
            s.emit(event)


def async_emitter(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event]) -> Callable[[Event], None]:
    """An ``emit`` for :class:`Sequence` that hands events from the engine thread to an asyncio queue."""

    def emit(event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed
            loop.call_soon_threadsafe(queue.put_nowait, event)

    return emit


def generation_service(folder: str | Path) -> Generator | None:
    """The generation Service that serves a registered version's folder (a ``text-generation``
    version of the zoo's tiny LM: ``aicloud deploy create chat --model zoo/tiny-lm``), else None."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    arch = config.get("architecture") if isinstance(config, dict) else None
    if config.get("task") != "text-generation" or not isinstance(arch, dict) or arch.get("type") != "tiny-lm":
        return None
    from aicloud.serving.tiny_lm import TinyLM

    return TinyLM(folder)

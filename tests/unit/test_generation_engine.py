"""The generation engine (aicloud.serving.generation): continuous batching (a sequence joins the
running batch between steps, a finished one leaves), stop strings held back until decided, greedy
and seeded sampling, cancellation, and the Service's release() for every sequence that leaves."""

from __future__ import annotations

import threading

import numpy as np

from aicloud.serving.generation import Event, GenerationEngine, Generator, Sampling, Sequence, sample

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


class Next(Generator):
    """Predicts the letter after the last one; records each step's batch."""

    context_length = 64
    max_sequences = 3

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.released: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def tokenize(self, text: str) -> list[int]:
        return [ALPHABET.index(c) for c in text]

    def detokenize(self, ids: list[int]) -> str:
        return "".join(ALPHABET[i] for i in ids)

    def step(self, batch: list[Sequence]) -> np.ndarray:
        self.gate.wait()
        self.batches.append([s.id for s in batch])
        out = np.full((len(batch), 26), -1e9, dtype=np.float32)
        for row, seq in enumerate(batch):
            assert seq.pending and seq.fed + len(seq.pending) == len(seq.all_tokens)
            out[row, (seq.all_tokens[-1] + 1) % 26] = 0.0
        return out

    def release(self, seq: Sequence) -> None:
        self.released.append(seq.id)


def run(engine: GenerationEngine, svc: Next, prompts: list[str], sampling: Sampling) -> list[list[Event]]:
    events: list[list[Event]] = [[] for _ in prompts]
    done = threading.Semaphore(0)

    def emitter(i: int):  # type: ignore[no-untyped-def]
        def emit(ev: Event) -> None:
            events[i].append(ev)
            if ev.finish_reason:
                done.release()

        return emit

    seqs = [Sequence(svc.tokenize(p), sampling, emitter(i)) for i, p in enumerate(prompts)]
    engine.submit(seqs)
    for _ in prompts:
        assert done.acquire(timeout=10)
    return events


def test_continuous_batching_stop_strings_and_release() -> None:
    svc = Next()
    engine = GenerationEngine(svc)
    engine.start()
    try:
        events = run(engine, svc, ["a", "k", "p", "u"], Sampling(max_tokens=5, temperature=0))
        texts = ["".join(e.text for e in evs) for evs in events]
        assert texts == ["bcdef", "lmnop", "qrstu", "vwxyz"]
        assert all(evs[-1].finish_reason == "length" and evs[-1].tokens == 5 for evs in events)
        assert max(len(b) for b in svc.batches) <= 3  # max_sequences
        assert len(svc.released) == 4
        # a stop string: the text ends before it; a partial match is held back, never emitted then withdrawn
        events = run(engine, svc, ["a"], Sampling(max_tokens=20, temperature=0, stop=("efz", "fg")))
        assert "".join(e.text for e in events[0]) == "bcde" and events[0][-1].finish_reason == "stop"
        # the context limit ends a sequence with "length"
        events = run(engine, svc, ["a" * 62], Sampling(max_tokens=50, temperature=0))
        assert events[0][-1].finish_reason == "length" and events[0][-1].tokens == 2
    finally:
        engine.close()


def test_a_cancelled_sequence_leaves_the_batch() -> None:
    svc = Next()
    counts: list[str] = []
    engine = GenerationEngine(svc, observe=lambda name, _v: counts.append(name))
    got: list[Event] = []
    seq = Sequence([0], Sampling(max_tokens=50, temperature=0), got.append)
    svc.gate.clear()
    engine.start()
    try:
        engine.submit([seq])
        engine.cancel([seq])
        svc.gate.set()
        for _ in range(200):
            if seq.id in svc.released:
                break
            threading.Event().wait(0.01)
        assert seq.id in svc.released and "cancelled" in counts
        assert not got or got[-1].finish_reason is None  # no finish event for a caller that left
    finally:
        engine.close()


def test_sampling_greedy_seeded_and_top_p() -> None:
    logits = np.array([0.0, 1.0, 2.0, 0.5], dtype=np.float32)
    assert sample(logits, Sampling(max_tokens=1, temperature=0), np.random.default_rng(0)) == 2
    draws = [sample(logits, Sampling(max_tokens=1, seed=3), np.random.default_rng(3)) for _ in range(5)]
    assert len(set(draws)) == 1  # the same seed, the same draw
    rng = np.random.default_rng(1)
    tight = {sample(logits, Sampling(max_tokens=1, top_p=0.01), rng) for _ in range(50)}
    assert tight == {2}  # the nucleus holds only the most likely token

"""The zoo's tiny LM (aicloud.serving.tiny_lm): its KV-cache path (a prompt prefilled into a slot,
then one token per step for several sequences at different positions together) gives the logits of
a full forward pass over each sequence; the shipped files load (config aicloud.model/v1, task
text-generation) and the chat template's markers are single special tokens."""

from __future__ import annotations

import json

import torch

from aicloud.serving.generation import Sampling, Sequence, chat_prompt, generation_service
from aicloud.serving.tiny_lm import DATA, TinyLM, TinyLMConfig, TinyLMModule


def test_cached_decoding_matches_a_full_forward_pass() -> None:
    torch.manual_seed(0)
    cfg = TinyLMConfig(vocab_size=50, context=32, dim=32, layers=2, heads=4)
    module = TinyLMModule(cfg).eval()
    shape = (3, cfg.heads, cfg.context, cfg.head_dim)
    caches = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(cfg.layers)]
    seqs = [torch.randint(0, 50, (n,)).tolist() for n in (5, 9, 2)]
    with torch.inference_mode():
        for slot, s in enumerate(seqs):
            last = module.prefill(torch.tensor([s]), caches, slot)
            torch.testing.assert_close(last, module(torch.tensor([s]))[0, -1], atol=1e-5, rtol=0)
        for _ in range(4):  # all three sequences, each at its own position, one token each
            nxt = [int(t) for t in torch.randint(0, 50, (3,))]
            pos = torch.tensor([len(s) for s in seqs])
            got = module.decode(torch.tensor(nxt), caches, torch.tensor([0, 1, 2]), pos)
            for i, s in enumerate(seqs):
                s.append(nxt[i])
                torch.testing.assert_close(got[i], module(torch.tensor([s]))[0, -1], atol=1e-5, rtol=0)


def test_the_shipped_model_loads_and_its_markers_are_special_tokens() -> None:
    config = json.loads((DATA / "config.json").read_text())
    assert config["format"] == "aicloud.model/v1" and config["task"] == "text-generation"
    svc = generation_service(DATA)
    assert isinstance(svc, TinyLM)
    svc.setup()
    prompt = svc.tokenize(chat_prompt([{"role": "user", "content": "hi"}]))
    for marker in ("<|user|>", "<|end|>", "<|assistant|>"):
        assert svc.tokenizer.token_to_id(marker) in prompt
    seq = Sequence(prompt, Sampling(max_tokens=4, temperature=0), lambda _e: None)
    logits = svc.step([seq])
    assert logits.shape == (1, config["architecture"]["vocab_size"]) and seq.state is not None
    svc.release(seq)
    assert seq.state is None and len(svc.free) == svc.max_sequences

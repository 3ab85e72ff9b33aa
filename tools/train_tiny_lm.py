"""Train the zoo's tiny causal LM (``zoo/tiny-lm``) on CPU, deterministically, and write its files.

    .venv/bin/python tools/train_tiny_lm.py    # writes model.safetensors, config.json, tokenizer.json
                                               # into src/aicloud/zoo/data/tiny_lm/

The corpus is ``src/aicloud/zoo/data/tiny_lm/corpus.txt`` (written for the repository, CC0) plus
dialogues this script writes from templates in the chat format of docs/openai.md (CC0 as well).
The tokenizer is a byte-level BPE (the ``tokenizers`` library) with the chat's special tokens; the
model is :class:`aicloud.serving.tiny_lm.TinyLMModule`. One thread and fixed seeds: the same
machine gives the same weights. A few minutes on two cores.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch.nn import functional as F

from aicloud.serving.generation import chat_prompt
from aicloud.serving.tiny_lm import DATA, SPECIAL_TOKENS, TinyLMConfig, TinyLMModule, perplexity, save_module

NAMES = ["Ada", "Ben", "Cleo", "Dev", "Eli", "Faye", "Gus", "Hana", "Ivo", "June"]
THINGS = ["apple", "book", "lamp", "river", "cloud", "bridge", "clock", "garden", "robot", "boat"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "grey"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def dialogues(rng: random.Random, count: int) -> list[str]:
    """Short chats in the template's format: greetings, counting, colours, small facts."""
    out = []
    for _ in range(count):
        kind = rng.randrange(5)
        name, thing, colour = rng.choice(NAMES), rng.choice(THINGS), rng.choice(COLOURS)
        a, b = rng.randrange(6), rng.randrange(5)
        if kind == 0:
            user, reply = f"Hello, I am {name}.", f"Hello {name}! How can I help you today?"
        elif kind == 1:
            user, reply = (
                f"What is {NUMBERS[a]} plus {NUMBERS[b]}?",
                f"{NUMBERS[a].capitalize()} plus {NUMBERS[b]} is {NUMBERS[a + b]}.",
            )
        elif kind == 2:
            user, reply = f"What colour is the {thing}?", f"The {thing} is {colour}."
        elif kind == 3:
            user = f"Count to {NUMBERS[a + 1]}."
            reply = ", ".join(n.capitalize() if i == 0 else n for i, n in enumerate(NUMBERS[1 : a + 2])) + "."
        else:
            user, reply = (
                f"Tell me about the {thing}.",
                f"The {thing} is {colour}, and {name} likes it very much.",
            )
        messages = [{"role": "user", "content": user}]
        if rng.random() < 0.3:
            messages.insert(0, {"role": "system", "content": "You are a helpful assistant."})
        out.append(chat_prompt(messages) + reply + "<|end|>\n")
    return out


def build_texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    corpus = (DATA / "corpus.txt").read_text()
    stories = [p.strip() + "<|end|>\n" for p in corpus.split("\n\n") if p.strip()]
    return stories * 8 + dialogues(rng, 3000)


def train_tokenizer(texts: list[str], vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cfg = TinyLMConfig()
    texts = build_texts(args.seed)
    random.Random(args.seed).shuffle(texts)
    tok = train_tokenizer(texts, cfg.vocab_size)
    ids = torch.tensor([i for t in texts for i in tok.encode(t).ids], dtype=torch.long)
    split = int(len(ids) * 0.95)
    train, held = ids[:split], ids[split:]
    model = TinyLMModule(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    length, batch = 128, 16
    started = time.perf_counter()
    for step in range(args.steps):
        starts = torch.randint(0, len(train) - length - 1, (batch,), generator=gen)
        x = torch.stack([train[s : s + length + 1] for s in starts.tolist()])
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.perf_counter() - started:.0f}s", flush=True)
    model.eval()
    n = (len(held) - 1) // length
    ppl = perplexity(model, held[: n * length + 1].unfold(0, length + 1, length)) if n else float("nan")
    args.out.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out / "tokenizer.json"))
    extra = {
        "tokens_trained": len(train),
        "steps": args.steps,
        "held_out_perplexity": round(ppl, 2),
        "seed": args.seed,
        "licence": "CC0-1.0 (corpus and weights)",
    }
    save_module(model, args.out, extra)
    params = sum(p.numel() for p in model.parameters())
    print(f"held-out perplexity {ppl:.2f}; {params} parameters; wrote {args.out}")


if __name__ == "__main__":
    main()

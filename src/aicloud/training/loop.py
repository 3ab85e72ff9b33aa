"""The training loop of the built-in tasks: epochs of shuffled mini-batches, evaluation, early stopping,
checkpoints; on one process or several (DistributedDataParallel).

It reads top to bottom: wrap the model (DDP when there are several workers), make the optimizer, resume
from a checkpoint if one is given; then per epoch: this worker's shard of a shuffled order (a
``DistributedSampler``, seeded with ``seed`` and the epoch, so the order is a function of the epoch
alone), forward passes under autocast when the precision is bf16, the global train loss (all-reduced),
evaluation and metrics on rank 0, the best weights, a checkpoint every ``checkpoint_every`` epochs; at
the end restore the best weights when early stopping is on.

``params.batch_size`` is the *global* batch: each of ``W`` workers takes ``ceil(batch_size / W)`` rows
a step, and DDP averages the gradients, so ``W`` workers follow the single-worker trajectory closely.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from aicloud.schemas.training import TrainParams
from aicloud.training.checkpoint import Checkpoint

DIST_TIMEOUT = timedelta(minutes=10)


class Tracker(Protocol):
    """Where per-epoch metrics go (the runtime's ``log_metric`` in a job)."""

    def log_metric(self, name: str, value: float, step: int | None = None) -> None: ...


class NullTracker:
    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        pass


class Checkpoints(Protocol):
    """Where checkpoints go (the job's checkpoint API in a job)."""

    def save(self, state: dict[str, Any], epoch: int, extra: dict[str, Any]) -> None: ...


Evaluate = Callable[[nn.Module], dict[str, float]]
"""Computes eval metrics (``eval_loss`` first) of a model in eval mode."""


@dataclass
class FitResult:
    metrics: dict[str, float]  # eval metrics of the kept model
    epochs: int  # epochs run
    best_epoch: int  # the epoch whose weights were kept
    resumed_from: int | None = None  # the checkpoint's epoch, when it resumed from one


@dataclass
class FitOptions:
    """How to run :func:`fit`: where, in what precision, with which workers and checkpoints."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1
    checkpoint_every: int = 0
    checkpoints: Checkpoints | None = None
    resume: Checkpoint | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def chief(self) -> bool:
        return self.rank == 0


# -----------------------------------------------------------------------------------------------------
# process group


def init_distributed(rank: int, world_size: int, device: torch.device) -> None:
    """Join the job's process group (``MASTER_ADDR``/``MASTER_PORT`` from the environment):
    gloo on the CPU, nccl on GPUs. Does nothing for a single worker."""
    if world_size <= 1 or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=DIST_TIMEOUT)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast of forward passes on ``device`` (CPU or CUDA), or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# -----------------------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=params.lr, momentum=0.9, weight_decay=params.weight_decay
        )
    if params.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def _batches(order: list[int], size: int) -> Iterator[torch.Tensor]:
    idx = torch.tensor(order, dtype=torch.long)
    for start in range(0, len(idx), size):
        yield idx[start : start + size]


def _gather(opts: FitOptions, mine: torch.Tensor) -> list[torch.Tensor]:
    """``mine`` from every worker, in rank order (a collective: every rank calls it)."""
    if not opts.distributed:
        return [mine]
    on = opts.device if opts.device.type == "cuda" else torch.device("cpu")
    parts = [torch.empty_like(mine, device=on) for _ in range(opts.world_size)]
    dist.all_gather(parts, mine.to(on))
    return [p.cpu() for p in parts]


def _rng_states(opts: FitOptions) -> dict[str, list[torch.Tensor]]:
    """Every worker's torch generator states: the CPU one, and its GPU's when it trains on one."""
    states = {"rng_by_rank": _gather(opts, torch.get_rng_state())}
    if opts.device.type == "cuda":
        states["cuda_rng_by_rank"] = _gather(opts, torch.cuda.get_rng_state(opts.device))
    return states


def _restore_rng(state: dict[str, Any], opts: FitOptions) -> None:
    """This worker's generator states from a checkpoint (rank 0's when the worker count changed)."""
    for key, device in (("rng_by_rank", None), ("cuda_rng_by_rank", opts.device)):
        states = state.get(key) or []
        if not states or (device is not None and device.type != "cuda"):
            continue
        mine = states[opts.rank] if len(states) == opts.world_size else states[0]
        if device is None:
            torch.set_rng_state(mine)
        else:
            torch.cuda.set_rng_state(mine, device)


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: nn.Module,
    evaluate: Evaluate,
    params: TrainParams,
    tracker: Tracker,
    log: Callable[[str], None] = print,
    options: FitOptions | None = None,
) -> FitResult:
    """Train ``model`` on ``(x, y)`` for ``params.epochs``; see the module docstring.

    ``x`` and ``y`` are on ``options.device``. In a multi-worker job every rank calls this with the
    same data; metrics, evaluation and checkpoints happen on rank 0.
    """
    opts = options or FitOptions()
    device, world, rank = opts.device, opts.world_size, opts.rank
    optimizer = make_optimizer(model, params)
    n = x.shape[0]
    local_batch = max(1, math.ceil(params.batch_size / world))
    rows: Any = range(n)  # the sampler needs only len()
    sampler: DistributedSampler[int] = DistributedSampler(
        rows, num_replicas=world, rank=rank, shuffle=True, seed=params.seed
    )
    best_loss, best_epoch, best_metrics = math.inf, 0, {}
    best_state: dict[str, torch.Tensor] | None = None
    metrics: dict[str, float] = {}
    first = 1

    # --- resume: weights, optimizer, best so far, this worker's generator; go on after its epoch
    if opts.resume is not None:
        state = opts.resume.state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        best = state.get("best") or {}
        best_loss = float(best.get("loss", math.inf))
        best_epoch = int(best.get("epoch", 0))
        best_metrics = dict(best.get("metrics") or {})
        best_state = best.get("state") or ({} if best_epoch else None)
        _restore_rng(state, opts)
        first = int(opts.resume.epoch or 0) + 1
        log(f"resuming after the checkpoint of epoch {first - 1}")
        tracker.log_metric("resumed_from_epoch", first - 1, step=first - 1)

    net: nn.Module = model
    if opts.distributed:
        ids = [device.index or 0] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    epoch = first - 1
    for epoch in range(first, params.epochs + 1):
        # --- one pass over this worker's shard of the shuffled training data
        t0 = time.perf_counter()
        net.train()
        sampler.set_epoch(epoch)
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, rows
        for idx in _batches(list(sampler), local_batch):
            idx = idx.to(device)
            with autocast(device, opts.precision):
                out = net(x[idx])
            loss = loss_fn(out.float(), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals[0] += loss.detach().double() * len(idx)
            totals[1] += len(idx)
        if opts.distributed:
            dist.all_reduce(totals)
        train_loss = float(totals[0] / totals[1].clamp(min=1))
        train_seconds = time.perf_counter() - t0

        # --- evaluate, log, remember the best (rank 0)
        stop = False
        if opts.chief:
            model.eval()
            with torch.inference_mode(), autocast(device, opts.precision):
                metrics = evaluate(model)
            seconds = time.perf_counter() - t0
            tracker.log_metric("train_loss", train_loss, step=epoch)
            for name, value in metrics.items():
                tracker.log_metric(name, value, step=epoch)
            tracker.log_metric("epoch_seconds", seconds, step=epoch)
            tracker.log_metric("samples_per_second", n / max(train_seconds, 1e-9), step=epoch)
            epoch_end = getattr(tracker, "epoch_end", None)  # a job's session sends the epoch at once
            if epoch_end is not None:
                epoch_end()
            shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            log(f"epoch {epoch}/{params.epochs} train_loss={train_loss:.4f} {shown} ({seconds:.2f}s)")

            eval_loss = metrics.get("eval_loss", math.nan)
            if eval_loss < best_loss or best_state is None:
                best_loss, best_epoch, best_metrics = eval_loss, epoch, dict(metrics)
                if params.patience > 0:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    best_state = {}
            elif params.patience > 0 and epoch - best_epoch >= params.patience:
                log(
                    f"early stopping: eval_loss has not improved for {params.patience} epochs "
                    f"(best: epoch {best_epoch})"
                )
                stop = True
        if opts.distributed and params.patience > 0:  # every rank stops at the same epoch
            flag = torch.tensor([1.0 if stop else 0.0], device=device)
            dist.broadcast(flag, src=0)
            stop = bool(flag.item())

        # --- checkpoint: everything needed to go on from the next epoch
        if opts.checkpoint_every > 0 and epoch % opts.checkpoint_every == 0 and not stop:
            rngs = _rng_states(opts)
            if opts.chief and opts.checkpoints is not None:
                state = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "best": {"loss": best_loss, "epoch": best_epoch, "metrics": best_metrics,
                             "state": best_state or {}},
                    **rngs,
                    "sampler": {"epoch": epoch, "seed": params.seed, "world_size": world},
                }  # fmt: skip
                opts.checkpoints.save(state, epoch, {"world_size": world, "precision": opts.precision})
        if stop:
            break

    if opts.distributed:
        dist.barrier()
    # --- keep the best weights when early stopping is on; otherwise the last ones
    model.eval()
    if opts.chief and not metrics:  # resumed after the last epoch: nothing ran, measure the model
        with torch.inference_mode(), autocast(device, opts.precision):
            metrics = evaluate(model)
    resumed = int(opts.resume.epoch or 0) if opts.resume is not None else None
    if params.patience > 0 and best_state:
        model.load_state_dict(best_state)
        return FitResult(metrics=best_metrics, epochs=epoch, best_epoch=best_epoch, resumed_from=resumed)
    return FitResult(metrics=metrics, epochs=epoch, best_epoch=epoch, resumed_from=resumed)

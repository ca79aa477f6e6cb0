"""One optimisation step and what feeds it: the step's seeded draws, batch preparation (SASSL included, ahead
on a side stream when asked), the autocast precision, the step itself and its one host read (the loss)."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn as nn

from sassl import dist
from sassl.data.loader import to_unit
from sassl.learners import MomentumTwoTower
from sassl.training.config import PretrainConfig
from sassl.views import Prepared, TwoViews

def step_generator(cfg: PretrainConfig, step: int) -> torch.Generator:
    """The CPU generator of a step's draws (SASSL, views) on this rank: seeded by (seed, step, rank)."""
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * dist.world_size() + dist.rank())


def prepare_batch(views: TwoViews, c1: torch.Tensor, c2: torch.Tensor, g: torch.Generator,
                  accumulate: int = 1, local: torch.Tensor | None = None) -> list[Prepared]:
    """A batch of crop pairs (uint8 or [0, 1]) cut into `accumulate` micro-batches, each with its draws made
    and SASSL applied (TwoViews.prepare), in the order a step consumes them. `local`: multi-crop's small crops
    (B, N, 3, s, s), or None."""
    if c1.dtype == torch.uint8:
        c1, c2 = to_unit(c1), to_unit(c2)
    if local is None:
        return [views.prepare(m1, m2, g) for m1, m2 in zip(c1.chunk(accumulate), c2.chunk(accumulate))]
    local = to_unit(local) if local.dtype == torch.uint8 else local
    return [views.prepare(m1, m2, g, list(ml.unbind(1)))
            for m1, m2, ml in zip(c1.chunk(accumulate), c2.chunk(accumulate), local.chunk(accumulate))]


def prepared_ahead(batches: Iterable, prepare: Callable[[list, int], list[Prepared]],
                   first_step: int, device: torch.device, ahead: bool) -> Iterator[list[Prepared]]:
    """The prepared batches of a loader, step by step. With `ahead`, batch k+1 is prepared (SASSL included)
    before batch k is handed out: on CUDA on a side stream, so stylizing overlaps step k's kernels; on the
    CPU in order, with the same draws, so the result equals preparing each batch when its step comes."""
    main = torch.cuda.current_stream(device) if ahead and device.type == "cuda" else None
    side = torch.cuda.Stream(device) if main is not None else None

    def launch(batch, step):
        if side is None:
            return prepare(batch, step), None
        side.wait_stream(main)  # the batch's copy to the device is ordered on the main stream
        with torch.cuda.stream(side):
            prep = prepare(batch, step)
            done = torch.cuda.Event()
            done.record(side)
        return prep, done

    def handed_out(prep, done):
        if done is not None:
            main.wait_event(done)  # this batch's work only, not the next batch's queued after it
            for p in prep:
                for t in (p.crop1, p.crop2, p.clean1, *p.local):
                    if t is not None:
                        t.record_stream(main)
        return prep

    it, step = iter(batches), first_step
    if not ahead:
        for batch in it:
            yield prepare(batch, step)
            step += 1
        return
    first = next(it, None)
    if first is None:
        return
    pending = launch(first, step)
    for batch in it:
        step += 1
        queued = launch(batch, step)
        yield handed_out(*pending)
        pending = queued
    yield handed_out(*pending)


def ddp_of(model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
    """The DDP wrapper of a step model, also under torch.compile (whose wrapper is not a DDP instance)."""
    model = getattr(model, "_orig_mod", model)
    return model if isinstance(model, nn.parallel.DistributedDataParallel) else None


def unwrap(model: nn.Module) -> nn.Module:
    """The learner inside torch.compile's and DDP's wrappers."""
    ddp = ddp_of(model)
    return ddp.module if ddp is not None else getattr(model, "_orig_mod", model)


def train_step(model: nn.Module, views: TwoViews, opt: torch.optim.Optimizer, batch: list[Prepared], lr: float,
               momentum: float, dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
               epoch: int | None = None) -> tuple[torch.Tensor, dict]:
    """One optimisation step on a prepared batch (prepare_batch): the view ops -> learner -> backward -> step.

    A batch of k > 1 micro-batches (gradient accumulation) runs each through views, forward and backward
    (gradients summed, DDP's all-reduce only on the last), then one optimiser step. The target tower moves
    once, before the first micro-batch, outside the wrapped forward. Learners without negatives (BYOL) get exactly the full batch's
    gradient (BN aside: it normalises per micro-batch). NOTE: contrastive learners (MoCo v2, SimCLR) then
    contrast each micro-batch against its own negatives only, as each GPU does without gathering: a smaller
    effective batch for the loss than `batch_size`. `dtype`: autocast dtype (None: fp32); `scaler`: a
    GradScaler for float16; `epoch`: the epoch the step is in, for learners with a schedule of their own (DINO's
    teacher temperature: `set_epoch`). Returns the mean loss (a 0-d tensor, not read on the host) and the last micro-batch's
    logs, with "per_image" holding every micro-batch's per-image losses in order."""
    for grp in opt.param_groups:
        grp["lr"] = lr
    opt.zero_grad(set_to_none=True)
    device = batch[0].crop1.device
    total = torch.zeros((), device=device)
    logs: dict = {}
    per_image = []
    learner, ddp = unwrap(model), ddp_of(model)
    if isinstance(learner, MomentumTwoTower):
        # the target moves once per step, before the first micro-batch and outside DDP's (and compile's)
        # forward: a Python float, so nothing is moved to the GPU and read back (no host sync)
        learner.update_target(float(momentum))
    if epoch is not None and hasattr(learner, "set_epoch"):
        learner.set_epoch(epoch)
    for k, prep in enumerate(batch):
        x1, x2, _ = views.finish(prep)
        x1t = views.target_view(prep)  # view 1 without SASSL for the target tower (sassl_towers=online), else None
        # channels-last activations: oneDNN's convolutions (CPU) and cuDNN's tensor cores (CUDA) are faster on
        # them; the maths is unchanged
        x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
        # multi-crop's local views go to learners that take them (DINO), as a fifth argument
        local = [v.contiguous(memory_format=torch.channels_last) for v in views.local_views(prep)] if prep.local else []
        if x1t is not None:
            x1t = x1t.contiguous(memory_format=torch.channels_last)
        last = k == len(batch) - 1
        # DDP's all-reduce on the last micro-batch only; ddp_of also finds DDP under torch.compile's wrapper
        sync = ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss, logs = model(x1, x2, None, x1t, *([local] if local else []))
            scaled = loss / len(batch)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.detach() / len(batch)
        per_image.append(logs["per_image"])
    logs["per_image"] = torch.cat(per_image)
    if hasattr(learner, "adjust_gradients"):  # a learner's own gradient rules (DINO: clipping, frozen prototypes)
        if scaler is not None:
            scaler.unscale_(opt)  # on the true gradients, as DINO's code does
        learner.adjust_gradients()
    if scaler is not None:
        scaler.step(opt)  # skips the step when float16 gradients overflowed, then adapts the scale
        scaler.update()
    else:
        opt.step()
    return total, logs


def checked_loss(loss: torch.Tensor, step: int, cfg: PretrainConfig) -> float:
    """The step's mean loss over ranks (one collective, the step's one host read); a non-finite loss on any
    rank stops every rank with the same message."""
    values = dist.all_values(float(loss), loss.device)
    bad = [r for r, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        where = f" on rank(s) {bad} of {len(values)}" if len(values) > 1 else ""
        raise FloatingPointError(f"loss is {values[bad[0]]}{where} at step {step}; the run stops (every rank). "
                                 f"Lower lr (now {cfg.lr}) or check the data, then resume from the last checkpoint")
    return sum(values) / len(values)

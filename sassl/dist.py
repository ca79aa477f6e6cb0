"""torch.distributed helpers; everything degrades to the single-process case without a process group.

Launch (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK): `setup()` picks this process's GPU first
(`torch.cuda.set_device(LOCAL_RANK)`, so no rank opens a context on GPU 0), then joins the process
group with a timeout; `teardown()` leaves it cleanly. `rank_zero_first()` lets rank 0 build a shared
file (style bank, converted weights, file index) while the others wait, then read it.
"""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_MIN = 60.0  # long enough for rank 0 to embed a 79k-painting style bank on one GPU


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def launched() -> bool:
    """True when started by torchrun (or any launcher that sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(timeout_min: float = DEFAULT_TIMEOUT_MIN) -> None:
    """Join the process group torchrun describes (no-op outside torchrun or when already joined):
    set this process's CUDA device from LOCAL_RANK first, then NCCL on GPUs or gloo on CPU."""
    if not launched() or is_dist():
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_min))


def teardown() -> None:
    """Leave the process group (pretrain() ends with a barrier, so no rank leaves while another still talks)."""
    if is_dist():
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


_first_depth = 0  # > 0 inside a rank_zero_first block: nested blocks are plain (their barriers would not pair)


@contextlib.contextmanager
def rank_zero_first():
    """Rank 0 runs the block first (building a cache file), the others wait, then run it (reading it).
    Nested blocks run as plain code: by then this rank already runs alone or after rank 0."""
    global _first_depth
    outer = _first_depth == 0
    if outer and rank() != 0:
        barrier()
    _first_depth += 1
    try:
        yield
    finally:
        _first_depth -= 1
        if outer and rank() == 0:
            barrier()


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x over ranks along dim 0, with gradients flowing back to each rank's own part."""
    if not is_dist() or world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


@torch.no_grad()
def gather_nograd(x: torch.Tensor) -> torch.Tensor:
    if not is_dist() or world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


@torch.no_grad()
def gather_uneven(x: torch.Tensor) -> list[torch.Tensor]:
    """Each rank's x (sizes along dim 0 may differ; other dims equal), as a list indexed by rank."""
    if not is_dist() or world_size() == 1:
        return [x]
    n = torch.tensor([len(x)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    pad = x.new_zeros((max(sizes),) + tuple(x.shape[1:]))
    pad[:len(x)] = x
    out = [torch.empty_like(pad) for _ in range(world_size())]
    dist.all_gather(out, pad.contiguous())
    return [o[:s] for o, s in zip(out, sizes)]


def all_values(value: float, device: torch.device | str = "cpu") -> list[float]:
    """One float from every rank, indexed by rank (one collective): the step's losses."""
    if not is_dist() or world_size() == 1:
        return [float(value)]
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    out = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(out, t)
    return [float(o) for o in out]


def all_objects(obj) -> list:
    """A small picklable object from every rank (error messages, paths), indexed by rank."""
    if not is_dist() or world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out

"""torch.distributed helpers; everything degrades to the single-process case without a process group."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


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

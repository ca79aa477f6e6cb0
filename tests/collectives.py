"""The collective-trace harness of the multi-process tests: each rank joins a gloo group with a short
timeout (a collective reached by some ranks only fails the test instead of hanging it) and records the
collectives it issues (sassl.dist.trace_collectives); the test then checks that all ranks issued the same
sequence, every tensor on the training device (sassl.dist.check_traces)."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from sassl.dist import check_traces, trace_collectives


def join(rank: int, world: int, store: str, timeout_s: float = 60.0) -> list:
    """Join a gloo process group (file store) with a collective timeout; returns this rank's live trace."""
    trace = trace_collectives()
    trace.clear()
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    return trace


def leave(trace: list, folder: str | Path, rank: int) -> None:
    """Write this rank's trace into `folder` and leave the group, after a barrier as pretrain() ends (a rank
    that destroys its gloo group while the other still finishes the last collective can abort at exit)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(trace))
    dist.barrier()
    dist.destroy_process_group()


def check(folder: str | Path, world: int, device_type: str = "cpu", least: int = 1) -> list[list]:
    """The ranks' traces from `folder`, checked: the same collectives in the same order on the device, and
    at least `least` of them (0 where only DDP's own C++ all-reduce runs, which the trace cannot see)."""
    traces = [json.loads((Path(folder) / f"rank{r}.json").read_text()) for r in range(world)]
    check_traces(traces, device_type)
    assert len(traces[0]) >= least, f"{len(traces[0])} collectives recorded, expected at least {least}"
    return traces

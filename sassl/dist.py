"""torch.distributed helpers; everything degrades to the single-process case without a process group.

Launch (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK): `setup()` picks this process's GPU first
(`torch.cuda.set_device(LOCAL_RANK)`, so no rank opens a context on GPU 0), then joins the process
group with a timeout and a backend per device type; `teardown()` leaves it cleanly.

The rules this code keeps (docs/DESIGN.md §6): every
rank issues the same collectives in the same order, so a decision that skips one is made by all ranks
together (`all_true`); no rank waits in a collective while another does long work, so caches are built
by all ranks at once, each its share (`shared_cache`, `shard`), or once per node with the others polling the
file (`node_once`). `trace_collectives` records what each rank issued, for the tests that check both rules.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from sassl.storage import StorageError, warn_cache_unwritten

DEFAULT_TIMEOUT_MIN = 60.0  # minutes a rank waits in a collective before the run stops (NCCL's watchdog)
TRACE_ENV = "SASSL_TRACE_COLLECTIVES"  # a folder: each rank writes the collectives it issued there (tests)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def launched() -> bool:
    """True when started by torchrun (or any launcher that sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend_for(device: str | torch.device = "auto") -> str:
    """The process group's backend for a run on `device`: gloo when the run trains on the CPU (even where
    CUDA exists: NCCL refuses CPU tensors), else NCCL for CUDA tensors and gloo for the CPU ones."""
    dev = str(device)
    if dev == "cpu" or (dev == "auto" and not torch.cuda.is_available()):
        return "gloo"
    return "cpu:gloo,cuda:nccl"


def setup(timeout_min: float = DEFAULT_TIMEOUT_MIN, device: str = "auto") -> None:
    """Join the process group torchrun describes (no-op outside torchrun or when already joined): on CUDA
    set this process's device from LOCAL_RANK first; the backend follows the run's `device` (backend_for).
    With SASSL_TRACE_COLLECTIVES=DIR each rank records its collectives into DIR (trace_collectives)."""
    if not launched() or is_dist():
        return
    backend = backend_for(device)
    if "nccl" in backend:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if os.environ.get(TRACE_ENV):
        trace_collectives(Path(os.environ[TRACE_ENV]) / f"rank{os.environ.get('RANK', 0)}.json")
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_min))


def teardown() -> None:
    """Leave the process group (pretrain() ends with a barrier, so no rank leaves while another still talks)."""
    if is_dist():
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def local_rank() -> int:
    """This process's index on its node (LOCAL_RANK under torchrun; 0 alone)."""
    return int(os.environ.get("LOCAL_RANK", 0)) if launched() or is_dist() else 0


def all_true(flag: bool) -> bool:
    """True on every rank when `flag` is true on every rank (one collective): the shared answer to "do I
    already have it?" that decides whether the ranks skip the collectives that would build it."""
    return all(all_objects(bool(flag)))


def shard(items: list) -> list:
    """This rank's share of `items`: every world-th, from its rank."""
    return items[rank()::world_size()]


def shared_cache(read: Callable[[], object], build: Callable[[], object], save: Callable[[object], object],
                 readable: Callable[[], bool]) -> object:
    """A cache file under a process group, by the two rules above: read() (None when this rank has no usable
    copy) decides for all ranks together (all_true); when any rank lacks it, every rank calls build() (which
    shares the work and its collectives), and save(value) writes it once per cache (save_once_per_node, with
    readable() saying whether this rank now sees the file). Alone: read, else build and save."""
    found = read()
    if all_true(found is not None):
        return found
    value = build()
    save_once_per_node(lambda: _save_cache(save, value), readable)
    return value


def _save_cache(save: Callable[[object], object], value: object) -> None:
    """save(value), where storage that refuses the file (full, read-only) leaves the run going without it."""
    try:
        save(value)
    except StorageError as e:
        warn_cache_unwritten(e)


def save_once_per_node(save: Callable[[], object], readable: Callable[[], bool]) -> None:
    """Write a cache that every rank holds (after building it together): rank 0 saves it; then the first
    process of each node that still cannot read it (a node-local cache) saves that node's copy. One write
    per cache, on a shared filesystem or not."""
    if rank() == 0:
        save()
    if not is_dist():
        return
    seen = all_objects(readable())  # issued by rank 0 after its write
    if local_rank() == 0 and not seen[rank()]:
        save()


def unwritten_marker(path: Path) -> Path:
    """Where a node's first process says that it could not write `path` (its folder full or read-only): a file in
    the node's temporary folder, named by the path and by the processes' parent (torchrun's agent, the same for
    every process it started on this node), so one job's marker never speaks for another's."""
    key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"sassl-unwritten-{key}-{os.getppid()}"


def node_once(path: Path, build: Callable[[], object], read: Callable[[Path], object],
              timeout_min: float = DEFAULT_TIMEOUT_MIN, poll_s: float = 0.5) -> object:
    """read(path) of a cache file that this node builds once: the node's first process (LOCAL_RANK 0) builds
    and writes it when read() fails (build() returns the value and writes the file), the node's other
    processes poll the file until read() succeeds. No collective is involved, so nobody waits under the
    watchdog, and a node whose cache is not shared with the others builds its own copy. When the first process
    cannot write the file (build() returned, read() still fails: a full or read-only cache folder) it leaves
    unwritten_marker(path), and the others build their own copy at once instead of polling until the timeout.
    read() must raise (any exception) while the file is missing, partial or stale; files are written atomically."""
    try:
        return read(path)
    except Exception:  # noqa: BLE001 (missing, damaged or stale: built below)
        pass
    marker = unwritten_marker(path)
    if local_rank() == 0:
        value = build()
        try:
            read(path)
            marker.unlink(missing_ok=True)
        except Exception:  # noqa: BLE001 (not written: the node's other processes must not wait for it)
            with contextlib.suppress(OSError):
                marker.write_text(str(path))
        return value
    deadline, err = time.monotonic() + timeout_min * 60, None
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        try:
            return read(path)
        except Exception as e:  # noqa: BLE001
            err = e
        if marker.is_file():  # the first process could not write it: build this process's own copy
            return build()
    raise TimeoutError(f"rank {rank()}: {path} was not written by this node's first process (LOCAL_RANK 0) within "
                       f"{timeout_min} min ({err}); check that process's error, or raise --dist-timeout")


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


# ----------------------------------------------------------------------------- collective trace (tests)

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "all_to_all", "barrier",
               "broadcast", "broadcast_object_list", "gather", "gather_object", "reduce", "reduce_scatter",
               "reduce_scatter_tensor", "scatter", "monitored_barrier")
_trace: list | None = None
_depth = 0


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _traced(fn: Callable, name: str) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _depth
        if _depth == 0 and _trace is not None:  # the outermost call only (object collectives call others)
            if name.endswith("_object") or name.endswith("object_list"):
                tensors = []
            elif name in ("gather", "scatter"):  # the root alone passes the list: the tensor every rank passes
                tensors = _tensors(args[:1] or [kwargs.get("tensor")])
            else:
                tensors = _tensors(list(args) + list(kwargs.values()))
            _trace.append({"op": name, "tensors": [[list(t.shape), str(t.dtype), t.device.type] for t in tensors]})
        _depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _depth -= 1
    wrapper.__sassl_traced__ = True
    return wrapper


def trace_collectives(out: Path | None = None) -> list:
    """Record every collective this process issues through torch.distributed from now on: op, and each
    tensor's shape, dtype and device (object collectives: the op alone, their sizes may differ). Returns the
    live list; with `out`, it is also written there as JSON when the process exits. DDP's own gradient
    all-reduce runs in C++ and is not seen here (it is the same on every rank by construction)."""
    global _trace
    import torch.distributed.distributed_c10d as c10d

    if _trace is None:
        _trace = []
        for mod in (dist, c10d):
            for name in COLLECTIVES:
                fn = getattr(mod, name, None)
                if fn is not None and not getattr(fn, "__sassl_traced__", False):
                    setattr(mod, name, _traced(fn, name))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atexit.register(lambda: Path(out).write_text(json.dumps(_trace)))
    return _trace


def check_traces(traces: list[list], device_type: str) -> None:
    """AssertionError unless every rank issued the same collectives (op, shapes, dtypes) in the same order
    and every tensor sat on `device_type` (NCCL takes CUDA tensors only). traces: one list per rank."""
    first = traces[0]
    for r, t in enumerate(traces[1:], 1):
        for k, (a, b) in enumerate(zip(first, t)):
            if a != b:
                raise AssertionError(f"collective {k} differs: rank 0 issued {a}, rank {r} issued {b}")
        if len(t) != len(first):
            raise AssertionError(f"rank 0 issued {len(first)} collectives, rank {r} {len(t)}: "
                                 f"the extra ones begin with {(first if len(first) > len(t) else t)[min(len(first), len(t))]}")
    for r, t in enumerate(traces):
        for c in t:
            for shape, dtype, dev in c["tensors"]:
                if dev != device_type:
                    raise AssertionError(f"rank {r}: {c['op']} on a {dev} tensor {shape} {dtype}; the training "
                                         f"device is {device_type}")

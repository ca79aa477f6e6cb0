"""Know before you launch: `sassl plan` traces one training step of a run's config on fake tensors (no data,
no GPU, seconds) and reports the peak memory per GPU, FLOPs per image, the `--accumulate` that fits, and
the host shared memory its loader needs.

What is traced (torch's FakeTensorMode: shapes and dtypes, no storage; LiveBytes counts every storage an op
makes until it is freed): the learner's forward and backward on one micro-batch under the run's autocast,
the optimiser step with its state, the target EMA, and SASSL on the stylized share of a micro-batch (the
predictor at the embedding size, the transformer at the crop size), in the order of a steady-state step
(the second one: optimiser state and gradients exist). Counted from the config: the prepared batch (two
float32 crops of the per-GPU batch), DDP's gradient buckets (one copy of the gradients with more than one
GPU), the batch being prepared ahead under `--sassl-async`, and CUDA's own context and workspaces
(CUDA_OVERHEAD_GB, assumed). NOTE: bf16 is traced with the CPU's autocast, whose op lists match CUDA's for
convolutions, matmuls and attention; the allocator's fragmentation is not modelled (not yet measured on a
GPU).
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from torch.utils._pytree import tree_flatten

from sassl.data.loader import shared_memory_need
from sassl.learners import create_learner
from sassl.devices import SHAPE_BUCKET, pad_rows
from sassl.stylizer.augment import stylize
from sassl.stylizer.networks import Stylizer
from sassl.optim import make_optimizer
from sassl.training.config import learner_settings, local_size

CUDA_OVERHEAD_GB = 1.0  # CUDA context, cuDNN / cuBLAS workspaces: assumed, not measured
BANK_ROWS = 80_000  # a style bank the size of Painter by Numbers' (79,433 paintings)
GB = 1024 ** 3


class LiveBytes(TorchDispatchMode):
    """Bytes of tensor storage that ops made inside the mode and that are still alive, and their peak.
    Works on real and fake tensors (storages are freed when their last tensor goes)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: dict[int, weakref.ref] = {}

    def reset_peak(self) -> None:
        self.peak = self.live

    def _free(self, key: int, n: int) -> None:
        self.live -= n
        self._seen.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(a.untyped_storage()) for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key = id(st)
                ref = self._seen.get(key)
                if key in inputs or (ref is not None and ref() is st):
                    continue  # a view, an in-place op's result, or a storage already counted
                n = st.nbytes()
                self._seen[key] = weakref.ref(st)
                weakref.finalize(st, self._free, key, n)
                self.live += n
                self.peak = max(self.peak, self.live)
        return out


def tensor_bytes(tensors) -> int:
    """Bytes of the distinct storages of `tensors`."""
    seen, total = set(), 0
    for t in tensors:
        st = t.untyped_storage()
        if id(st) not in seen:
            seen.add(id(st))
            total += st.nbytes()
    return total


@dataclass
class StepMemory:
    """One traced steady-state step on one process (bytes; FLOPs per image)."""

    params: int             # learner (online and target) and stylizer weights, buffers, style bank
    grads: int              # one copy of the trainable weights (a gradient; DDP's buckets hold another)
    grads_and_state: int    # gradients and optimiser state, alive between steps
    sassl_peak: int         # the SASSL phase's transient peak above that (stylizing a micro-batch)
    step_peak: int          # the learner step's transient peak above that (prepared batch, activations)
    learner_flops: float    # forward + backward per image
    sassl_flops: float      # predictor + transformer per stylized image

    @property
    def peak(self) -> int:
        return self.params + self.grads_and_state + max(self.sassl_peak, self.step_peak)


def _sassl_phase(stylizer: Stylizer, n_style: int, size: int, embed: int) -> None:
    """SASSL on the stylized share of a micro-batch: content embedding, then the transformer (no gradients)."""
    with torch.no_grad():
        x = torch.rand(n_style, 3, size, size)
        z = stylizer.embed(x, embed)
        y = stylize(stylizer, x, z, z, torch.rand(n_style), torch.rand(n_style))
        del x, z, y


def _learner_step(model, opt, cfg, per_process_batch: int, micro_batch: int, dtype: torch.dtype | None,
                  flops: dict | None) -> None:
    """One optimiser step over the prepared batch; with `flops`, the first micro-batch's FLOPs per image go to
    flops["learner"]. Two micro-batches when accumulating: the second runs with the first one's gradients
    alive (its peak is every later one's)."""
    crops = [torch.rand(per_process_batch, 3, cfg.image_size, cfg.image_size) for _ in range(2)]  # the prepared batch
    side = local_size(cfg)
    local = [torch.rand(per_process_batch, 3, side, side) for _ in range(cfg.local_crops)]  # multi-crop's
    opt.zero_grad(set_to_none=True)
    if hasattr(model, "update_target"):
        model.update_target(cfg.ema)
    for k in range(min(2, per_process_batch // micro_batch)):
        x1, x2, *xl = (c[k * micro_batch:(k + 1) * micro_batch].contiguous(memory_format=torch.channels_last)
                       for c in crops + local)
        counter = FlopCounterMode(display=False) if flops is not None and k == 0 else None
        with counter or contextlib.nullcontext():
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss, _ = model(x1, x2, None, None, *([xl] if xl else []))
            loss.backward()
        if counter is not None:
            flops["learner"] = counter.get_total_flops() / micro_batch
        del x1, x2, xl, loss
    opt.step()


def trace_step(cfg, micro_batch: int, per_process_batch: int, dtype: torch.dtype | None,
               with_sassl: bool = True) -> StepMemory:
    """Trace two steps of `cfg`'s learner on fake CPU tensors (the second is measured): `micro_batch` images
    a forward, `per_process_batch` images prepared (float32 crops), autocast to `dtype` (None: float32)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    size, embed = cfg.image_size, cfg.embed_size or cfg.image_size
    sassl = with_sassl and cfg.style != "none" and cfg.p > 0
    n_style = len(pad_rows(torch.arange(max(1, round(cfg.p * micro_batch))), SHAPE_BUCKET)) if sassl else 0
    with torch.device("meta"):  # built without memory, then given fake storage (deepcopy needs real devices)
        model = create_learner(cfg.learner, cfg.backbone, cfg.small_images, image_size=size, **learner_settings(cfg))
        model = model.to(memory_format=torch.channels_last)
        stylizer = Stylizer().eval().requires_grad_(False) if sassl else None
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        model = model.to_empty(device="cpu")  # empty_like keeps the channels-last strides
        stylizer = stylizer.to_empty(device="cpu") if sassl else None
        bank = torch.zeros(BANK_ROWS, 100) if sassl and cfg.style not in ("batch", "noise", "content") else None
        opt = make_optimizer(model, cfg.optimizer, 0.1, cfg.weight_decay)
        held = list(model.parameters()) + list(model.buffers())
        if stylizer is not None:
            held += list(stylizer.parameters()) + list(stylizer.buffers())
        params = tensor_bytes(held + ([bank] if bank is not None else []))
        grads = tensor_bytes([p for p in model.parameters() if p.requires_grad])
        live, flops = LiveBytes(), {}

        with live:
            _learner_step(model, opt, cfg, per_process_batch, micro_batch, dtype, None)  # step 1: optimiser state, gradients
            baseline = live.live
            live.reset_peak()
            if sassl:
                with FlopCounterMode(display=False) as counter:
                    _sassl_phase(stylizer, n_style, size, embed)
                flops["sassl"] = counter.get_total_flops() / n_style
            sassl_peak = live.peak - baseline
            live.reset_peak()
            _learner_step(model, opt, cfg, per_process_batch, micro_batch, dtype, flops)
            step_peak = live.peak - baseline
    return StepMemory(params, grads, baseline, sassl_peak, step_peak, flops["learner"], flops.get("sassl", 0.0))


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def plan(cfg, gpus: int = 8, gpu_mem_gb: float = 80.0, node_cores: int = 96) -> dict:
    """The memory per GPU of `cfg` on `gpus` GPUs (bf16 autocast unless cfg.precision is fp32 or fp16), at its own `accumulate` and,
    when that does not fit in `gpu_mem_gb`, the smallest accumulate that does; FLOPs per image; the loaders'
    host shared memory and pinned memory per node (at most 8 processes a node, each with cfg.num_workers
    workers, or for -1 what sassl.data.loader.loader_workers gives on a node of `node_cores` cores)."""

    if gpus < 1 or cfg.batch_size % gpus:
        raise ValueError(f"gpus: batch_size {cfg.batch_size} does not split into {gpus} GPUs")
    per_gpu = cfg.batch_size // gpus
    if per_gpu % cfg.accumulate:
        raise ValueError(f"accumulate: {per_gpu} images per GPU do not split into {cfg.accumulate} micro-batches")
    dtype = None if cfg.precision == "fp32" else torch.float16 if cfg.precision == "fp16" else torch.bfloat16  # a GPU's
    budget = gpu_mem_gb * GB

    def per_gpu_bytes(accumulate: int) -> tuple[int, StepMemory, int, int]:
        mem = trace_step(cfg, per_gpu // accumulate, per_gpu, dtype)
        ddp = mem.grads if gpus > 1 else 0  # DDP's buckets: one more copy of the gradients
        ahead = mem.sassl_peak + 2 * per_gpu * 3 * cfg.image_size ** 2 * 4 if cfg.sassl_async else 0  # next batch
        return mem.peak + ddp + ahead + int(CUDA_OVERHEAD_GB * GB), mem, ddp, ahead

    total, mem, ddp, ahead = per_gpu_bytes(cfg.accumulate)
    fit, fit_total = (cfg.accumulate, total) if total <= budget else (None, None)
    for a in (d for d in divisors(per_gpu) if d > cfg.accumulate and fit is None):
        t = per_gpu_bytes(a)[0]
        if t <= budget:
            fit, fit_total = a, t
    procs = min(gpus, 8)
    workers = cfg.num_workers if cfg.num_workers >= 0 else max(1, min(16, node_cores // procs - 1))
    batch_bytes = 2 * per_gpu * 3 * cfg.image_size ** 2  # two uint8 crops
    return {
        "gpus": gpus, "gpu_mem_gb": gpu_mem_gb, "per_gpu_batch": per_gpu, "accumulate": cfg.accumulate,
        "micro_batch": per_gpu // cfg.accumulate, "precision": "bf16" if dtype else "fp32",
        "params_gb": mem.params / GB, "grads_and_state_gb": mem.grads_and_state / GB,
        "step_activations_gb": mem.step_peak / GB, "sassl_gb": mem.sassl_peak / GB, "ddp_buckets_gb": ddp / GB,
        "prepared_ahead_gb": ahead / GB,
        "peak_per_gpu_gb": total / GB, "fits": total <= budget,
        "accumulate_that_fits": fit, "peak_at_that_accumulate_gb": fit_total / GB if fit else None,
        "learner_gflops_per_image": mem.learner_flops / 1e9, "sassl_gflops_per_stylized_image": mem.sassl_flops / 1e9,
        "loader_workers": workers,
        "shared_memory_per_node_gb": procs * shared_memory_need(workers, per_gpu, cfg.image_size, cfg.decode) / GB,
        "pinned_memory_per_node_gb": procs * 2 * batch_bytes / GB,
    }


def report(p: dict) -> str:
    """The plan as the lines `sassl plan` prints."""
    fit = "fits" if p["fits"] else "does NOT fit"
    lines = [
        f"{p['gpus']} GPU(s) x {p['gpu_mem_gb']:g} GB, {p['per_gpu_batch']} images per GPU in "
        f"{p['accumulate']} micro-batch(es) of {p['micro_batch']}, {p['precision']}:",
        f"  peak per GPU        {p['peak_per_gpu_gb']:7.1f} GB  ({fit})",
        f"    weights, bank     {p['params_gb']:7.2f} GB",
        f"    grads, optimiser  {p['grads_and_state_gb']:7.2f} GB",
        f"    step transient    {p['step_activations_gb']:7.2f} GB  (prepared batch, activations)",
        f"    SASSL transient   {p['sassl_gb']:7.2f} GB  (the larger of the two transients counts)",
        f"    DDP buckets       {p['ddp_buckets_gb']:7.2f} GB",
        f"    batch prepared ahead {p['prepared_ahead_gb']:4.2f} GB  (--sassl-async)",
        f"    CUDA context      {CUDA_OVERHEAD_GB:7.2f} GB  (assumed)",
        f"  --accumulate that fits: " + (f"{p['accumulate_that_fits']} ({p['peak_at_that_accumulate_gb']:.1f} GB)"
                                         if p["accumulate_that_fits"] else "none (fewer images per GPU, or more GPUs)"),
        f"  FLOPs per image     learner {p['learner_gflops_per_image']:.1f} GFLOP (forward + backward), "
        f"SASSL {p['sassl_gflops_per_stylized_image']:.1f} GFLOP per stylized image",
        f"  host per node       shared memory {p['shared_memory_per_node_gb']:.1f} GB (docker --shm-size; "
        f"{p['loader_workers']} loader workers a process), pinned {p['pinned_memory_per_node_gb']:.1f} GB",
    ]
    return "\n".join(lines)


__all__ = ["LiveBytes", "StepMemory", "plan", "report", "trace_step"]

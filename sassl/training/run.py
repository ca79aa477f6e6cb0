"""A run's folder: the lock that keeps one trainer per run, the checkpoint (written atomically, read back on every
rank when resuming, refused when the config differs), the metrics rows kept on resume, and the run's end."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from sassl import dist
from sassl.config import plain
from sassl.data.registry import say_skipped
from sassl.storage import StorageError, atomic_file, exclusive_lock
from sassl.precision import resolve_precision
from sassl.figures.training import training_curves
from sassl.records import read_metrics
from sassl.tracking import RunLog
from sassl.training.config import PretrainConfig, upgraded
from sassl.training.schedule import Schedule



def _comparable(cfg_dict: dict) -> dict:
    return {k: v for k, v in cfg_dict.items() if k not in PretrainConfig.RESUME_FREE}


@dataclass
class Run:
    """Where a run lives and what it resumes from (the same on every rank)."""

    dir: Path
    cfg_dict: dict
    state: dict | None  # the checkpoint resumed from, or None for a fresh start
    step: int           # the global step the run continues after
    precision: str = "fp32"  # resolved when the run starts (run_precision), kept in its checkpoints

    @property
    def ckpt_path(self) -> Path:
        return self.dir / "checkpoints" / "last.pt"

    @property
    def metrics_file(self) -> Path:
        return self.dir / "metrics.jsonl"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold run_dir/.lock while a run trains (rank 0 takes it; every rank stops when it cannot): a second
    process training the same run, a second `--resume` from another shell, say, would interleave its rows with
    this one's in metrics.jsonl and the augmentation record, and overwrite its checkpoint. The lock dies with
    its holder, so resuming a dead run is never blocked (sassl.storage.exclusive_lock)."""
    with exclusive_lock(run_dir / ".lock") if dist.rank() == 0 else contextlib.nullcontext() as holder:
        err = (f"{run_dir} is being trained by {holder}; wait for it to finish (or stop it and pass --resume), or "
               "choose another --name") if holder else ""
        errors = dist.all_objects(err)
        if errors[0]:
            raise RuntimeError(errors[0])
        yield


def open_run(cfg: PretrainConfig, resume: bool) -> Run:
    """The run folder and, with `resume`, its last checkpoint. Rank 0 decides whether there is one; every
    rank then reads it itself, and the run stops on every rank, naming the ranks, when one cannot read it
    (checkpoints need a filesystem that every node sees) or when the ranks disagree on the step."""
    run_dir = Path(cfg.runs_dir) / cfg.name
    run = Run(run_dir, plain(asdict(cfg)), None, 0)
    found = dist.all_objects(run.ckpt_path.is_file())[0]  # rank 0's view decides
    if not found:
        if resume and dist.rank() == 0:
            print(f"sassl pretrain: no checkpoint at {run.ckpt_path} yet; starting the run", flush=True)
        return run
    if not resume:
        raise FileExistsError(f"{run_dir} already has a checkpoint; pass resume=True (--resume) to continue it, "
                              "or choose another run name")
    try:
        state, err = torch.load(run.ckpt_path, map_location="cpu", weights_only=True), ""
    except Exception as e:  # noqa: BLE001 (any failure is reported, per rank, below)
        state, err = None, f"{type(e).__name__}: {e}"
    steps = dist.all_objects(state["step"] if state else err)
    bad = {r: s for r, s in enumerate(steps) if not isinstance(s, int)}
    if bad:
        raise RuntimeError(f"cannot resume: rank(s) {sorted(bad)} cannot read {run.ckpt_path} ({bad[min(bad)]}); "
                           "every rank reads rank 0's checkpoint, so runs_dir must be on a filesystem that every "
                           "node sees (NFS, Lustre, ...)")
    if len(set(steps)) > 1:
        raise RuntimeError(f"cannot resume: the ranks read different checkpoints at {run.ckpt_path} (steps "
                           f"{steps} by rank); runs_dir must be one shared folder, not a local disk per node")
    saved = upgraded(json.loads(state["config"]))  # an older run's keys in today's
    if _comparable(saved) != _comparable(run.cfg_dict):
        diff = {k: (saved.get(k), v) for k, v in _comparable(run.cfg_dict).items() if saved.get(k) != v}
        raise ValueError(f"{run.ckpt_path} was written by a different config (checkpoint vs now): {diff}")
    run.state, run.step = state, state["step"]
    return run


def save_checkpoint(run: Run, model: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                    step: int, epochs: int) -> None:
    """Rank 0 writes run.ckpt_path atomically: weights, optimiser (and float16 scaler) state, the global step,
    the epochs planned (a time budget's choice) and the run's config (checked when resuming).
    A checkpoint the storage refuses (full, read-only, gone) stops the run on every rank with rank 0's
    StorageError; the previous checkpoint is intact and no temporary file is left."""
    err = ""
    if dist.rank() == 0:
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "epochs": epochs,
                 "config": json.dumps(run.cfg_dict), "precision": run.precision}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        try:
            with atomic_file(run.ckpt_path, need=state_bytes(state)) as tmp:
                torch.save(state, tmp)
        except StorageError as e:
            kept = "the previous checkpoint is intact" if run.ckpt_path.is_file() else "no checkpoint was written"
            err = f"{e} ({kept}; --resume continues from it once there is room)"
    errors = dist.all_objects(err)  # every rank stops, none left waiting in the next step's collectives
    if errors[0]:
        raise RuntimeError(errors[0])


def state_bytes(state) -> int:
    """The bytes of the tensors in a (nested) state dict: about what torch.save writes."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def run_precision(run: Run, cfg: PretrainConfig, device: torch.device) -> str:
    """The run's precision, fixed when it starts: cfg.precision resolved on `device` (sassl.precision) for a fresh
    run; a resumed run keeps the one its checkpoint trained in (a checkpoint from before the setting: its config's,
    resolved here), said when that differs from what this device would choose, refused when the device cannot run
    it. Set on `run` (save_checkpoint keeps it) and printed by rank 0."""
    now = resolve_precision(cfg.precision, device)
    kept = (run.state or {}).get("precision", now)
    if kept == "fp16" and device.type != "cuda":
        raise ValueError(f"cannot resume {run.dir} on {device}: it trains in fp16 (a GPU's); resume it on a GPU")
    run.precision = kept
    if dist.rank() == 0:
        note = f" (kept from its start; {cfg.precision} here would be {now})" if kept != now else ""
        print(f"sassl pretrain {cfg.name}: precision {kept}{note}", flush=True)
    return kept


def load_checkpoint(run: Run, model: nn.Module, opt: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None) -> None:
    """Restore what save_checkpoint wrote into the model, optimiser and scaler (nothing for a fresh run). The
    tensors are popped from run.state: the run need not hold a second copy of the weights on the host."""
    if run.state is None:
        return
    model.load_state_dict(run.state.pop("model"))
    opt.load_state_dict(run.state.pop("optimizer"))
    if scaler is not None and "scaler" in run.state:
        scaler.load_state_dict(run.state.pop("scaler"))


def prune_metrics(run: Run, steps_per_epoch: int) -> None:
    """Keep the metric rows the resumed checkpoint had seen; rows logged after it (or a partial epoch's
    summary, or everything when starting afresh) are written again."""
    if dist.rank() != 0 or not run.metrics_file.exists():
        return

    def keep(row: dict) -> bool:
        partial_epoch = "epoch_seconds" in row and row["step"] == run.step and run.step % steps_per_epoch
        return run.state is not None and row["step"] <= run.step and not partial_epoch

    rows = read_metrics(run.metrics_file)
    run.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows if keep(r)))


def finished_result(run: Run, schedule: Schedule) -> dict:
    """The last epoch row of a run resumed after its end (reported again), else {}."""
    if run.step < schedule.total_steps or not run.metrics_file.exists():
        return {}
    epoch_rows = [r for r in read_metrics(run.metrics_file) if "epoch_seconds" in r]
    return epoch_rows[-1] if epoch_rows else {}


def report_skipped(run: Run, said: int | None, epoch: int) -> int:
    """One line for the unusable files that the epoch's loaders skipped (the loader's workers list them in
    <run>/skipped.txt, sassl.data.registry.Dataset.usable), rank 0; returns how many lines have been said
    (said None: count the lines of earlier starts, say nothing)."""
    if dist.rank() != 0:
        return said or 0
    return say_skipped(run.dir / "skipped.txt", said, f"{run.dir.name}: epoch {epoch}")


def finish(run: Run, runlog: RunLog, result: dict) -> None:
    """Close the loggers; rank 0 draws the curves and writes metrics.json; no rank leaves before it is done."""
    runlog.close()
    if dist.rank() == 0:
        training_curves(run.metrics_file, run.dir / "figures" / "curves")
        (run.dir / "metrics.json").write_text(json.dumps(result, indent=1))
    dist.barrier()

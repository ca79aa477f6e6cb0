"""The training loop: `pretrain(cfg)` sets a run up (Trainer), trains epoch by epoch with the kNN monitor, a
checkpoint per epoch and the time budget, and finishes the run folder."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from sassl import dist
from sassl.data import get_dataset, held_out_split, parse_name
from sassl.data.loader import (DeviceDecoder, DevicePrefetcher, EpochSampler, TwoCrops, check_shared_memory,
                               loader_workers, make_loader)
from sassl.devices import resolve_device
from sassl.eval.knn import KnnMonitor
from sassl.interrupt import GracefulStop, Stopped, signal_name
from sassl.learners import cosine_momentum, create_learner
from sassl.optim import cosine_between, cosine_lr, make_optimizer, set_weight_decay
from sassl.storage import storage_errors
from sassl.precision import autocast_dtype
from sassl.records import duration, git_commit, terminal_line
from sassl.stylizer import StyleChoice
from sassl.tracking import RunLog
from sassl.training.config import PretrainConfig, learner_settings, local_size, scaled_lr, style_op, validate
from sassl.training.run import (Run, finish, finished_result, load_checkpoint, open_run, prune_metrics, report_skipped,
                                run_lock, run_precision, save_checkpoint)
from sassl.training.schedule import Progress, Schedule, TimeBudget, monitor_line
from sassl.training.step import checked_loss, prepare_batch, prepared_ahead, step_generator, train_step
from sassl.views import VIEWS, Prepared, TwoViews

@dataclass(kw_only=True)
class Trainer:
    """What a run trains with, built by set_up() before its first step (by keyword)."""

    cfg: PretrainConfig
    run: Run
    device: torch.device
    train_ds: object
    model: nn.Module       # the learner (what checkpoints hold)
    step_model: nn.Module  # what a step calls: the learner, under DDP and compile when asked
    style: StyleChoice
    views: TwoViews
    opt: torch.optim.Optimizer
    precision: str         # resolved: fp32, bf16 or fp16 (fixed for the run)
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    monitor: KnnMonitor | None
    sampler: EpochSampler
    loader: object
    decoder: DeviceDecoder | None

    def prepare(self, batch, at_step: int) -> list[Prepared]:
        c1, c2 = self.decoder(batch[0], batch[1]) if self.decoder is not None else batch[:2]
        local = batch[3] if len(batch) > 3 else None  # multi-crop's small crops (B, N, 3, s, s)
        return prepare_batch(self.views, c1, c2, step_generator(self.cfg, at_step), self.cfg.accumulate, local)

    @property
    def base_lr(self) -> float:
        return scaled_lr(self.cfg)


def build_model(cfg: PretrainConfig, device: torch.device) -> nn.Module:
    """The learner on `device` (channels-last), SyncBN across processes when asked (CUDA)."""
    model = create_learner(cfg.learner, cfg.backbone, cfg.small_images, image_size=cfg.image_size, **learner_settings(cfg))
    model = model.to(device, memory_format=torch.channels_last)
    if dist.is_dist() and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def make_monitor(cfg: PretrainConfig, train_ds, base_name: str) -> KnnMonitor | None:
    """The kNN monitor on the dataset's held-out split, or None (knn_every 0, or a single pool)."""
    monitor_split = held_out_split(cfg.dataset)  # the test split, else val, or NAME@SPLIT; None for one pool
    if not cfg.knn_every or monitor_split is None:
        return None
    test_ds = get_dataset(base_name, split=monitor_split)
    return KnnMonitor(train_ds, test_ds, cfg.image_size, k=cfg.knn_k, max_train=cfg.knn_max_train,
                      max_test=cfg.knn_max_test, seed=cfg.seed, num_workers=loader_workers(cfg.num_workers),
                      probe_epochs=cfg.probe_epochs)


def set_up(cfg: PretrainConfig, resume: bool, progress: bool) -> Trainer:
    """The run folder (and its checkpoint when resuming), data, learner, SASSL op and views, optimiser (with
    the checkpoint's state), DDP / compile, kNN monitor and loader, in the order that seeds them."""
    run = open_run(cfg, resume)
    device = resolve_device(cfg.device)
    check_shared_memory(cfg.num_workers, cfg.batch_size // dist.world_size(), cfg.image_size, cfg.decode)
    torch.manual_seed(cfg.seed)
    base_name, _ = parse_name(cfg.dataset)  # NAME@SPLIT names the monitor's split
    train_ds = get_dataset(base_name, split="train")
    train_ds.skip_log = run.dir / "skipped.txt"  # summed up once an epoch (report_skipped), not a warning a file
    if len(train_ds) < cfg.batch_size:
        raise ValueError(f"batch_size: {cfg.batch_size} is larger than {cfg.dataset}'s train split ({len(train_ds)} images)")
    model = build_model(cfg, device)
    style = style_op(cfg, device, progress=progress and dist.rank() == 0)
    views = TwoViews(VIEWS[cfg.views], sassl=style.op, towers=cfg.sassl_towers, crops=cfg.sassl_crops).to(device)
    opt = make_optimizer(model, cfg.optimizer, scaled_lr(cfg), cfg.weight_decay)
    precision = run_precision(run, cfg, device)
    dtype = autocast_dtype(precision)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    load_checkpoint(run, model, opt, scaler)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels once
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.is_dist() else model
    sampler = EpochSampler(len(train_ds), cfg.batch_size, cfg.seed)
    crops = TwoCrops(train_ds, cfg.image_size, cfg.seed, scale=cfg.crop_scale, decode=cfg.decode,
                     local_crops=cfg.local_crops, local_size=local_size(cfg), local_scale=cfg.local_scale)
    return Trainer(cfg=cfg, run=run, device=device, train_ds=train_ds, model=model,
                   step_model=torch.compile(ddp) if cfg.compile else ddp, style=style, views=views, opt=opt,
                   precision=precision, dtype=dtype, scaler=scaler, monitor=make_monitor(cfg, train_ds, base_name), sampler=sampler,
                   loader=make_loader(crops, sampler, cfg.batch_size // dist.world_size(), cfg.num_workers, device),
                   decoder=DeviceDecoder(cfg.image_size, device) if cfg.decode == "device" else None)


def write_run_config(t: Trainer, schedule: Schedule) -> None:
    """config.json: the resolved settings and what the run found (rank 0, at every start and resume)."""
    if dist.rank() != 0:
        return
    meta = {"git_commit": git_commit(), "world_size": dist.world_size(), "device": str(t.device), "precision": t.precision,
            "train_images": len(t.train_ds), "steps_per_epoch": schedule.steps_per_epoch,
            "dataset_source_used": t.train_ds.meta.get("source_used"), "style_source_used": t.style.used,
            "knn_monitor": t.monitor and {"train_images": len(t.monitor.train_idx), "test_images": len(t.monitor.test_idx)}}
    if t.style.bank is not None:
        meta["style_bank_size"] = len(t.style.bank)
    (t.run.dir / "figures").mkdir(parents=True, exist_ok=True)
    (t.run.dir / "config.json").write_text(json.dumps(t.run.cfg_dict | {"resolved": meta}, indent=1))


def train_epoch(t: Trainer, schedule: Schedule, epoch: int, step: int, runlog: RunLog, progress: bool,
                stop: GracefulStop) -> tuple[int, int, list[float], list[Prepared], bool]:
    """The steps of one epoch from global step `step` (a resumed epoch skips the batches it had done), each
    logged, until its end or a stop signal that every rank agrees on at a step boundary; returns (step, images
    seen, losses, the last batch, whether it stopped on a signal)."""
    from tqdm.auto import tqdm  # here, not at the top: train_step and its helpers run where tqdm is not installed

    cfg = t.cfg
    t.sampler.epoch, t.sampler.skip_batches = epoch, step - epoch * schedule.steps_per_epoch
    t.model.train()
    seen, losses, batch = 0, [], []
    batches = prepared_ahead(DevicePrefetcher(t.loader, t.device), t.prepare, step, t.device, cfg.sassl_async)
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{schedule.epochs}", disable=not progress or dist.rank() != 0,
               initial=t.sampler.skip_batches, total=schedule.steps_per_epoch)
    for batch in bar:
        lr = cosine_lr(step, schedule.total_steps, int(cfg.warmup_epochs * schedule.steps_per_epoch), t.base_lr)
        m = cosine_momentum(step, schedule.total_steps, cfg.ema)
        wd = {}
        if cfg.weight_decay_end >= 0:  # DINO's rising weight decay, logged with the step
            wd["weight_decay"] = cosine_between(step, schedule.total_steps, cfg.weight_decay, cfg.weight_decay_end)
            set_weight_decay(t.opt, wd["weight_decay"])
        loss, logs = train_step(t.step_model, t.views, t.opt, batch, lr, m, t.dtype, t.scaler, epoch)
        runlog.record_draws(batch)
        step += 1
        if cfg.log_augment:
            runlog.record_augment(step, batch, logs["per_image"])
        seen += sum(len(p.crop1) for p in batch) * dist.world_size()
        losses.append(checked_loss(loss, step, cfg))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.3g}")
        runlog.log({"step": step, "epoch": epoch + 1, "loss": losses[-1], "lr": lr, "momentum": m} | wd)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save_checkpoint(t.run, t.model, t.opt, t.scaler, step, schedule.epochs)
        if stop.agreed(t.device):
            return step, seen, losses, batch, True
        if schedule.stops(step):
            break
    return step, seen, losses, batch, False


def stopped(t: Trainer, schedule: Schedule, step: int, runlog: RunLog, stop: GracefulStop) -> Stopped:
    """A stop signal agreed at `step`: the checkpoint of that step (the epoch's own, if it has just been
    written, again), the loggers closed; the exception pretrain() raises."""
    save_checkpoint(t.run, t.model, t.opt, t.scaler, step, schedule.epochs)
    runlog.close()
    message = (f"sassl pretrain {t.cfg.name}: stopped by {signal_name(stop.signum)} at step {step} of "
               f"{schedule.planned}; {t.run.ckpt_path} holds it: continue with --resume")
    if dist.rank() == 0:  # said before the barrier: under torchrun the agent may end rank 0 once rank 1 has left
        terminal_line(message)
    dist.barrier()
    return Stopped(stop.signum, message, said=True)


def pretrain(cfg: PretrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train; returns the final metrics. Raises before training for a bad config or checkpoint.
    Build cfg with config_from_dict (that applies its recipe); under torchrun call `sassl.dist.setup()`
    first (the CLI does)."""
    budget = TimeBudget(cfg.time_budget)  # counts from here
    validate(cfg)
    run_dir = Path(cfg.runs_dir) / cfg.name
    with storage_errors(run_dir), run_lock(run_dir), GracefulStop(f"sassl pretrain {cfg.name}", "step") as stop:
        t = set_up(cfg, resume, progress)
        run = t.run
        # a time budget's choice (made after each epoch, kept in the checkpoint) holds when the run is resumed
        epochs = run.state.get("epochs", cfg.epochs) if cfg.time_budget and run.state else cfg.epochs
        schedule = Schedule(t.sampler.batches_per_epoch(), epochs, cfg.max_steps)
        write_run_config(t, schedule)
        prune_metrics(run, schedule.steps_per_epoch)
        runlog = RunLog(run.dir, run.cfg_dict, cfg.tensorboard, cfg.wandb, resume_step=run.step)
        say = Progress(cfg.name, progress and dist.rank() == 0)
        if run.state is None and t.monitor is not None:  # the random-init baseline a run must beat
            t0 = time.time()
            at_init = t.monitor.measure(t.model.backbone)  # every rank embeds its share
            budget.monitor_s = time.time() - t0
            runlog.log({"epoch": 0, "step": 0} | at_init)
            say.say(f"random-init{monitor_line(at_init)} (the bar to beat); {schedule.planned} steps to go, run "
                    f"folder {run.dir}")
        result = finished_result(run, schedule)
        step, epoch = run.step, run.step // schedule.steps_per_epoch
        skipped = report_skipped(run, None, epoch)  # the files skipped before this start were said then
        while epoch < schedule.epochs:
            t0 = time.time()
            step, seen, losses, batch, signalled = train_epoch(t, schedule, epoch, step, runlog, progress, stop)
            if signalled:
                raise stopped(t, schedule, step, runlog, stop)
            budget.step_times.append(time.time() - t0)  # the epoch's steps; its monitor pass comes below
            row = {"epoch": epoch + 1, "step": step, "epoch_seconds": round(budget.step_times[-1], 2),
                   "images_per_second": round(seen / max(1e-9, budget.step_times[-1]), 1)}
            if cfg.time_budget and run.state is None and step == schedule.steps_per_epoch * (epoch + 1):
                kept = budget.epochs_that_fit(epoch + 1, schedule.epochs, cfg.knn_every)
                if epoch == 0 or kept < schedule.epochs:
                    schedule.epochs = row["epochs_in_budget"] = kept
                    say.say(f"time budget {duration(budget.seconds)}: training {kept} of {cfg.epochs} epochs (epochs "
                            f"take {duration(budget.epoch_s)}, a kNN pass {duration(budget.monitor_s)})")
            if t.monitor is not None and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == schedule.epochs or schedule.stops(step)):
                row |= t.monitor.measure(t.model.backbone)
            skipped = report_skipped(run, skipped, epoch + 1)
            runlog.log(row)
            runlog.epoch_end(step, t.views, batch if epoch == run.step // schedule.steps_per_epoch or "knn_top1" in row else None)
            result = row
            save_checkpoint(run, t.model, t.opt, t.scaler, step, schedule.epochs)
            say.epoch(epoch, schedule, step, losses, row, time.time() - t0)
            if stop.agreed(t.device) and step < schedule.planned:  # signalled in the monitor pass or the checkpoint
                raise stopped(t, schedule, step, runlog, stop)
            if schedule.stops(step):
                break
            epoch += 1
        finish(run, runlog, result)
        return result

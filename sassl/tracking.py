"""What a run leaves for people to watch: metrics.jsonl (the record), TensorBoard event files in
<run>/tensorboard/ (on by default: `tensorboard --logdir runs`), and Weights & Biases when a project is given.
Only rank 0 writes."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torchvision

from sassl import dist
from sassl.views import Prepared, TwoViews

# metrics.jsonl key -> TensorBoard / W&B tag; other numeric keys go under run/
TAGS = {"loss": "train/loss", "lr": "train/lr", "momentum": "train/momentum", "knn_top1": "eval/knn_top1",
        "images_per_second": "speed/images_per_second", "epoch_seconds": "speed/epoch_seconds",
        "epochs_in_budget": "run/epochs_in_budget"}
NOT_LOGGED = ("step", "epoch")


def wandb_run(project: str, run_dir: Path, name: str, config: dict):
    """A W&B run for `project`, resumed under the same id when the run is (validate() has checked that wandb
    is installed). Offline (no network): WANDB_MODE=offline writes it under <run>/wandb/ for `wandb sync`."""
    import wandb

    run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]
    return wandb.init(project=project, name=name, id=run_id, resume="allow", dir=str(run_dir), config=config)


class RunLog:
    """metrics.jsonl plus the loggers' views of it. `resume_step`: the step a resumed run continues after
    (TensorBoard drops the events logged after it by the interrupted run, as metrics.jsonl's rows are)."""

    def __init__(self, run_dir: Path, config: dict, tensorboard: bool = True, wandb: str = "", resume_step: int = 0):
        self.metrics_file = run_dir / "metrics.jsonl"
        self.on = dist.rank() == 0
        self.tb = self.wb = None
        self.draws: list[dict[str, torch.Tensor]] = []
        if not self.on:
            return
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step or None)
        if wandb:
            self.wb = wandb_run(wandb, run_dir, run_dir.name, config)

    def log(self, row: dict) -> None:
        """Append a metrics row (with its 'step') and send its numbers to the loggers."""
        if not self.on:
            return
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(row) + "\n")
        scalars = {TAGS.get(k, f"run/{k}"): v for k, v in row.items()
                   if k not in NOT_LOGGED and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for tag, v in scalars.items():
            if self.tb is not None:
                self.tb.add_scalar(tag, v, row["step"])
        if self.wb is not None and scalars:
            self.wb.log(scalars, step=row["step"])

    def record_draws(self, batch: list[Prepared]) -> None:
        """Keep a step's SASSL draws (stylized or not; alpha, beta and the style row of the stylized images)."""
        if not self.on:
            return
        for prep in batch:
            s = prep.p1.sassl
            if s is not None:
                self.draws.append({"stylized": s.apply.float(), "alpha": s.alpha[s.apply], "beta": s.beta[s.apply],
                                   "style_index": s.style_index[s.apply].float()})

    def epoch_end(self, step: int, views: TwoViews | None = None, batch: list[Prepared] | None = None,
                  rows: int = 8) -> None:
        """Histograms of the epoch's SASSL draws, and (given a batch) its views as an image grid: per image, the
        crop after SASSL, view 1 and view 2."""
        if not self.on:
            return
        if self.draws:
            drawn = {k: torch.cat([d[k] for d in self.draws]) for k in self.draws[0]}
            self.draws = []
            if self.tb is not None:
                for k, v in drawn.items():
                    if len(v):
                        self.tb.add_histogram(f"sassl/{k}", v, step)
            if self.wb is not None:
                import wandb

                self.wb.log({f"sassl/{k}": wandb.Histogram(v.numpy()) for k, v in drawn.items() if len(v)}, step=step)
        if views is not None and batch:
            grid = views_grid(views, batch[0], rows)
            if self.tb is not None:
                self.tb.add_image("views", grid, step)
            if self.wb is not None:
                import wandb

                self.wb.log({"views": wandb.Image(grid.permute(1, 2, 0).numpy())}, step=step)
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()


@torch.no_grad()
def views_grid(views: TwoViews, prep: Prepared, rows: int = 8) -> torch.Tensor:
    """(3, H, W) in [0, 1] on the CPU: for the first `rows` images, the crop after SASSL, view 1 and view 2."""
    n = min(rows, len(prep.crop1))
    v1, v2, _ = views.finish(prep)
    mean, std = views.mean.to(v1.device), views.std.to(v1.device)
    unnorm = (lambda x: (x * std + mean)) if views.normalize else (lambda x: x)
    tiles = torch.stack([prep.crop1[:n], unnorm(v1[:n]), unnorm(v2[:n])], dim=1).flatten(0, 1)
    return torchvision.utils.make_grid(tiles.float().clamp(0, 1).cpu(), nrow=3, padding=2)

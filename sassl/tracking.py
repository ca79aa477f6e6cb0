"""What a run leaves for people to watch: metrics.jsonl (the record), TensorBoard event files in
<run>/tensorboard/ (on by default: `tensorboard --logdir runs`), Weights & Biases when a project is given, and
with `log_augment` the per-image augmentation record (augment.bin, read_augment). Only rank 0 writes."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torchvision

from sassl import dist
from sassl.storage import StorageError, storage_error
from sassl.views import Prepared, TwoViews

# metrics.jsonl key -> TensorBoard / W&B tag; other numeric keys go under run/
TAGS = {"loss": "train/loss", "lr": "train/lr", "momentum": "train/momentum",
        "weight_decay": "train/weight_decay", "knn_top1": "eval/knn_top1",
        "probe_top1": "eval/probe_top1", "rankme": "eval/rankme",
        "images_per_second": "speed/images_per_second", "epoch_seconds": "speed/epoch_seconds",
        "epochs_in_budget": "run/epochs_in_budget"}
NOT_LOGGED = ("step", "epoch")
# one row of augment.bin per image and step (rank 0's images): its SASSL draws joined with its loss; alpha and
# beta are NaN and style -1 where the image was not stylized (style: the bank or batch row; -1 for noise too)
AUGMENT = np.dtype([("step", "<i4"), ("image", "<i4"), ("stylized", "u1"), ("alpha", "<f4"), ("beta", "<f4"),
                    ("style", "<i4"), ("loss", "<f4")])


def augment_rows(step: int, batch: list[Prepared], per_image: torch.Tensor) -> np.ndarray:
    """The AUGMENT rows of one step: every image of the step's micro-batches in order, with its loss."""
    loss = per_image.float().cpu().numpy()
    rows = np.zeros(len(loss), AUGMENT)
    rows["step"], rows["image"], rows["loss"] = step, np.arange(len(loss)), loss
    rows["alpha"] = rows["beta"] = np.nan
    rows["style"] = -1
    start = 0
    for prep in batch:
        s, n = prep.p1.sassl, len(prep.crop1)
        if s is not None:
            on = s.apply.cpu().numpy()
            part = rows[start:start + n]  # a view: setting its fields sets rows'
            part["stylized"] = on
            part["alpha"] = np.where(on, s.alpha.cpu().numpy(), np.nan)
            part["beta"] = np.where(on, s.beta.cpu().numpy(), np.nan)
            part["style"] = np.where(on, s.style_index.cpu().numpy(), -1)
        start += n
    if start != len(rows):
        raise ValueError(f"augment record: {len(rows)} per-image losses for {start} images")
    return rows


def read_augment(run_dir: str | Path) -> np.ndarray:
    """A run's augment.bin as a structured array of AUGMENT rows (empty when the run kept none)."""
    path = Path(run_dir) / "augment.bin"
    return np.fromfile(path, dtype=AUGMENT) if path.is_file() else np.zeros(0, AUGMENT)


def excess_loss(record: np.ndarray) -> np.ndarray:
    """Each row's loss minus the mean loss of its step's images: what is left once training progress (the
    loss falling over steps) is taken out. record: AUGMENT rows (sassl.tracking.read_augment)."""
    _, inverse = np.unique(record["step"], return_inverse=True)
    mean = np.bincount(inverse, weights=record["loss"]) / np.bincount(inverse)
    return record["loss"] - mean[inverse]


def augment_summary(record: np.ndarray, bins: int = 8) -> list[dict]:
    """The augmentation record in a few rows: mean excess loss (excess_loss) of the stylized and the unstylized
    images ({"by": "stylized", "value": 1 / 0}), and of the stylized ones per equal-width bin of alpha and of beta
    ({"by": "alpha" / "beta", "value": the bin's centre}); each with its image count and its standard error."""
    ex = excess_loss(record) if len(record) else np.zeros(0)
    on = record["stylized"].astype(bool)

    def row(by: str, value: float, sel: np.ndarray) -> dict:
        e = ex[sel]
        se = float(e.std(ddof=1) / np.sqrt(len(e))) if len(e) > 1 else float("nan")
        return {"by": by, "value": value, "images": int(len(e)), "excess_loss": float(e.mean()), "stderr": se}
    rows = [row("stylized", v, on == bool(v)) for v in (1, 0) if (on == bool(v)).any()]
    for key in ("alpha", "beta"):
        v = record[key][on].astype(np.float64)
        if len(v):
            edges = np.linspace(v.min(), v.max(), bins + 1)  # the largest value goes to the last bin
            which = np.full(len(record), -1)
            which[on] = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, bins - 1)
            rows += [row(key, float((edges[b] + edges[b + 1]) / 2), which == b) for b in range(bins)
                     if (which == b).any()]
    return rows


def augment_trend(summary: list[dict], key: str, per: float = 0.1) -> tuple[float, float] | None:
    """How the excess loss of stylized images changes per `per` of alpha or beta (key): the weighted
    least-squares line through augment_summary's bin means (weights 1 / stderr^2), as (slope, its standard
    error), both per `per`. It reads the summary rows (augment_summary.csv), so kept runs without their
    augment.bin get it too. None with fewer than 3 bins that have a standard error."""
    rs = [r for r in summary if r["by"] == key and np.isfinite(r["stderr"]) and r["stderr"] > 0]
    if len(rs) < 3:
        return None
    x = np.array([r["value"] for r in rs], dtype=np.float64)
    y = np.array([r["excess_loss"] for r in rs], dtype=np.float64)
    w = 1.0 / np.array([r["stderr"] for r in rs], dtype=np.float64) ** 2
    xm = (w * x).sum() / w.sum()
    sxx = (w * (x - xm) ** 2).sum()
    slope = (w * (x - xm) * (y - (w * y).sum() / w.sum())).sum() / sxx
    return float(slope * per), float(per / np.sqrt(sxx))  # the bins' own errors, not the scatter about the line


def wandb_run(project: str, run_dir: Path, name: str, config: dict):
    """A W&B run for `project`, resumed under the same id when the run is (validate() has checked that wandb
    is installed). Offline (no network): WANDB_MODE=offline writes it under <run>/wandb/ for `wandb sync`."""
    import wandb

    run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]
    return wandb.init(project=project, name=name, id=run_id, resume="allow", dir=str(run_dir), config=config)


class TensorBoard:
    """A SummaryWriter that a failing disk turns off instead of ending the run: the first write the storage refuses
    (full, read-only, gone) is said once in words and TensorBoard stops; metrics.jsonl goes on (and a full disk
    then stops the run at its next checkpoint, in words). tensorboard's own writer thread meets the disk first:
    its traceback is kept quiet (quiet_writer_thread) and its error is re-raised at the next call, here."""

    def __init__(self, folder: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        quiet_writer_thread()
        self.folder, self.writer = folder, SummaryWriter(str(folder), purge_step=purge_step)

    def __call__(self, method: str, *args) -> None:
        """writer.<method>(*args), unless a storage error turned TensorBoard off."""
        if self.writer is None:
            return
        try:
            getattr(self.writer, method)(*args)
        except (OSError, StorageError) as e:
            err = storage_error(self.folder, e) or e
            self.writer = None
            print(f"sassl: TensorBoard stops: {err}; the run goes on (metrics.jsonl keeps every number)", flush=True)


_quiet = False


def quiet_writer_thread() -> None:
    """Keep tensorboard's event-writer thread from printing a traceback when the disk refuses its write (the error
    reaches the next call on the writer, which TensorBoard says in words); other threads' errors print as before."""
    global _quiet
    if _quiet:
        return
    import threading

    try:
        from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
    except ImportError:  # a tensorboard that moved its writer thread: its traceback prints, the run is as before
        return
    previous = threading.excepthook

    def hook(args):
        if not (isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError)):
            previous(args)
    threading.excepthook, _quiet = hook, True


class RunLog:
    """metrics.jsonl plus the loggers' views of it. `resume_step`: the step a resumed run continues after
    (TensorBoard drops the events logged after it by the interrupted run, as metrics.jsonl's rows are)."""

    def __init__(self, run_dir: Path, config: dict, tensorboard: bool = True, wandb: str = "", resume_step: int = 0):
        self.metrics_file = run_dir / "metrics.jsonl"
        self.on = dist.rank() == 0
        self.tb = self.wb = None
        self.draws: list[dict[str, torch.Tensor]] = []
        self.augment_file = run_dir / "augment.bin"
        if not self.on:
            return
        if self.augment_file.is_file():  # rows logged after the checkpoint a run resumes from are dropped
            kept = read_augment(run_dir)
            kept[kept["step"] <= resume_step].tofile(self.augment_file)
        if tensorboard:
            self.tb = TensorBoard(run_dir / "tensorboard", purge_step=resume_step or None)
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
                self.tb("add_scalar", tag, v, row["step"])
        if self.wb is not None and scalars:
            self.wb.log(scalars, step=row["step"])

    def record_augment(self, step: int, batch: list[Prepared], per_image: torch.Tensor) -> None:
        """Append a step's rows to augment.bin (augment_rows)."""
        if self.on:
            with open(self.augment_file, "ab") as f:
                augment_rows(step, batch, per_image).tofile(f)

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
                        self.tb("add_histogram", f"sassl/{k}", v, step)
            if self.wb is not None:
                import wandb

                self.wb.log({f"sassl/{k}": wandb.Histogram(v.numpy()) for k, v in drawn.items() if len(v)}, step=step)
        if views is not None and batch:
            grid = views_grid(views, batch[0], rows)
            if self.tb is not None:
                self.tb("add_image", "views", grid, step)
            if self.wb is not None:
                import wandb

                self.wb.log({"views": wandb.Image(grid.permute(1, 2, 0).numpy())}, step=step)
        if self.tb is not None:
            self.tb("flush")

    def close(self) -> None:
        if self.tb is not None:
            self.tb("close")
        if self.wb is not None:
            self.wb.finish()


@torch.no_grad()
def views_grid(views: TwoViews, prep: Prepared, rows: int = 8) -> torch.Tensor:
    """(3, H, W) in [0, 1] on the CPU: for the first `rows` images, the crop after SASSL, view 1, view 2 and (with
    multi-crop) each local view, shown at the global crops' size."""
    n = min(rows, len(prep.crop1))
    v1, v2 = views.apply(prep.crop1[:n], prep.p1.head(n)), views.apply(prep.crop2[:n], prep.p2.head(n))
    local = [views.apply(c[:n], p.head(n)) for c, p in zip(prep.local, prep.pl)]
    mean, std = views.mean.to(v1.device), views.std.to(v1.device)
    unnorm = (lambda x: (x * std + mean)) if views.normalize else (lambda x: x)
    size = v1.shape[-2:]
    local = [torch.nn.functional.interpolate(unnorm(v), size=size, mode="nearest") for v in local]
    tiles = torch.stack([prep.crop1[:n], unnorm(v1), unnorm(v2), *local], dim=1).flatten(0, 1)
    return torchvision.utils.make_grid(tiles.float().clamp(0, 1).cpu(), nrow=3 + len(local), padding=2)

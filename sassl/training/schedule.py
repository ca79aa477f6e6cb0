"""How long a run trains: the schedule of epochs and steps, a wall-clock budget that keeps the epochs that fit, and
the terminal's progress lines with the time left."""
from __future__ import annotations

import time
from dataclasses import dataclass

from sassl import dist
from sassl.records import duration, terminal_line

def epochs_within(budget_s: float, elapsed_s: float, epoch_s: float, monitor_s: float, done: int, epochs: int,
                  knn_every: int) -> int:
    """The most epochs, from `done` up to `epochs`, whose run ends within `budget_s` seconds: `elapsed_s`
    is spent when the steps of epoch `done` end; each further epoch's steps take `epoch_s`, and each kNN
    monitor pass from epoch `done` on (every `knn_every`-th epoch and the last; none if knn_every is 0)
    takes `monitor_s`."""
    def ends_at(e: int) -> float:
        passes = sum(1 for k in range(done, e + 1) if knn_every and (k % knn_every == 0 or k == e))
        return elapsed_s + (e - done) * epoch_s + passes * monitor_s
    return max([e for e in range(done + 1, epochs + 1) if ends_at(e) <= budget_s], default=done)


@dataclass
class Schedule:
    """How long the run trains: `epochs` (a time budget may cut them) of `steps_per_epoch` steps, and the step
    this invocation stops at (max_steps; 0: none)."""

    steps_per_epoch: int
    epochs: int
    max_steps: int = 0

    @property
    def total_steps(self) -> int:  # the lr and momentum schedules end here
        return self.steps_per_epoch * self.epochs

    @property
    def planned(self) -> int:  # the step this invocation ends at
        return min(self.total_steps, self.max_steps) if self.max_steps else self.total_steps

    def stops(self, step: int) -> bool:
        return bool(self.max_steps) and step >= self.max_steps


class TimeBudget:
    """`minutes` of wall clock from the start of pretrain(). After each whole epoch, the epochs that still fit
    at the mean pace so far (epochs_within), never more than chosen before; rank 0's clock decides for every
    rank, and the schedules end with the epochs kept."""

    def __init__(self, minutes: float):
        self.seconds, self.start = minutes * 60, time.time()
        self.step_times: list[float] = []  # each epoch's steps, without its monitor pass
        self.monitor_s = 0.0               # one kNN monitor pass

    @property
    def epoch_s(self) -> float:
        return sum(self.step_times) / len(self.step_times)

    def epochs_that_fit(self, done: int, epochs: int, knn_every: int) -> int:
        return dist.all_objects(epochs_within(self.seconds, time.time() - self.start, self.epoch_s, self.monitor_s,
                                              done, epochs, knn_every))[0]


def monitor_line(row: dict) -> str:
    """The monitor's numbers of a metrics row as the epoch line shows them ('' when it has none)."""
    parts = [f"kNN {row['knn_top1']:.2f}%"] if "knn_top1" in row else []
    parts += [f"probe {row['probe_top1']:.2f}%"] if "probe_top1" in row else []
    parts += [f"RankMe {row['rankme']:.1f}"] if "rankme" in row else []
    return "".join("  " + p for p in parts)


class Progress:
    """The run's lines on the terminal (rank 0, when asked): the random-init kNN, the time budget's choice and
    one line per epoch with the time left."""

    def __init__(self, name: str, on: bool):
        self.name, self.on, self.epoch_times = name, on, []

    def say(self, text: str) -> None:
        if self.on:
            terminal_line(f"{self.name}: {text}")

    def epoch(self, epoch: int, schedule: Schedule, step: int, losses: list[float], row: dict, seconds: float) -> None:
        self.epoch_times.append(seconds)
        left = (schedule.planned - step) / schedule.steps_per_epoch * sum(self.epoch_times) / len(self.epoch_times)
        loss = f"  loss {sum(losses) / len(losses):.3f}" if losses else ""
        self.say(f"epoch {epoch + 1}/{schedule.epochs}  step {step}/{schedule.planned}{loss}{monitor_line(row)}  "
                 f"{row['images_per_second']:.0f} img/s  epoch {duration(seconds)}  left ~{duration(left)}")

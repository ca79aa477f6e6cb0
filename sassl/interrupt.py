"""Pre-emption and interruption as normal events. SIGTERM (what SLURM sends a pre-empted or timed-out job, and
`docker stop` and Kubernetes send), SIGUSR1 (`#SBATCH --signal=USR1@120`) and SIGINT (Ctrl-C in a terminal, a
notebook's interrupt) ask a long job to stop at its next safe point: pre-training after the current step (every
rank at the same step), evaluation after the current protocol, a study after its current trial. The job saves what
it has and raises `Stopped`; a second signal stops it at once. The processes a job starts (a study's lanes, a
benchmark's trainer) run the parent's own `sassl` (`sassl_child`) and are passed the signal on."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sassl import dist
from sassl.records import terminal_line

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))
# NOTE: one event can arrive twice: SLURM signals every process of a job step, and torchrun's agent forwards its
# own copy to the workers; a repeat within this many seconds is the same event, not a second request.
REPEAT_S = 2.0


class Stopped(Exception):
    """A job stopped on a signal after saving what it had; `exit_code` is the shell's 128 + the signal; `said`:
    the job printed the message itself (pretraining's rank 0, before the ranks part)."""

    def __init__(self, signum: int, message: str, said: bool = False):
        super().__init__(message)
        self.signum, self.exit_code, self.said = signum, 128 + signum, said


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class GracefulStop:
    """For the block, the signals of SIGNALS set a flag instead of ending the process (main thread only: elsewhere
    the block changes nothing). The job polls `requested` (one process) or `agreed` (every rank, at the same
    step) at its safe points. The previous handlers come back when the block ends, or at the second signal,
    which then stops the job at once (KeyboardInterrupt for SIGINT, else SystemExit with 128 + the signal); a repeat
    of the first within REPEAT_S seconds is the same event delivered twice and changes nothing."""

    def __init__(self, job: str, safe_point: str, on_signal: Callable[[int], None] | None = None):
        self.job, self.safe_point, self.on_signal = job, safe_point, on_signal
        self.signum: int | None = None
        self._first = 0.0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and time.monotonic() - self._first < REPEAT_S:
            return  # the same event, delivered to this process twice
        if self.signum is not None:  # the second signal: at once
            self.__exit__()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum, self._first = signum, time.monotonic()
        terminal_line(f"{self.job}: {signal_name(signum)} received; stopping after the current {self.safe_point} "
                      "and saving it (a second signal stops at once)")
        if self.on_signal is not None:
            self.on_signal(signum)

    @property
    def requested(self) -> bool:
        """Whether this process was signalled."""
        return self.signum is not None

    def agreed(self, device: torch.device | str = "cpu") -> bool:
        """Whether any rank was signalled: under torch.distributed a MAX all-reduce of the signal number, which
        every rank must call at the same step (the step boundary); a rank that was not signalled takes the
        signalled one's number. One process: `requested`."""
        if not dist.is_dist():
            return self.requested
        flag = torch.tensor([self.signum or 0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if int(flag) and self.signum is None:
            self.signum = int(flag)
        return bool(int(flag))


def children(pid: int | None = None) -> list[int]:
    """The child processes of `pid` (this process), from /proc; [] where there is none (not Linux)."""
    pid, found = pid or os.getpid(), []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def forward_to_children(signum: int) -> None:
    """Pass a stop signal on to this process's children (a study's lanes, a lane's notebook kernel): each stops at
    its own safe point, a trial's pre-training after its step with a checkpoint."""
    for child in children():
        try:
            os.kill(child, signum)
        except OSError:
            pass


def sassl_child(*args: str, **env: str) -> tuple[list[str], dict]:
    """The command and environment that run `sassl ARGS` as a child process on the code this process runs: this
    Python, `-m sassl.cli`, the folder this `sassl` came from first on PYTHONPATH and (Python 3.11+) PYTHONSAFEPATH
    set, so that a `sassl/` folder in the working directory (another checkout) is not imported instead; `env` adds
    variables (OMP_NUM_THREADS=...)."""
    root = str(Path(__file__).resolve().parents[1])
    path = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    return [sys.executable, "-m", "sassl.cli", *args], os.environ | {"PYTHONPATH": os.pathsep.join(path),
                                                                    "PYTHONSAFEPATH": "1"} | env


def ignore_in_workers(_worker_id: int) -> None:
    """A DataLoader worker_init_fn: the stop signals are the main process's to act on. A terminal's Ctrl-C and
    SLURM's signal reach every process of the job; a worker that died of them would end the step the main
    process is finishing. The main process ends its workers when it exits."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)


__all__ = ["GracefulStop", "SIGNALS", "Stopped", "children", "forward_to_children", "ignore_in_workers",
           "sassl_child", "signal_name"]

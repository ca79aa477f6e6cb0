"""Running a study: the folder is the database. A trial's state is what its run folder holds (a checkpoint:
started; metrics.json: trained; eval/summary.json: finished), so a runner keeps no state of its own. Each lane
walks the trials in seed-major order and takes (locks) the next one that is not finished; run the same command
after a crash, a reboot or a kill of everything and finished trials are skipped, started ones resume from their
checkpoints. Several lanes, or several machines sharing the runs folder, split the trials by their locks."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from sassl.interrupt import GracefulStop, Stopped, forward_to_children, sassl_child, signal_name
from sassl.notebook import execute, notebook_path
from sassl.storage import exclusive_lock
from sassl.records import duration, read_metrics, terminal_line
from sassl.study.spec import Study, Trial, load_study
from sassl.eval.config import upgraded_eval
from sassl.training.config import upgraded

LOCK = ".study-lock"     # held while a lane runs the trial's notebooks
TIMING = "study-trial.json"  # the trial's wall time, written when it finishes


def trial_state(run: Path) -> str:
    """finished (evaluated), trained (pre-trained, not evaluated), started (a checkpoint) or pending."""
    if (run / "eval" / "summary.json").is_file():
        return "finished"
    if (run / "metrics.json").is_file():
        return "trained"
    return "started" if (run / "checkpoints" / "last.pt").is_file() else "pending"


@contextlib.contextmanager
def trial_lock(run: Path) -> Iterator[bool]:
    """Yields True while this process holds the trial's lock, False when another process holds it (released when
    the holder exits, killed or not: sassl.storage.exclusive_lock)."""
    with exclusive_lock(run / LOCK) as holder:
        yield holder is None


def record_study(study: Study, runs_dir: str | Path, amend: bool = False) -> Path:
    """The study folder with the study file as first run (study.toml) and what it computes (resolved.json). A
    later file that changes what an existing trial computes, or the primary outcomes, or the comparisons, is
    refused unless `amend`; an amendment is logged in amendments.jsonl (with whether results existed), and the
    report says so. New seeds or arms extend the study without an amendment."""
    folder = study.dir(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    new, old_path = study.resolved(), folder / "resolved.json"
    if old_path.is_file():
        old = json.loads(old_path.read_text())
        for trial in old["trials"].values():  # records of older code in today's keys
            trial["pretrain"], trial["evaluate"] = upgraded(trial["pretrain"]), upgraded_eval(trial["evaluate"])
        changed = [k for k in ("primary", "compare") if old[k] != new[k]]
        changed += [f"trial {t}" for t in old["trials"] if t in new["trials"] and old["trials"][t] != new["trials"][t]]
        if changed and not amend:
            raise ValueError(f"{study.path}: changes what the study at {folder} computes ({', '.join(changed)}) since "
                             f"its first run ({folder / 'study.toml'}); run with --amend to change it anyway (the "
                             "report will say so), or give the study another name")
        if changed:
            results = any(trial_state(folder / t) == "finished" for t in old["trials"])
            with open(folder / "amendments.jsonl", "a") as f:
                f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "changed": changed,
                                    "results_existed": results}) + "\n")
        new["trials"] = old["trials"] | new["trials"]  # trials dropped from the file keep their record
    if not old_path.is_file() or new != json.loads(old_path.read_text()):
        old_path.write_text(json.dumps(new, indent=1))
        if not (folder / "study.toml").is_file() or amend:
            (folder / "study.toml").write_text(study.path.read_text())
    return folder


def _knn(run: Path) -> str:
    m = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    return f", kNN monitor {m['knn_top1']:.2f}%" if "knn_top1" in m else ""


def trial_seconds(run: Path) -> float | None:
    """A finished trial's wall time: its study timing, else (a trial run before studies) its epochs' seconds."""
    if (run / TIMING).is_file():
        return json.loads((run / TIMING).read_text())["seconds"]
    if (run / "metrics.jsonl").is_file():
        epochs = [r["epoch_seconds"] for r in read_metrics(run / "metrics.jsonl") if "epoch_seconds" in r]
        return sum(epochs) if epochs else None
    return None


def expected_seconds(study: Study, runs_dir: str | Path, arm: str | None = None) -> float | None:
    """The mean wall time of the study's finished trials of `arm` (of every arm where `arm` has none finished, or
    is None); None before any trial has finished."""
    folder = study.dir(runs_dir)
    done = [t for t in study.trials(runs_dir) if trial_state(folder / t.name) == "finished"]
    for pool in ([t for t in done if t.arm == arm], done):
        times = [s for s in (trial_seconds(folder / t.name) for t in pool) if s is not None]
        if times:
            return sum(times) / len(times)
    return None


def progress_line(study: Study, runs_dir: str | Path, lanes: int) -> str:
    """Trials finished of all, and the time left at the pace of the finished trials (their mean wall time)."""
    folder = study.dir(runs_dir)
    trials = study.trials(runs_dir)
    done = sum(trial_state(folder / t.name) == "finished" for t in trials)
    mean, left = expected_seconds(study, runs_dir), ""
    if mean is not None and done < len(trials):
        left = f"; ~{duration((len(trials) - done) * mean / lanes)} left at the pace so far"
    return f"study {study.name}: {done}/{len(trials)} trials finished{left}"


def deadline(text: str, now: float | None = None) -> float:
    """`--until`: an ISO date and time (2026-12-08T04:50) or a clock time HH:MM (its next occurrence), in local
    time, as seconds since the epoch."""
    now = time.time() if now is None else now
    try:
        if len(text) <= 5 and ":" in text:
            hour, minute = (int(v) for v in text.split(":"))
            today = datetime.datetime.fromtimestamp(now).replace(hour=hour, minute=minute, second=0, microsecond=0)
            when = today if today.timestamp() > now else today + datetime.timedelta(days=1)
        else:
            when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--until: {text!r} is neither HH:MM nor an ISO date and time such as 2026-12-08T04:50") from None
    if when.timestamp() <= now:
        raise ValueError(f"--until: {text} has passed")
    return when.timestamp()


def fits(study: Study, runs_dir: str | Path, trial: Trial, until: float | None) -> bool:
    """Whether a lane starts `trial` before the deadline `until`: a trial already started or trained always goes on
    (it resumes where it was), a pending one only if its arm's mean finished trial ends before `until` (with none
    finished yet, it starts). Says why it does not start one."""
    run = study.dir(runs_dir) / trial.name
    if until is None or trial_state(run) != "pending":
        return True
    expected, left = expected_seconds(study, runs_dir, trial.arm), until - time.time()
    if expected is None or expected <= left:
        return True
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(until))
    terminal_line(f"study {study.name}: trial {trial.name} not started: it takes ~{duration(expected)}, and "
                  f"{duration(max(left, 0))} are left before --until {when}")
    return False


def run_trial(trial: Trial, run: Path, pretrain_command: list[str] | None = None) -> None:
    """The trial's pre-training (resuming its checkpoint) then its evaluate notebook, into its run folder. The
    pre-training is the pretrain notebook, or `pretrain_command` (a multi-GPU trial's torchrun line). The trial's
    wall time (TIMING) adds up its attempts: a stopped or failed one adds its time when it ends, one killed outright
    does not."""
    t0 = time.time()
    try:
        if trial_state(run) in ("pending", "started") and pretrain_command:
            subprocess.run(pretrain_command, check=True)
        elif trial_state(run) in ("pending", "started"):
            execute(notebook_path("pretrain"), run / "pretrain.ipynb", trial.pretrain | {"resume": True},
                    cwd=notebook_path("pretrain").parent)
        execute(notebook_path("evaluate"), run / "evaluate.ipynb", trial.evaluate, cwd=notebook_path("evaluate").parent)
    finally:
        if run.is_dir():
            before = json.loads((run / TIMING).read_text())["seconds"] if (run / TIMING).is_file() else 0.0
            (run / TIMING).write_text(json.dumps({"seconds": round(before + time.time() - t0, 1)}))


def selected(study: Study, runs_dir: str | Path, arms: tuple[str, ...] = ()) -> list[Trial]:
    """The study's trials (seed-major), only those of `arms` when given (`--arms`: an arm not in the study raises,
    naming the arms it has)."""
    unknown = [a for a in arms if a not in study.arms]
    if unknown:
        raise ValueError(f"--arms: {', '.join(unknown)} not in study {study.name}; its arms: {', '.join(study.arms)}")
    return [t for t in study.trials(runs_dir) if not arms or t.arm in arms]


def lane(study: Study, runs_dir: str | Path, lanes: int = 1, arms: tuple[str, ...] = (),
         until: float | None = None) -> int:
    """Run every trial (of `arms`, if given) that is not finished and not held by another lane, seed-major, and
    with a deadline `until` (seconds since the epoch) only those that fit (`fits`); returns how many ran. A stop
    signal is passed on to the running trial (its pre-training checkpoints the step it is in, its evaluation keeps
    the protocols done) and no further trial starts: Stopped."""
    folder, ran = study.dir(runs_dir), 0
    with GracefulStop(f"study {study.name}", "trial", on_signal=forward_to_children) as stop:
        for trial in selected(study, runs_dir, arms):
            run = folder / trial.name
            if stop.requested:
                break
            if trial_state(run) == "finished":
                continue
            with trial_lock(run) as mine:
                if not mine or trial_state(run) == "finished":  # another lane has it, or finished it meanwhile
                    continue
                if not fits(study, runs_dir, trial, until):
                    continue
                t0 = time.time()
                terminal_line(f"study {study.name}: trial {trial.name} ({trial_state(run)}) starts, pid {os.getpid()}")
                try:
                    run_trial(trial, run)
                except Exception:
                    if stop.requested:  # the trial stopped on the signal passed on, having saved what it had
                        break
                    raise
                ran += 1
                terminal_line(f"study {study.name}: trial {trial.name} finished in {duration(time.time() - t0)}{_knn(run)}")
                terminal_line(progress_line(study, runs_dir, lanes))
    if stop.requested:
        raise Stopped(stop.signum, f"study {study.name}: stopped by {signal_name(stop.signum)}; finished trials are "
                                   "kept and started ones resume from their checkpoints: run the same command again")
    return ran


def run_study(path: str | Path, runs_dir: str | Path = "runs", lanes: int = 1, amend: bool = False,
              arms: tuple[str, ...] = (), until: float | None = None) -> int:
    """`sassl study run FILE`: validate, record, then run the trials (of `arms` only, if given: the ones to have
    first) in `lanes` lanes on this machine (each lane a process with cores / lanes threads), with a deadline
    `until` only those expected to finish by then. Returns 0 when every trial run for is finished."""
    study = load_study(path)
    if lanes < 1:
        raise ValueError(f"--lanes: must be >= 1, got {lanes}")
    selected(study, runs_dir, arms)  # unknown arms refused before anything is recorded
    record_study(study, runs_dir, amend)
    terminal_line(progress_line(study, runs_dir, lanes))
    if lanes == 1:
        lane(study, runs_dir, arms=arms, until=until)
    else:
        threads = str(max(1, (os.cpu_count() or lanes) // lanes))
        cmd, env = sassl_child("study", "lane", str(study.path), "--runs-dir", str(runs_dir), "--lanes", str(lanes),
                               *(["--arms", *arms] if arms else []),
                               *(["--until", datetime.datetime.fromtimestamp(until).isoformat()] if until else []),
                               OMP_NUM_THREADS=threads)
        with GracefulStop(f"study {study.name}", "trial of each lane", on_signal=forward_to_children) as stop:
            procs = [subprocess.Popen(cmd, env=env) for _ in range(lanes)]
            codes = [p.wait() for p in procs]
        if stop.requested:
            raise Stopped(stop.signum, f"study {study.name}: stopped by {signal_name(stop.signum)}; finished trials "
                                       "are kept and started ones resume: run the same command again")
        if any(codes):
            raise RuntimeError(f"study {study.name}: lane(s) exited with {codes}; run the same command again to "
                               "go on (finished trials are kept, started ones resume)")
    terminal_line(progress_line(study, runs_dir, lanes))
    folder = study.dir(runs_dir)
    return 0 if all(trial_state(folder / t.name) == "finished" for t in selected(study, runs_dir, arms)) else 1

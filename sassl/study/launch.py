"""Trials as cluster jobs, through submitit: `--launcher slurm` submits one job per unfinished trial (a job
array), `--launcher submitit-local` runs the same jobs on this machine with submitit's local executor (what
the tests run). A job takes the trial's lock and runs it as a local lane does; with more than one GPU per trial
its pre-training runs under torchrun (the command lines of docs/scale.md), then rank 0's node evaluates it. A job that
SLURM pre-empts or times out is requeued by submitit (Checkpointable) and its trial resumes from its last
checkpoint. The launcher decides nothing else: the trial command is the one a user could type."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from sassl.records import terminal_line
from sassl.study.runner import record_study, run_trial, selected, trial_lock, trial_state
from sassl.study.spec import Trial, load_study

LAUNCHERS = ("local", "submitit-local", "slurm")


@dataclass
class SlurmOptions:
    """What a trial's job asks SLURM for. extra: any other sbatch option (KEY=VALUE, as submitit names them)."""

    partition: str | None = None
    time_min: int = 60 * 24
    gpus_per_trial: int = 1
    nodes_per_trial: int = 1
    cpus_per_gpu: int = 10
    extra: dict = field(default_factory=dict)


def torchrun_command(trial: Trial, config: Path, gpus: int, nodes: int, master: str = "$MASTER") -> list[str]:
    """The trial's pre-training under torchrun (its settings in `config`, a JSON file `sassl pretrain --config`
    reads; --resume continues a pre-empted trial): docs/scale.md's one-node or c10d multi-node command line."""
    launch = (["--standalone", "--nproc_per_node", str(gpus)] if nodes == 1 else
              ["--nnodes", str(nodes), "--nproc_per_node", str(gpus), "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"{master}:29400", "--rdzv-id", trial.name])
    return ["torchrun", *launch, "-m", "sassl.cli", "pretrain", "--config", str(config), "--resume"]


class TrialJob(submitit.helpers.Checkpointable):
    """One trial as a job. Checkpointable: on pre-emption or timeout submitit requeues this same call, and the
    trial resumes from its checkpoint (the folder says how far it got)."""

    def __init__(self, study_file: str, runs_dir: str, trial_name: str, gpus: int = 1, nodes: int = 1):
        self.study_file, self.runs_dir, self.trial_name = study_file, runs_dir, trial_name
        self.gpus, self.nodes = gpus, nodes

    def __call__(self) -> str:
        study = load_study(self.study_file)
        trial = next(t for t in study.trials(self.runs_dir) if t.name == self.trial_name)
        run = study.dir(self.runs_dir) / trial.name
        if self.gpus <= 1 and self.nodes == 1:
            with trial_lock(run) as mine:
                if mine and trial_state(run) != "finished":
                    run_trial(trial, run)
            return trial_state(run)
        return self._distributed(trial, run)

    def _distributed(self, trial: Trial, run: Path) -> str:
        env = submitit.JobEnvironment()
        first = env.global_rank == 0  # the job's first node: it holds the lock and evaluates
        config = run / "study-pretrain.json"
        if first:
            run.mkdir(parents=True, exist_ok=True)
            config.write_text(json.dumps(trial.pretrain))
        master = env.hostnames[0] if self.nodes > 1 else "localhost"
        cmd = torchrun_command(trial, config, self.gpus, self.nodes, master)
        if not first:
            subprocess.run(cmd, check=True)
            return "pre-trained"
        with trial_lock(run) as mine:
            if mine and trial_state(run) != "finished":
                run_trial(trial, run, pretrain_command=cmd)
        return trial_state(run)


def slurm_parameters(options: SlurmOptions) -> dict:
    """The sbatch options of a trial's job, in submitit's names: one task per node (torchrun starts the GPUs'
    processes), a signal 120 s before the time limit (submitit's USR2, on which it requeues the job)."""
    return {"partition": options.partition, "time": options.time_min, "nodes": options.nodes_per_trial,
            "ntasks_per_node": 1, "gpus_per_node": options.gpus_per_trial or None,
            "cpus_per_task": max(1, options.cpus_per_gpu * max(1, options.gpus_per_trial)), "signal_delay_s": 120,
            **options.extra}


def executor(launcher: str, folder: Path, options: SlurmOptions) -> submitit.Executor:
    """submitit's executor for `launcher`, its logs in `folder`."""
    if launcher == "submitit-local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=options.time_min)
        return ex
    ex = submitit.SlurmExecutor(folder=folder)
    ex.update_parameters(**slurm_parameters(options))
    return ex


def sbatch_script(study_file: str | Path, runs_dir: str | Path, options: SlurmOptions) -> str:
    """The sbatch script `--launcher slurm` submits for one of this study's trials, as submitit writes it (shown
    without a cluster: submitit's own script maker, the executor's options)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = load_study(study_file).dir(runs_dir) / "slurm" / "%j"
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=folder, job_name="sassl-study", **slurm_parameters(options))


def submit_study(study_file: str | Path, runs_dir: str | Path, launcher: str, options: SlurmOptions,
                 amend: bool = False, wait: bool = True, arms: tuple[str, ...] = ()) -> int:
    """Submit every unfinished trial (of `arms`, if given) as one job (a job array); with `wait`, wait for them and
    return 0 when every trial submitted for is finished. Resubmitting is safe: a finished trial is skipped, one
    running elsewhere holds its lock."""
    if launcher not in LAUNCHERS[1:]:
        raise ValueError(f"--launcher: expected one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    study = load_study(study_file)
    chosen = selected(study, runs_dir, arms)
    folder = record_study(study, runs_dir, amend)
    todo = [t for t in chosen if trial_state(folder / t.name) != "finished"]
    if not todo:
        terminal_line(f"study {study.name}: every trial is finished")
        return 0
    logs = folder / ("slurm" if launcher == "slurm" else "submitit")
    ex = executor(launcher, logs, options)
    jobs_of = [TrialJob(str(Path(study_file).resolve()), str(Path(runs_dir).resolve()), t.name,
                        options.gpus_per_trial, options.nodes_per_trial) for t in todo]
    with ex.batch():
        jobs = [ex.submit(job) for job in jobs_of]
    terminal_line(f"study {study.name}: {len(jobs)} trial job(s) submitted ({launcher}), first id {jobs[0].job_id}; "
                  f"logs in {logs}")
    if not wait:
        return 0
    for job, trial in zip(jobs, todo):
        terminal_line(f"study {study.name}: trial {trial.name}: {job.result()}")
    return 0 if all(trial_state(folder / t.name) == "finished" for t in chosen) else 1


def slurm_options(args) -> SlurmOptions:
    """The --partition, --time, --gpus-per-trial, --nodes-per-trial and --slurm KEY=VALUE flags."""
    extra = {}
    for item in args.slurm or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm: expected KEY=VALUE (an sbatch option as submitit names it), got {item!r}")
        extra[key.replace("-", "_")] = value
    if args.gpus_per_trial < 0 or args.nodes_per_trial < 1:
        raise ValueError("--gpus-per-trial must be >= 0 and --nodes-per-trial >= 1")
    return SlurmOptions(args.partition, args.time, args.gpus_per_trial, args.nodes_per_trial, extra=extra)

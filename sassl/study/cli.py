"""`sassl study run|status|report FILE`: the study subcommands (sassl.cli lists them with the others)."""
from __future__ import annotations

import argparse

from sassl.compare import to_markdown
from sassl.study.launch import LAUNCHERS, sbatch_script, slurm_options, submit_study
from sassl.study.report import plan_rows, status_rows, write_report
from sassl.study.runner import deadline, lane, run_study
from sassl.study.spec import load_study


def _run(args) -> int:
    if args.launcher == "local":
        until = deadline(args.until) if args.until else None
        return run_study(args.file, args.runs_dir, args.lanes, args.amend, tuple(args.arms or ()), until)
    if args.until:
        raise ValueError("--until: local lanes only (a cluster job has its own time limit, --time, and requeues)")
    if args.show_sbatch:
        print(sbatch_script(args.file, args.runs_dir, slurm_options(args)))
        return 0
    return submit_study(args.file, args.runs_dir, args.launcher, slurm_options(args), args.amend,
                        wait=args.launcher == "submitit-local" or args.wait, arms=tuple(args.arms or ()))


def _lane(args) -> int:
    lane(load_study(args.file), args.runs_dir, args.lanes, tuple(args.arms or ()),
         deadline(args.until) if args.until else None)
    return 0


def _status(args) -> int:
    print(to_markdown(status_rows(load_study(args.file), args.runs_dir)))
    return 0


def _report(args) -> int:
    out = write_report(load_study(args.file), args.runs_dir, args.effect)
    print((out / "report.md").read_text())
    a2 = ", style_gain.csv, style_gain.html" if (out / "style_gain.csv").is_file() else ""
    print(f"report: {out} (report.md, report.csv, report.json, forest.html{a2})")
    return 0


def _plan(args) -> int:
    pilot = load_study(args.pilot) if args.pilot else None
    rows = plan_rows(load_study(args.file), args.runs_dir, args.effect, pilot, lanes=args.lanes,
                     gpu_tflops=args.gpu_tflops, train_images=args.train_images)
    print(to_markdown(rows))
    print(f"pairs for {args.effect:g}: the seeds a paired t-test at 0.05 needs to detect that difference with 80% "
          "power at the pilot's sd; time: the trials still to run x the mean finished trial's wall time / lanes "
          "(empty where no trial has finished); GPU hours: those trials' pre-training FLOPs (sassl plan's count "
          f"of each arm's step x images x epochs) at {args.gpu_tflops:g} TFLOP/s sustained per GPU")
    return 0


def add_parser(sub) -> None:
    """`sassl study` and its subcommands."""
    p = sub.add_parser("study", help="a study file's question answered: arms x seeds, paired (sassl study run FILE)")
    steps = p.add_subparsers(dest="step", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("file", metavar="FILE", help="the study file (TOML)")
    common.add_argument("--runs-dir", default="runs", help="the runs root; the study's folder is <runs-dir>/<name>")
    r = steps.add_parser("run", parents=[common], help="run every trial not yet finished (resumable)")
    r.add_argument("--lanes", type=int, default=1, help="trials run side by side on this machine (cores split)")
    r.add_argument("--arms", nargs="+", metavar="ARM", help="run only these arms' trials (the ones wanted first); "
                   "default: every arm")
    r.add_argument("--until", metavar="TIME", help="start no trial expected to end after TIME (HH:MM, or "
                   "2026-12-08T04:50): the mean wall time of the arm's finished trials; started trials go on")
    r.add_argument("--amend", action="store_true",
                   help="accept a study file that changes what existing trials compute (the report says so)")
    r.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local lanes; submitit-local (the cluster path on this machine); slurm (a job per trial)")
    r.add_argument("--partition", help="slurm: the partition")
    r.add_argument("--time", type=int, default=24 * 60, help="slurm: minutes per job (a pre-empted job requeues)")
    r.add_argument("--gpus-per-trial", type=int, default=1, help="slurm: GPUs per node of a trial (> 1: torchrun)")
    r.add_argument("--nodes-per-trial", type=int, default=1, help="slurm: nodes of a trial (> 1: torchrun, c10d)")
    r.add_argument("--slurm", action="append", metavar="KEY=VALUE", help="slurm: any other sbatch option, e.g. "
                   "account=abc or qos=high (repeatable)")
    r.add_argument("--show-sbatch", action="store_true", help="slurm: print the sbatch script, submit nothing")
    r.add_argument("--wait", action="store_true", help="slurm: wait for the jobs and print each trial's end")
    r.set_defaults(handler=_run)
    lane_p = steps.add_parser("lane", parents=[common], help="one lane of `run --lanes N` (run starts them)")
    lane_p.add_argument("--lanes", type=int, default=1)
    lane_p.add_argument("--arms", nargs="+", metavar="ARM")
    lane_p.add_argument("--until", metavar="TIME")
    lane_p.set_defaults(handler=_lane)
    s = steps.add_parser("status", parents=[common], help="each trial's state, steps, last kNN, time")
    s.set_defaults(handler=_status)
    rep = steps.add_parser("report", parents=[common], help="the paired report into <study folder>/report/")
    rep.add_argument("--effect", type=float, default=None, help="also the pairs needed to detect this difference")
    rep.set_defaults(handler=_report)
    pl = steps.add_parser("plan", parents=[common], help="seeds needed for an effect, and their cost, from a pilot")
    pl.add_argument("--effect", type=float, required=True, help="the difference to detect (points)")
    pl.add_argument("--pilot", help="another study file whose finished pairs give the sd (default: this study's)")
    pl.add_argument("--lanes", type=int, default=1, help="trials run side by side (divides the time)")
    pl.add_argument("--gpu-tflops", type=float, default=200.0, help="sustained TFLOP/s per GPU for the GPU-hour "
                    "column (default 200: about 40%% of an H100's dense bf16 peak; measure yours with "
                    "python -m sassl.bench gpu)")
    pl.add_argument("--train-images", type=int, help="images in the training set, where its folder is not on "
                    "this machine (default: counted from the config's dataset)")
    pl.set_defaults(handler=_plan)

"""The distributed path as users launch it: `torchrun --nproc_per_node 2 -m sassl.cli pretrain`, gloo on
CPU, on a folder in ImageNet's layout (train/ + val/) with a style folder and one shared cache.

Covers: start (process group, the bank embedded once, shared by the ranks; the weights converted once per
node), run
(sharded kNN monitor), recover (kill -9 of one rank, then --resume on 2 processes and on 1 process
from the same global step), and stop (a NaN on one rank stops both with one message). Each launch records
every rank's collectives and checks that the ranks issued the same ones (tests/collectives.py)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import collectives

from sassl.data import get_dataset
from sassl.eval.features import stream_features
from sassl.eval.knn import KnnMonitor
from sassl.learners import create_learner

pytestmark = pytest.mark.slow
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ROOT = Path(__file__).resolve().parents[2]


def _env(cache: Path, trace: Path | None = None) -> dict:
    """The ranks' environment; with `trace`, each rank records its collectives there (tests/collectives.py)."""
    extra = {"SASSL_TRACE_COLLECTIVES": str(trace)} if trace else {}
    return os.environ | {"SASSL_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)} | extra


def _args(runs: Path, data: Path, styles: Path, *extra: str) -> list[str]:
    return ["pretrain", "--name", "r", "--runs-dir", str(runs), "--dataset", f"imagefolder:{data}",
            "--style", str(styles), "--batch-size", "8", "--image-size", "32", "--num-workers", "0",
            "--proj-hidden", "32", "--proj-dim", "16", "--knn-k", "5", *extra]


def _rows(runs: Path) -> list[dict]:
    return [json.loads(line) for line in (runs / "r" / "metrics.jsonl").read_text().splitlines()]


def _ckpt_step(runs: Path) -> int:
    path = runs / "r" / "checkpoints" / "last.pt"
    return torch.load(path, weights_only=True)["step"] if path.is_file() else 0


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker with RANK=rank below `parent`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == parent and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


def test_torchrun_starts_survives_kill_and_resumes(tmp_path, jpeg_folder, style_folder):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    env = _env(cache)
    # 1. two ranks train; once a checkpoint at step >= 2 exists, rank 1 is killed with SIGKILL
    cmd = TORCHRUN + ["-m", "sassl.cli"] + _args(runs, jpeg_folder, style_folder, "--max-steps", "200",
                                                  "--checkpoint-every", "2", "--knn-every", "0")
    log1 = open(tmp_path / "run1.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log1, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.time() + 240
    while _ckpt_step(runs) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    victim = _rank_pid(proc.pid, 1)
    assert victim, f"no rank-1 worker found; log: {(tmp_path / 'run1.log').read_text()[-2000:]}"
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=120) != 0  # torchrun reports the lost rank and stops the other
    killed_at = _ckpt_step(runs)
    assert 2 <= killed_at < 200
    shutil.copytree(runs, tmp_path / "runs1")  # the same killed run, for the 1-process resume

    # 2. --resume on 2 processes continues from that global step and exits 0
    more = ["--max-steps", str(killed_at + 3), "--checkpoint-every", "2", "--knn-every", "0", "--resume"]
    r2 = subprocess.run(TORCHRUN + ["-m", "sassl.cli"] + _args(runs, jpeg_folder, style_folder, *more),
                        env=_env(cache, tmp_path / "trace2"), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    collectives.check(tmp_path / "trace2", 2)  # every rank issued the same collectives, on the CPU
    steps = [r["step"] for r in _rows(runs) if "loss" in r]
    assert steps == list(range(1, killed_at + 4)), steps  # rows up to the checkpoint kept, then continued
    assert _ckpt_step(runs) == killed_at + 3

    # 3. ... and on 1 process (same global batch, so the same data order) from the same step
    r1 = subprocess.run([sys.executable, "-m", "sassl.cli"] + _args(tmp_path / "runs1", jpeg_folder, style_folder,
                                                                    *more), env=env, capture_output=True, text=True,
                        cwd=tmp_path, timeout=300)
    assert r1.returncode == 0, r1.stderr[-3000:]
    steps1 = [r["step"] for r in _rows(tmp_path / "runs1") if "loss" in r]
    assert steps1 == steps

    # the style bank was embedded once (by rank 0 of the first launch) and read by every other process
    logs = (tmp_path / "run1.log").read_text() + r2.stderr + r1.stderr
    assert logs.count("embedding the style source") == 1, logs[-3000:]
    banks = list((cache / "banks").iterdir())
    assert len(banks) == 1 and banks[0].suffix == ".pt", banks  # no temporary files left behind
    assert not [p for p in cache.rglob("*.tmp")]
    resolved = json.loads((runs / "r" / "config.json").read_text())["resolved"]
    assert resolved["world_size"] == 2 and resolved["train_images"] == 192  # train/ only: val/ is held out


NAN_SCRIPT = """
import sys, torch
import sassl.training.loop as train
from sassl.cli import main
real, calls = train.train_step, [0]
def nan_on_rank_1_at_step_2(*args, **kw):
    loss, logs = real(*args, **kw)
    calls[0] += 1
    if calls[0] == 2 and torch.distributed.get_rank() == 1:
        loss = torch.full_like(loss, float("nan"))
    return loss, logs
train.train_step = nan_on_rank_1_at_step_2
sys.exit(main(sys.argv[1:]))
"""


def test_nan_on_one_rank_stops_every_rank(tmp_path, jpeg_folder, style_folder):
    script = tmp_path / "nan_run.py"
    script.write_text(NAN_SCRIPT)
    r = subprocess.run(TORCHRUN + [str(script)] + _args(tmp_path / "runs", jpeg_folder, "none", "--max-steps", "6",
                                                         "--knn-every", "0"),
                       env=_env(tmp_path / "cache", tmp_path / "trace"), capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    assert r.returncode != 0
    collectives.check(tmp_path / "trace", 2)  # the same collectives up to the stop, on every rank
    out = r.stdout + r.stderr
    assert out.count("sassl pretrain: loss is nan on rank(s) [1] of 2 at step 2") == 1, out[-3000:]
    steps = [row["step"] for row in _rows(tmp_path / "runs") if "loss" in row]
    assert steps == [1]  # step 2 was not logged (nor checkpointed) by any rank


def test_a_signal_to_one_rank_stops_both_at_the_same_step(tmp_path, jpeg_folder):
    """SIGTERM to rank 1 alone (a node's share of a pre-emption): the ranks agree on it at the next step boundary
    (a MAX all-reduce of the signal), so both stop after the same step, rank 0 writes that step's checkpoint and
    says so once, and every rank issued the same collectives (none left waiting in one)."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen(TORCHRUN + ["-m", "sassl.cli"] + _args(runs, jpeg_folder, "none", "--max-steps", "200",
                                                                    "--knn-every", "0"),
                            env=_env(tmp_path / "cache", tmp_path / "trace"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not (
            (runs / "r" / "metrics.jsonl").is_file() and len(_rows(runs)) >= 3):
        time.sleep(0.1)
    victim = _rank_pid(proc.pid, 1)
    assert victim, "no rank-1 worker found"
    os.kill(victim, signal.SIGTERM)
    out, _ = proc.communicate(timeout=180)
    at = _ckpt_step(runs)
    assert 3 <= at < 200, out[-3000:]
    assert [r["step"] for r in _rows(runs) if "loss" in r] == list(range(1, at + 1))
    assert out.count(f"stopped by SIGTERM at step {at} of 200") == 1, out[-3000:]
    collectives.check(tmp_path / "trace", 2)


def _monitor_and_backbone(folder):
    torch.manual_seed(0)
    backbone = create_learner("simclr", "resnet18", proj_hidden=32, proj_dim=16).backbone
    monitor = KnnMonitor(get_dataset(f"imagefolder:{folder}"), get_dataset(f"imagefolder:{folder}@val"), 32,
                         k=5, max_train=150, max_test=40, seed=3, batch_size=16, num_workers=0)
    return monitor, backbone


def _knn_worker(rank, world, store, folder, out):
    trace = collectives.join(rank, world, store)
    try:
        monitor, backbone = _monitor_and_backbone(folder)
        feats = stream_features(backbone, monitor.test_ds, monitor.test_idx, 32, batch_size=16, num_workers=0)
        acc = monitor(backbone)
        if rank == 0:
            torch.save({"acc": acc, "feats": feats[0], "labels": feats[1]}, out)
    finally:
        collectives.leave(trace, f"{out}.trace", rank)


def test_sharded_knn_equals_single_process(tmp_path, jpeg_folder):
    monitor, backbone = _monitor_and_backbone(jpeg_folder)
    assert len(monitor.train_idx) == 150 and len(monitor.test_idx) == 40  # seeded subsets of 192 / 48
    feats, labels = stream_features(backbone, monitor.test_ds, monitor.test_idx, 32, batch_size=16, num_workers=0)
    single = monitor(backbone)
    out = tmp_path / "sharded.pt"
    mp.spawn(_knn_worker, args=(2, str(tmp_path / "store"), str(jpeg_folder), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    collectives.check(f"{out}.trace", 2)
    torch.testing.assert_close(got["feats"], feats, rtol=1e-4, atol=1e-5)  # gathered back in the same order
    assert got["labels"].tolist() == labels.tolist() == [monitor.test_ds.labels[i] for i in monitor.test_idx]
    assert got["acc"] == single


def test_torchrun_evaluate_equals_one_process(tmp_path, jpeg_folder, monkeypatch):
    """`sassl evaluate` on a train/val imagefolder under 2 gloo ranks (each extracts half the features) gives
    the one-process kNN exactly and the same linear probe (identical float16 features and seeds: within
    0.01 points). (Reusing cached features: tests/eval/test_eval.py.)"""
    from sassl.eval.evaluate import EvalConfig, evaluate

    settings = dict(targets=(f"imagefolder:{jpeg_folder}",), protocols=("knn", "linear"), seeds=(0,), image_size=32,
                    probe_epochs=5, num_workers=0, batch_size=32)
    args = ["-m", "sassl.cli", "evaluate", "random:resnet18", "--targets", settings["targets"][0],
            "--protocols", "knn", "linear", "--seeds", "0", "--image-size", "32", "--probe-epochs", "5",
            "--num-workers", "0", "--batch-size", "32", "--out", str(tmp_path / "two")]
    r = subprocess.run(TORCHRUN + args, env=_env(tmp_path / "cache-two", tmp_path / "trace"), capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    collectives.check(tmp_path / "trace", 2)
    assert json.loads((tmp_path / "two" / "config.json").read_text())["resolved"]["world_size"] == 2
    two = {(s["target"], s["protocol"]): s for s in json.loads((tmp_path / "two" / "summary.json").read_text())}
    monkeypatch.setenv("SASSL_CACHE", str(tmp_path / "cache-one"))
    one = evaluate(EvalConfig(encoder="random:resnet18", out=str(tmp_path / "one"), device="cpu", **settings),
                   progress=False)
    assert {(s["target"], s["protocol"]) for s in one["summary"]} == set(two)
    for s in one["summary"]:
        key = (s["target"], s["protocol"])
        tol = 0 if key[1] == "knn" else 0.01
        assert two[key]["top1_mean"] == pytest.approx(s["top1_mean"], abs=tol), key

"""The run's checkpoint and resume functions, one by one, without training: open_run, save_checkpoint,
load_checkpoint, prune_metrics (the trainer's tests run them end to end)."""
from __future__ import annotations

import dataclasses
import datetime
import json

import pytest
import torch

from sassl.training.config import PretrainConfig
from sassl.training.run import load_checkpoint, open_run, prune_metrics, save_checkpoint


def _cfg(tmp_path, **kw) -> PretrainConfig:
    return PretrainConfig(name="t", runs_dir=str(tmp_path), **kw)


def _model_opt(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()  # momentum buffers: optimiser state worth saving
    return model, opt


def test_save_then_open_and_load_restores_the_run(tmp_path, capsys):
    """save_checkpoint writes weights, optimiser and scaler state, the step, the planned epochs and the config
    to <run>/checkpoints/last.pt; open_run(resume) finds it and load_checkpoint puts it back (popping the
    tensors). Seen failing on: the step or epochs not saved, the scaler left out, state loaded into a fresh
    run, resume from another step."""
    cfg = _cfg(tmp_path)
    assert open_run(cfg, resume=False).state is None and capsys.readouterr().out == ""  # a fresh run: nothing said
    run = open_run(cfg, resume=True)
    assert run.state is None and run.step == 0 and run.dir == tmp_path / "t"
    assert "no checkpoint at" in capsys.readouterr().out  # --resume of a run not started yet: said, and started
    model, opt = _model_opt(0)
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0)
    save_checkpoint(run, model, opt, scaler, step=7, epochs=3)
    state = torch.load(run.ckpt_path, weights_only=True)
    assert state["step"] == 7 and state["epochs"] == 3 and json.loads(state["config"]) == run.cfg_dict
    assert state["scaler"]["scale"] == 512.0 and set(state) == {"model", "optimizer", "step", "epochs", "config", "scaler",
                                                                                "precision"}
    assert not list(run.ckpt_path.parent.glob("*.tmp"))  # written whole, then renamed

    resumed = open_run(cfg, resume=True)
    assert resumed.step == 7 and resumed.state["step"] == 7
    other, other_opt = _model_opt(1)
    other_scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    load_checkpoint(resumed, other, other_opt, other_scaler)
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(other_opt.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])
    assert other_scaler.get_scale() == 512.0
    assert not {"model", "optimizer", "scaler"} & set(resumed.state)  # popped: no second copy on the host

    fresh, fresh_opt = _model_opt(1)
    before = [p.clone() for p in fresh.parameters()]
    load_checkpoint(open_run(_cfg(tmp_path / "new"), resume=False), fresh, fresh_opt, None)  # no state: untouched
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))

    save_checkpoint(run, model, opt, None, step=9, epochs=3)  # no scaler (float32, bf16): none saved
    state = torch.load(run.ckpt_path, weights_only=True)
    assert "scaler" not in state and state["step"] == 9
    load_checkpoint(open_run(cfg, resume=True), other, other_opt, torch.amp.GradScaler("cpu", init_scale=8.0))


def test_open_run_refuses_what_it_cannot_resume(tmp_path):
    """A checkpoint without resume is refused (naming --resume); a checkpoint of another config is refused
    with the differing settings, except the resume-free ones and renamed keys of older runs; an unreadable
    checkpoint names the file. Seen failing on: resume-free settings compared, the old out_dir key rejected,
    the diff empty, a damaged file loaded as a fresh start."""
    cfg = _cfg(tmp_path)
    run = open_run(cfg, resume=False)
    model, opt = _model_opt(0)
    save_checkpoint(run, model, opt, None, step=4, epochs=9)
    with pytest.raises(FileExistsError, match="--resume"):
        open_run(cfg, resume=False)
    with pytest.raises(ValueError, match=r"different config.*'p': \(0.8, 0.5\)") as e:
        open_run(dataclasses.replace(cfg, p=0.5), resume=True)
    assert str(e.value).endswith("{'p': (0.8, 0.5)}")  # only what differs
    free = {k: v for k, v in {"epochs": 20, "num_workers": 3, "max_steps": 5, "knn_every": 2, "accumulate": 2,
                              "time_budget": 5.0, "decode": "device", "tensorboard": False, "wandb": "x"}.items()
            if k in PretrainConfig.RESUME_FREE}
    assert len(free) == 9
    assert open_run(dataclasses.replace(cfg, **free), resume=True).step == 4

    state = torch.load(run.ckpt_path, weights_only=True)
    old = json.loads(state["config"])
    old["out_dir"] = old.pop("runs_dir")  # an older run's name for the same setting
    state["config"] = json.dumps(old)
    torch.save(state, run.ckpt_path)
    assert open_run(cfg, resume=True).step == 4

    run.ckpt_path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"rank\(s\) \[0\] cannot read .*last.pt \(UnpicklingError: "):
        open_run(cfg, resume=True)
    # weights only: a checkpoint that would run code (any pickled object) is refused, not loaded
    state["extra"] = datetime.date(2026, 1, 1)
    torch.save(state, run.ckpt_path)
    with pytest.raises(RuntimeError, match="cannot read .*Weights only load failed"):
        open_run(cfg, resume=True)


def test_prune_metrics_keeps_what_the_checkpoint_saw(tmp_path):
    """Resuming at step 6 of 4-step epochs keeps the rows up to step 6 but the summary of the partial epoch 2
    at step 6 (written again when that epoch ends); a fresh start keeps nothing; a resume at an epoch's end
    keeps its summary. Seen failing on: rows after the checkpoint kept, the partial summary kept, everything
    kept on a fresh start."""
    cfg = _cfg(tmp_path)
    run = open_run(cfg, resume=False)
    run.dir.mkdir(parents=True)
    rows = [{"epoch": 0, "step": 0, "knn_top1": 30.0}] + [{"step": s, "epoch": (s - 1) // 4 + 1, "loss": 1.0 / s}
                                                          for s in range(1, 9)]
    rows.insert(5, {"epoch": 1, "step": 4, "epoch_seconds": 1.0})
    rows.append({"epoch": 2, "step": 6, "epoch_seconds": 0.5})  # a partial epoch's summary (max_steps 6)
    text = "".join(json.dumps(r) + "\n" for r in rows)

    def pruned(state_step: int | None) -> list[dict]:
        run.metrics_file.write_text(text)
        run.state, run.step = (None, 0) if state_step is None else ({"step": state_step}, state_step)
        prune_metrics(run, steps_per_epoch=4)
        return [json.loads(line) for line in run.metrics_file.read_text().splitlines()]

    kept = pruned(6)
    assert [(r["step"], "epoch_seconds" in r) for r in kept] == [(0, False), (1, False), (2, False), (3, False),
                                                                 (4, False), (4, True), (5, False), (6, False)]
    assert pruned(None) == []
    run.metrics_file.unlink()
    prune_metrics(run, steps_per_epoch=4)  # a run that has logged nothing yet: nothing to do
    assert not run.metrics_file.exists()
    kept = pruned(4)
    assert [r["step"] for r in kept] == [0, 1, 2, 3, 4, 4] and "epoch_seconds" in kept[-1]


def _ranks_worker(rank: int, world: int, store: str, root: str, steps: list) -> None:
    """One rank of a run whose runs_dir is a local disk per node: rank r's folder holds a checkpoint at
    steps[r] (None: no file). Writes what open_run raised, or the step it resumed from."""
    import os
    from pathlib import Path

    os.environ["OMP_NUM_THREADS"] = "1"
    import collectives

    trace = collectives.join(rank, world, store, timeout_s=30.0)
    try:
        cfg = _cfg(Path(root) / f"node{rank}")
        run = open_run(cfg, resume=False)
        if steps[rank] is not None:  # what save_checkpoint writes (on rank 0 only)
            run.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": {}, "optimizer": {}, "step": steps[rank], "epochs": 9,
                        "config": json.dumps(run.cfg_dict)}, run.ckpt_path)
        torch.distributed.barrier()  # every rank's file is written before any rank opens
        try:
            got = f"step {open_run(cfg, resume=True).step}"
        except RuntimeError as e:
            got = str(e)
        (Path(root) / f"rank{rank}.txt").write_text(got)
    finally:
        collectives.leave(trace, Path(root) / "trace", rank)


@pytest.mark.parametrize("steps, want", [
    ([10, 20], r"the ranks read different checkpoints at .*last.pt \(steps \[10, 20\] by rank\); runs_dir must be one shared"),
    ([10, None], r"rank\(s\) \[1\] cannot read .*last.pt \(FileNotFoundError: .*\); every rank reads rank 0's")])
def test_ranks_with_their_own_checkpoints_are_refused_on_every_rank(tmp_path, steps, want):
    """Two gloo ranks whose runs_dir is not shared (a local disk per node, each with a checkpoint): every rank stops with the same message naming the steps by
    rank (each naming its own file), or the rank that has no file. Seen failing with the step comparison
    removed (the ranks resumed from steps 10 and 20)."""
    import re
    import sys
    from pathlib import Path

    import torch.multiprocessing as mp

    sys.path.insert(0, str(Path(__file__).parents[1]))  # collectives.py, for the spawned ranks
    mp.spawn(_ranks_worker, args=(2, str(tmp_path / "store"), str(tmp_path), steps), nprocs=2, join=True)
    got = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert all(re.search(want, g) for g in got), got


def test_a_run_trained_by_another_process_is_refused_until_that_process_dies(tmp_path):
    """A second process training the same run (a second --resume from another shell) would interleave its rows
    with the first's in metrics.jsonl and overwrite its checkpoint: pretrain refuses it, naming the holder's
    pid, before setting anything up. The lock dies with its holder (SIGKILL here), so the killed run resumes,
    and it is released when the body raises. Seen failing with the lock removed (the second pretrain went on
    to set up and failed on the dataset instead)."""
    import os
    import signal
    import subprocess
    import sys

    from sassl.training.loop import pretrain
    from sassl.training.run import run_lock

    run_dir = tmp_path / "t"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from sassl.training.run import run_lock\nwith run_lock(Path(sys.argv[1])):\n"
                               "    print('held', flush=True)\n    time.sleep(120)\n", str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"{run_dir} is being trained by pid {holder.pid} on .*; wait for it"):
            pretrain(_cfg(tmp_path, dataset="no-such-set"), resume=True)  # refused before the dataset is looked up
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with pytest.raises(ValueError, match="inside"):
        with run_lock(run_dir):  # the killed holder's lock is gone
            raise ValueError("inside")
    with run_lock(run_dir):  # and the raise released this one
        assert (run_dir / ".lock").read_text().startswith(f"pid {os.getpid()} on ")


def test_a_run_keeps_the_precision_it_started_in(tmp_path, capsys):
    """The resolved precision is fixed when a run starts: a resumed run keeps its checkpoint's (bf16 from a GPU,
    resumed on the CPU where auto is fp32: kept, and said), a checkpoint from before the setting resolves its
    config's, and an fp16 run cannot resume on the CPU."""
    from sassl.training.config import config_from_dict
    from sassl.training.run import Run, run_precision

    cfg = config_from_dict({"name": "r"})
    cpu = torch.device("cpu")
    fresh = Run(tmp_path, {}, None, 0)
    assert run_precision(fresh, cfg, cpu) == "fp32" and fresh.precision == "fp32"
    resumed = Run(tmp_path, {}, {"precision": "bf16"}, 10)
    assert run_precision(resumed, cfg, cpu) == "bf16" and resumed.precision == "bf16"
    assert "precision bf16 (kept from its start; auto here would be fp32)" in capsys.readouterr().out
    assert run_precision(Run(tmp_path, {}, {"step": 3}, 3), cfg, cpu) == "fp32"  # before --precision: auto, on CPU
    with pytest.raises(ValueError, match="trains in fp16"):
        run_precision(Run(tmp_path, {}, {"precision": "fp16"}, 10), cfg, cpu)

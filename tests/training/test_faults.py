"""Faults a cluster and a user's disk bring, one test per fault (docs/TESTING.md's fault table): pre-emption and
interruption signals, storage that is full, read-only or gone, caches that do not belong to what is computed,
hostile image folders."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sassl.interrupt import REPEAT_S, GracefulStop, Stopped

ROOT = Path(__file__).resolve().parents[2]


def _env(cache: Path) -> dict:
    return os.environ | {"SASSL_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _pretrain_args(runs: Path, data: Path, styles: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sassl.cli", "pretrain", "--name", "r", "--runs-dir", str(runs),
            "--dataset", f"imagefolder:{data}", "--style", str(styles), "--batch-size", "8", "--image-size", "32",
            "--num-workers", "0", "--proj-hidden", "32", "--proj-dim", "16", "--knn-every", "0",
            "--tensorboard", "false", *extra]


def _losses(runs: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (runs / "r" / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _ckpt(runs: Path) -> dict:
    return torch.load(runs / "r" / "checkpoints" / "last.pt", weights_only=True)


def _wait_for_step(runs: Path, proc: subprocess.Popen, step: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        f = runs / "r" / "metrics.jsonl"
        if f.is_file() and any(s >= step for s, _ in _losses(runs)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no step {step} (exit {proc.poll()}): {proc.stderr.read() if proc.poll() is not None else ''}")


STEPS = 14  # 192 training images / 8: one epoch is 24 steps, so the signal comes mid-epoch


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, jpeg_folder, style_folder) -> Path:
    """The tiny run of STEPS steps, never interrupted: what a signalled and resumed run must equal."""
    runs = tmp_path_factory.mktemp("whole")
    whole = subprocess.run(_pretrain_args(runs, jpeg_folder, style_folder, "--max-steps", str(STEPS)),
                           env=_env(runs / "cache"), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    return runs


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_signalled_pretrain_checkpoints_its_step_and_resumes_to_the_uninterrupted_run(tmp_path, jpeg_folder,
                                                                                        style_folder, sig, uninterrupted):
    """SIGTERM (SLURM pre-emption, docker stop), SIGUSR1 (--signal=USR1@120) and SIGINT (Ctrl-C) mid-epoch: the
    run finishes the step it is in, writes that step's checkpoint (no --checkpoint-every: before, the last
    checkpoint was the previous epoch's, here none at all), says so and exits 128 + the signal; --resume then
    gives the uninterrupted run's losses and weights, bitwise."""
    cache, steps = uninterrupted / "cache", STEPS
    runs = tmp_path / "runs"
    proc = subprocess.Popen(_pretrain_args(runs, jpeg_folder, style_folder, "--max-steps", str(steps)), env=_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(runs, proc, 3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    at = _ckpt(runs)["step"]
    assert 3 <= at < steps and _losses(runs)[-1][0] == at  # the step it was in, finished and saved
    said = out + err
    assert said.count(f"stopped by {signal.Signals(sig).name} at step {at} of {steps}") == 1 and "--resume" in said
    assert not list(runs.rglob("*.tmp"))

    again = subprocess.run(_pretrain_args(runs, jpeg_folder, style_folder, "--max-steps", str(steps), "--resume"),
                           env=_env(cache), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _losses(runs) == _losses(uninterrupted)  # every step once, the same floats
    a, b = _ckpt(runs)["model"], _ckpt(uninterrupted)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("sig, second", [(signal.SIGTERM, SystemExit), (signal.SIGUSR1, SystemExit),
                                         (signal.SIGINT, KeyboardInterrupt)])
def test_the_first_signal_asks_the_second_stops_at_once(sig, second):
    """The first signal only sets the flag the job polls at its safe points; the second raises at once (a
    user who means it, or a scheduler's last word), and the previous handlers are back after the block."""
    before = signal.getsignal(sig)
    with pytest.raises(second) as raised:
        with GracefulStop("job", "step") as stop:
            os.kill(os.getpid(), sig)
            assert stop.requested and stop.signum == sig and stop.agreed()  # one process: agreed is requested
            os.kill(os.getpid(), sig)  # at once: the same event twice (SLURM's copy and torchrun's), ignored
            time.sleep(0.1)
            stop._first -= REPEAT_S  # as if the second came later
            os.kill(os.getpid(), sig)
            time.sleep(1)  # not reached: the handler raises in this thread
    if second is SystemExit:
        assert raised.value.code == 128 + sig
    assert signal.getsignal(sig) is before
    assert Stopped(sig, "x").exit_code == 128 + sig


def _namespaces_work() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_mounts = pytest.mark.skipif(not _namespaces_work(), reason="no user namespaces here (unshare -rm): a real "
                                  "full or read-only disk needs a tmpfs mounted in one")


def _on_small_disk(tmp_path: Path, size: int, cmd: list[str], after: str = "", readonly: bool = False) -> str:
    """Run `cmd` with a fresh tmpfs of `size` bytes at tmp_path/disk (remounted read-only when asked), in a user
    and mount namespace of its own (no root needed, nothing left mounted), then the shell lines `after` there;
    returns everything said, with the command's exit status as `RC=n`."""
    disk = tmp_path / "disk"
    disk.mkdir()
    ro = f"mount -o remount,ro {disk} && " if readonly else ""
    script = f'mount -t tmpfs -o size={size} none {disk} && {ro}"$@"; echo "RC=$?"; {after}'
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *cmd], capture_output=True, text=True,
                       timeout=600, env=_env(tmp_path / "cache"))
    return r.stdout + r.stderr


@needs_mounts
def test_a_full_disk_stops_the_run_in_words_with_the_previous_checkpoint_intact(tmp_path, jpeg_folder, style_folder,
                                                                                 uninterrupted):
    """The runs folder on a disk with room for one checkpoint and a half: the step-2 checkpoint is written, the
    step-4 one (its temporary copy beside the first) does not fit. Before: `[enforce fail at
    inline_container.cc:672] . unexpected pos ...` and a traceback. Now: the path, 'no space left on device',
    the size needed, what to do; the step-2 checkpoint loads; no temporary file left."""
    size = (uninterrupted / "r" / "checkpoints" / "last.pt").stat().st_size
    disk = tmp_path / "disk"
    check = (f"ls -a {disk}/r/checkpoints; {sys.executable} -c \"import torch; "
             f"print('STEP', torch.load('{disk}/r/checkpoints/last.pt', weights_only=True)['step'])\"")
    said = _on_small_disk(tmp_path, int(1.5 * size) + (4 << 20), _pretrain_args(
        disk, jpeg_folder, style_folder, "--max-steps", "6", "--checkpoint-every", "2"), after=check)
    assert "RC=2" in said and "Traceback" not in said and "inline_container" not in said, said[-3000:]
    need = re.search(f"cannot write {disk}/r/checkpoints/last.pt: no space left on device: ([0-9.]+) MB needed", said)
    assert need and float(need[1]) == pytest.approx(size / 1e6, rel=0.01), said[-3000:]  # the tensors' bytes
    assert "the previous checkpoint is intact" in said and "STEP 2" in said, said[-3000:]
    assert ".tmp" not in said  # the listing of checkpoints/: last.pt alone


TENSORBOARD_FILLS = """
import json, sys
from pathlib import Path
from sassl.tracking import RunLog
run = Path(sys.argv[1])
log = RunLog(run, {}, tensorboard=True)
for step in range(1, 4001):
    log.log({"step": step, "epoch": 1, "loss": 1.0 / step, "lr": 0.1, "note": step * 1.5})
    if step % 500 == 0:
        log.epoch_end(step)
log.close()
print("ROWS", len((run / "metrics.jsonl").read_text().splitlines()))
"""


@needs_mounts
def test_tensorboard_on_a_full_disk_stops_in_words_and_the_run_goes_on(tmp_path):
    """TensorBoard's folder on a 64 kB disk (a link from the run folder; metrics.jsonl on a disk with room):
    tensorboard's writer thread meets the full disk first. Before: 'Exception in thread' with a traceback from
    that thread, then an OSError from the next add_scalar ended the run. Now: one line naming the folder and the
    cause, TensorBoard off, every metrics row written."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "tensorboard").symlink_to(tmp_path / "disk")
    said = _on_small_disk(tmp_path, 64 << 10, [sys.executable, "-c", TENSORBOARD_FILLS, str(run)])
    assert "RC=0" in said and "ROWS 4000" in said, said[-3000:]
    assert "Traceback" not in said and "Exception in thread" not in said, said[-3000:]
    line = [ln for ln in said.splitlines() if "TensorBoard stops" in ln]
    assert len(line) == 1 and f"cannot write {tmp_path}/run/tensorboard: no space left on device" in line[0], said


@needs_mounts
def test_a_read_only_runs_folder_is_said_in_words(tmp_path, jpeg_folder):
    """--runs-dir on a read-only file system: one line naming the folder and the cause, exit 2, no traceback
    (before: PermissionError's traceback)."""
    disk = tmp_path / "disk"
    said = _on_small_disk(tmp_path, 1 << 20, _pretrain_args(disk, jpeg_folder, "none", "--max-steps", "2"),
                          readonly=True)
    assert "RC=2" in said and "Traceback" not in said, said[-3000:]
    assert f"cannot use {disk}/r: read-only file system; write to a writable folder" in said, said[-3000:]


@needs_mounts
def test_caches_on_a_read_only_disk_are_skipped_and_the_run_goes_on(tmp_path, jpeg_folder, style_folder):
    """SASSL_CACHE on a read-only disk: the converted weights, the style bank and the file index cannot be
    cached; the run trains anyway (exit 0) and says so once per cause, not once per write."""
    disk = tmp_path / "disk"
    cmd = ["env", f"SASSL_CACHE={disk}"] + _pretrain_args(tmp_path / "runs", jpeg_folder, style_folder,
                                                          "--max-steps", "2")
    said = _on_small_disk(tmp_path, 1 << 20, cmd, readonly=True)
    assert "RC=0" in said and "Traceback" not in said, said[-3000:]
    assert said.count("going on without this cache") == 1 and "read-only file system" in said, said[-3000:]
    assert (tmp_path / "runs" / "r" / "checkpoints" / "last.pt").is_file()


def test_a_signalled_evaluation_keeps_the_protocols_it_finished(tmp_path, jpeg_folder, monkeypatch):
    """SIGTERM while the kNN protocol runs: the protocol finishes, its rows are written, run.json names what is
    missing, no summary.json (a whole evaluation's mark, which studies read as 'finished') and Stopped carries
    128 + the signal; the linear probe never starts."""
    import sassl.eval.evaluate as ev

    real_knn, ran = ev.PROTOCOL_ROWS["knn"], []

    def knn_then_signal(probe):
        rows = real_knn[0](probe)
        os.kill(os.getpid(), signal.SIGTERM)
        return rows

    monkeypatch.setitem(ev.PROTOCOL_ROWS, "knn", (knn_then_signal, "results"))
    monkeypatch.setitem(ev.PROTOCOL_ROWS, "linear", (lambda probe: ran.append("linear") or [], "results"))
    cfg = ev.EvalConfig(encoder="random:resnet18", runs_dir=str(tmp_path), targets=(f"imagefolder:{jpeg_folder}",),
                        protocols=("knn", "linear"), baseline=False, num_workers=0, image_size=32)
    with pytest.raises(Stopped) as stopped:
        ev.evaluate(cfg, progress=False)
    out = ev.default_out(cfg)
    assert stopped.value.exit_code == 128 + signal.SIGTERM and "after 1 of 2 target/protocol pairs" in str(stopped.value)
    assert ran == [] and not (out / "summary.json").exists()
    rows = json.loads((out / "results.json").read_text())
    assert rows and {r["protocol"] for r in rows} == {"knn"}
    assert json.loads((out / "run.json").read_text())["missing"] == [f"imagefolder:{jpeg_folder}/linear"]


def test_a_signalled_study_checkpoints_its_trial_and_starts_no_other(tmp_path, lanes=2):
    """SIGTERM to `sassl study run --lanes 2` while its first trials pre-train: the signal is passed on to each lane
    process and by each lane (the same `lane` that `--lanes 1` runs in the study's own process) to its trial's
    notebook kernel, whose pre-training checkpoints the step it is in; no further trial starts; exit 128 + 15 with
    the line that says to run the same command again (which resumes the started trials: test_study's kill -9
    test). On a fresh cache: both lanes prepare the bundled data at once."""
    from tiny import STUDY, write_study as _write

    path = _write(tmp_path, STUDY.replace("max_steps = 2", "max_steps = 60"))
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "sassl.cli", "study", "run", str(path), "--runs-dir", str(runs),
                             "--lanes", str(lanes)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(tmp_path / "cache"))
    first = [runs / "tiny" / name for name in ("baseline-s0", "sassl-s0")[:lanes]]  # each lane's first trial

    def losses(run):
        return sum('"loss"' in line for line in (run / "metrics.jsonl").read_text().splitlines()) \
            if (run / "metrics.jsonl").is_file() else 0
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and min(map(losses, first)) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    for run in first:
        at = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
        assert 3 <= at < 60 and steps == list(range(1, at + 1)), out[-3000:]
    assert "study tiny: stopped by SIGTERM" in out and "run the same command again" in out
    assert sorted(p.name for p in (runs / "tiny").iterdir() if p.is_dir()) == [p.name for p in first]  # no other began


def test_caches_that_do_not_belong_are_rebuilt_with_one_line(tmp_path, monkeypatch, capsys, jpeg_folder, style_folder,
                                                            stylizer):
    """A cache file that loads but was computed from something else, found where this computation's cache
    belongs: features for other images (a row short), a style bank of another image size, a file index of another
    folder, a baseline evaluated with other settings. Each is computed again with one line saying why; before,
    the features and the bank were used as they were (a shape error, or numbers of something else)."""
    from sassl.data import get_dataset
    from sassl.data.index import _write, folder_index, index_path, signature
    from sassl.eval.features import cached_features, stream_features
    from sassl.eval.report import baseline_matches
    from sassl.learners import create_learner
    from sassl.stylizer.bank import bank_cache_path, load_bank

    monkeypatch.setenv("SASSL_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    net = create_learner("simclr", "resnet18", proj_hidden=32, proj_dim=16).backbone.eval()
    ds, idx = get_dataset(f"imagefolder:{jpeg_folder}"), list(range(0, 40, 2))
    feats, labels, reused = cached_features(net, ds, idx, 32, num_workers=0)
    (path,) = (tmp_path / "cache" / "features").iterdir()
    saved = torch.load(path, weights_only=True)
    torch.save(saved | {"features": saved["features"][:-1], "labels": saved["labels"][:-1]}, path)  # a row short
    again, again_labels, reused = cached_features(net, ds, idx, 32, num_workers=0)
    assert not reused and torch.equal(again, feats) and torch.equal(again_labels, labels)
    assert "holds other features ((19, 512) for 20 images" in capsys.readouterr().out
    assert torch.equal(again.float(), stream_features(net, ds, idx, 32, num_workers=0)[0].half().float())

    small = load_bank(str(style_folder), stylizer, 32, progress=False, num_workers=0)
    bank64 = bank_cache_path(str(style_folder), stylizer.weights_sha256, 64)
    bank64.write_bytes(bank_cache_path(str(style_folder), stylizer.weights_sha256, 32).read_bytes())  # 32 px at 64's place
    big = load_bank(str(style_folder), stylizer, 64, progress=False, num_workers=0)
    assert big.meta["image_size"] == 64 and not torch.equal(big.embeddings, small.embeddings)
    assert "at 32 px, not" in capsys.readouterr().out

    other = tmp_path / "other"
    (other / "a").mkdir(parents=True)
    (other / "a" / "x.jpg").write_bytes(b"x")  # the index lists files; it does not decode them
    theirs = folder_index(other)
    target = index_path(Path(jpeg_folder).resolve())
    target.parent.mkdir(parents=True, exist_ok=True)
    _write(target, other.resolve(), signature(other.resolve()), theirs)  # the other folder's index at this one's place
    ours = folder_index(jpeg_folder)
    assert len(ours) > len(theirs) and f"indexes {other.resolve()}" in capsys.readouterr().out

    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "summary.json").write_text("[]")
    (baseline / "config.json").write_text(json.dumps({"encoder": "random:resnet18", "image_size": 64}))
    assert baseline_matches(baseline, {"encoder": "random:resnet18", "image_size": 64})
    assert not baseline_matches(baseline, {"encoder": "random:resnet18", "image_size": 32})
    assert "evaluated with other settings (image_size)" in capsys.readouterr().out


def _hostile_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset whose tree is not a tree: c1 holds a loop to the dataset, a link into its sibling c0, a link to
    / and a dangling link; c2 is a link to a class kept outside the dataset (followed: a legitimate layout), and
    that outside class links back to itself."""
    data, outside = tmp_path / "data", tmp_path / "elsewhere" / "c2"
    for folder, names in ((data / "c0", ("a.jpg", "b.jpg")), (data / "c1", ("c.jpg",)), (outside, ("d.jpg",))):
        folder.mkdir(parents=True)
        for n in names:
            (folder / n).write_bytes(b"x")
    (data / "c1" / "loop").symlink_to(data)
    (data / "c1" / "sibling").symlink_to(data / "c0")
    (data / "c1" / "root").symlink_to("/")
    (data / "c1" / "gone").symlink_to(tmp_path / "nowhere")
    (data / "c2").symlink_to(outside)
    (outside / "again").symlink_to(outside)
    return data, outside


def _walk_worker(rank, world, store, folder, out):
    import collectives

    from sassl.data.index import sharded_walk

    trace = collectives.join(rank, world, store)
    try:
        (Path(out) / f"walk{rank}.json").write_text(json.dumps(sharded_walk(Path(folder))))
    finally:
        collectives.leave(trace, Path(out) / "trace", rank)


def test_a_tree_that_is_not_a_tree_is_walked_once_per_real_folder(tmp_path, capsys):
    """Each real folder's files are listed once: a loop, a link into a sibling class and a link to / are not
    followed (before: os.walk(followlinks=True) listed c0's images a second time as class c1, and followed the
    loop and / until the paths grew too long), a class linked from outside is; the links left are said in one
    line; two gloo ranks splitting the walk list the same files."""
    import torch.multiprocessing as mp

    from sassl.data.index import folder_index, walk

    data, outside = _hostile_tree(tmp_path)
    skipped: list = []
    files = walk(data, skipped_links=skipped)
    # the dangling link is listed as a file (os.walk's view); the loader skips it as unreadable
    assert files == ["c0/a.jpg", "c0/b.jpg", "c1/c.jpg", "c1/gone", "c2/d.jpg"]
    why = dict(skipped)
    assert set(why) == {"c1/loop", "c1/sibling", "c1/root", "c2/again"}
    assert why["c1/loop"].endswith("(a loop)") and why["c1/root"].endswith("(a loop)")
    assert why["c1/sibling"].endswith(f"leads into {data.resolve()}, walked already")
    assert why["c2/again"].endswith("(a loop)")
    index = folder_index(data, cache=False)
    assert [str(p.relative_to(data)) for p in index] == files
    assert "not following 4 folder link(s)" in capsys.readouterr().out
    mp.spawn(_walk_worker, args=(2, str(tmp_path / "store"), str(data), str(tmp_path)), nprocs=2, join=True)
    assert json.loads((tmp_path / "walk0.json").read_text()) == json.loads((tmp_path / "walk1.json").read_text()) == files


def test_a_decompression_bomb_is_skipped_and_counted(tmp_path):
    """A 12000 x 12000 PNG of a few kilobytes (144 M pixels, over the 100 M limit) among real images: skipped
    before it is decoded, counted, and the next image given in its place."""
    from PIL import Image

    from sassl.data import get_dataset

    folder = tmp_path / "d" / "c"
    folder.mkdir(parents=True)
    Image.new("1", (12000, 12000)).save(folder / "0-bomb.png")
    for k in range(2):
        Image.new("RGB", (64, 64), (40 * k, 90, 200)).save(folder / f"{k + 1}.png")
    assert (folder / "0-bomb.png").stat().st_size < 100_000
    ds = get_dataset(f"imagefolder:{tmp_path / 'd'}")
    with pytest.warns(UserWarning, match="too large"):
        j, img = ds.usable(0)
    assert j == 1 and img.size == (64, 64) and ds.skipped == {0}


def test_unusable_files_are_summed_up_once_an_epoch(tmp_path, jpeg_folder):
    """Three broken files in the training folder (two truncated JPEGs, a text file named .png): training goes on,
    one line at the epoch's end counts them with the first names, runs/<name>/skipped.txt lists each once with
    its reason, and no warning per file reaches the terminal (before: one UserWarning per file and worker)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(jpeg_folder, data)
    cls = sorted(p for p in (data / "train").iterdir() if p.is_dir())[0]
    (cls / "zz-broken1.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (cls / "zz-broken2.jpg").write_bytes(b"\xff\xd8\xff")
    (cls / "zz-notes.png").write_text("not an image")
    runs = tmp_path / "runs"
    r = subprocess.run(_pretrain_args(runs, data, "none", "--max-steps", "24", "--batch-size", "8"),
                       env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=300)
    said = r.stdout + r.stderr
    assert r.returncode == 0, said[-3000:]
    listed = (runs / "r" / "skipped.txt").read_text().splitlines()
    assert sorted(line.split(":")[0].rsplit("/", 1)[1] for line in listed) == ["zz-broken1.jpg", "zz-broken2.jpg",
                                                                              "zz-notes.png"]
    assert said.count("unusable file(s)") == 1 and "epoch 1 skipped 3 unusable file(s)" in said, said[-3000:]
    assert "UserWarning" not in said and "skipping unusable image" not in said


@needs_mounts
def test_any_command_that_cannot_write_says_so(tmp_path):
    """Writes outside pre-training, through the CLI's one guard: `sassl study report` into a read-only runs folder
    is one line naming the folder and the cause (before: OSError's traceback)."""
    from tiny import STUDY, write_study as _write

    disk = tmp_path / "disk"
    study = _write(tmp_path, STUDY)
    said = _on_small_disk(tmp_path, 1 << 20, [sys.executable, "-m", "sassl.cli", "study", "report", str(study),
                                              "--runs-dir", str(disk)], readonly=True)
    assert "RC=2" in said and "Traceback" not in said, said[-3000:]
    assert f"sassl study: error: cannot use {disk}/tiny" in said and "read-only file system" in said, said[-3000:]


def test_unusable_files_in_an_evaluation_target_are_said_once(tmp_path, jpeg_folder, capfd, recwarn):
    """The same in an evaluation: three broken files in a target's folder are listed in <out>/skipped.txt and said
    in one line for the target's features, not warned about one by one (before: a UserWarning per file)."""
    import shutil

    import sassl.eval.evaluate as ev

    data = tmp_path / "data"
    shutil.copytree(jpeg_folder, data)
    cls = sorted(p for p in (data / "val").iterdir() if p.is_dir())[0]
    for k in range(3):
        (cls / f"zz-broken{k}.jpg").write_bytes(b"\xff\xd8\xff")
    cfg = ev.EvalConfig(encoder="random:resnet18", runs_dir=str(tmp_path), targets=(f"imagefolder:{data}",),
                        protocols=("knn",), baseline=False, num_workers=0, image_size=32, feature_cache=False)
    ev.evaluate(cfg, progress=False)
    listed = (ev.default_out(cfg) / "skipped.txt").read_text().splitlines()
    assert sorted(line.split(":")[0].rsplit("/", 1)[1] for line in listed) == [f"zz-broken{k}.jpg" for k in range(3)]
    out = "".join(capfd.readouterr())  # a progress line: stdout, or the terminal's stderr under a Jupyter kernel
    assert out.count("unusable file(s)") == 1 and "its features skipped 3 unusable file(s)" in out, out[-2000:]
    assert not [w for w in recwarn if "skipping unusable image" in str(w.message)]

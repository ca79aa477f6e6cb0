"""Studies: the study file refused with its key when wrong, the folder as the database (a study killed mid-way
and run again trains nothing twice), the changed-file refusal, and a report that is paired_stats over the
trials' own evaluation summaries."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sassl.interrupt import sassl_child
from sassl.stats import min_detectable, paired_stats, pairs_needed
from sassl.study.runner import record_study, trial_state
from sassl.study.spec import load_study
from tiny import STUDY, write_study as _write

@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("seeds = [0, 1]", "seeds = [0]"), r"seeds: at least two different seeds"),
    (lambda s: "budget = 3\n" + s, r"budget: unknown key"),
    (lambda s: s + "budget = 3\n", r"compare\[0\]: expected exactly the keys arm and against"),
    (lambda s: s.replace('learner = "mocov2"', 'lerner = "mocov2"'), r"pretrain: unknown pretrain setting\(s\) \['lerner'\]"),
    (lambda s: s.replace('learner = "mocov2"', 'learner = "dino2"'), r"learner: unknown 'dino2'"),
    (lambda s: s.replace('style = "none"', 'seed = 4'), r"arms.baseline: \['seed'\] are set by the study"),
    (lambda s: s.replace('against = "baseline"', 'against = "base"'), r"compare\[0\].against: no arm named 'base'"),
    (lambda s: s.replace('primary = ["objects/knn"]', 'primary = ["objects/linear"]'),
     r"primary: 'objects/linear': needs 'linear' among \[evaluate\] protocols"),
    (lambda s: s.replace('primary = ["objects/knn"]', 'primary = ["elpv/knn"]'), r"target 'elpv' is not evaluated"),
    (lambda s: s.replace('primary = ["objects/knn"]', 'primary = []'), r"primary: name at least one outcome"),
    (lambda s: s.replace('[arms.sassl]\nstyle = "pbn"\n', ""), r"arms: at least two arms"),
    (lambda s: s.replace('image_size = 32', 'image_size = "big"'), r"parameter 'image_size': expected int"),
    (lambda s: s.replace('name = "tiny"', 'name = "../x"'), r"name: a folder name"),
])
def test_bad_study_files_are_refused_naming_the_key(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        load_study(_write(tmp_path, edit(STUDY)))


def test_the_documented_study_file_is_valid_and_its_trials_go_seed_major():
    page = (Path(__file__).parents[2] / "docs" / "studies.md").read_text()
    text = page.split("```toml\n", 1)[1].split("```", 1)[0]
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"readme-study-{os.getpid()}.toml"
    path.write_text(text)
    try:
        study = load_study(path)
    finally:
        path.unlink()
    names = [t.name for t in study.trials("runs")]
    assert names[:2] == ["baseline-s0", "sassl-s0"] and len(names) == 2 * len(study.seeds)


def test_trials_get_the_study_folder_as_an_absolute_path(tmp_path, monkeypatch):
    """The trial notebooks run in notebooks/: a relative --runs-dir must reach them as the folder the shell meant."""
    monkeypatch.chdir(tmp_path)
    study = load_study(_write(tmp_path, STUDY))
    (trial, *_) = study.trials("runs")
    assert trial.pretrain["runs_dir"] == trial.evaluate["runs_dir"] == str(tmp_path / "runs" / "tiny")


def test_a_changed_study_file_is_refused_unless_amended(tmp_path):
    runs = tmp_path / "runs"
    record_study(load_study(_write(tmp_path, STUDY)), runs)
    more_seeds = load_study(_write(tmp_path, STUDY.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"), "more.toml"))
    record_study(more_seeds, runs)  # new trials only: no amendment needed
    changed = load_study(_write(tmp_path, STUDY.replace("max_steps = 2", "max_steps = 3"), "changed.toml"))
    with pytest.raises(ValueError, match=r"changes what the study .* \(trial baseline-s0, .*--amend"):
        record_study(changed, runs)
    other_primary = load_study(_write(tmp_path, STUDY.replace('primary = ["objects/knn"]',
                                                               'primary = ["objects/knn (monitor)"]'), "primary.toml"))
    with pytest.raises(ValueError, match=r"\(primary\)"):
        record_study(other_primary, runs)
    record_study(other_primary, runs, amend=True)
    (amended,) = [json.loads(line) for line in (runs / "tiny" / "amendments.jsonl").read_text().splitlines()]
    assert amended["changed"] == ["primary"] and amended["results_existed"] is False
    assert "knn (monitor)" in (runs / "tiny" / "study.toml").read_text()  # the amended file is the record now


def test_a_study_recorded_by_older_code_is_not_refused(tmp_path):
    """A study record written before settings were added (no sassl_crops, local_crops, local_size, local_scale,
    probe_epochs, evaluate precision; amp in place of precision) is read in today's keys: the same file records
    again without an amendment; a real change is still refused."""
    from sassl.training.config import ADDED

    runs = tmp_path / "runs"
    study = load_study(_write(tmp_path, STUDY))
    record_study(study, runs)
    path = runs / "tiny" / "resolved.json"
    old = json.loads(path.read_text())
    for trial in old["trials"].values():
        for k in ADDED:
            del trial["pretrain"][k]
        trial["pretrain"]["amp"] = trial["pretrain"].pop("precision") == "auto"
        del trial["evaluate"]["precision"]
    path.write_text(json.dumps(old))
    record_study(study, runs)
    assert not (runs / "tiny" / "amendments.jsonl").exists()
    changed = load_study(_write(tmp_path, STUDY.replace("max_steps = 2", "max_steps = 3"), "changed.toml"))
    with pytest.raises(ValueError, match="changes what the study"):
        record_study(changed, runs)


def test_pairs_needed_is_the_smallest_n_whose_mde_reaches_the_effect():
    for sd, effect in ((1.0, 1.0), (2.3, 1.5), (0.5, 2.0), (3.0, 0.7)):
        n = pairs_needed(sd, effect)
        naive = next(k for k in range(2, 10_000) if min_detectable(sd, k) <= effect)  # walk every n
        assert n == naive, (sd, effect)
    assert pairs_needed(1.0, 1e-4, most=100) is None


def _sassl(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sassl.cli", "study", *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The tiny study (2 arms x 2 seeds) run in 2 lanes, killed (kill -9 of every process) once a trial has finished, then run
    again to the end: (study file, runs dir, the finished trials' files' mtimes before the second run)."""
    tmp = tmp_path_factory.mktemp("study")
    path, runs = _write(tmp, STUDY), tmp / "runs"
    first = _sassl("run", str(path), "--runs-dir", str(runs), "--lanes", "2")
    deadline = time.time() + 600
    while time.time() < deadline and not any((runs / "tiny").glob("*/eval/summary.json")):
        assert first.poll() is None, first.stdout.read()[-3000:]
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # the lanes, their notebook kernels, everything
    first.wait()
    finished = {p.parent.parent.name: (p.stat().st_mtime_ns, (p.parent.parent / "checkpoints" / "last.pt").stat().st_mtime_ns)
                for p in (runs / "tiny").glob("*/eval/summary.json")}
    assert finished, "no trial finished before the kill"
    second = _sassl("run", str(path), "--runs-dir", str(runs), "--lanes", "2")
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out[-3000:]
    return path, runs, finished, out


@pytest.mark.slow
def test_tiny_study_killed_resumed_reported_and_run_through_submitit(tiny_study):
    """One test over the tiny study (xdist would start a module fixture once per worker): nothing trained twice
    after kill -9, the report, then one trial deleted and run again through submitit's local executor."""
    path, runs, finished, out = tiny_study
    _nothing_twice(path, runs, finished, out)
    _report_is_paired_stats(path, runs)
    _submitit_local_runs_the_missing_trial(path, runs)


def _nothing_twice(path, runs, finished, out):
    study = load_study(path)
    assert all(trial_state(runs / "tiny" / t.name) == "finished" for t in study.trials(runs))
    for name, (summary, ckpt) in finished.items():  # finished before the kill: neither trained nor evaluated again
        run = runs / "tiny" / name
        assert (run / "eval" / "summary.json").stat().st_mtime_ns == summary, name
        assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == ckpt, name
        assert f"trial {name} (" not in out, name
    assert "study tiny: 4/4 trials finished" in out
    for t in study.trials(runs):  # every step logged once, in order (a resumed trial kept its rows)
        steps = [json.loads(line)["step"] for line in (runs / "tiny" / t.name / "metrics.jsonl").read_text().splitlines()
                 if "loss" in line]
        assert steps == [1, 2], (t.name, steps)


def _report_is_paired_stats(path, runs):
    import csv

    rep = subprocess.run([sys.executable, "-m", "sassl.cli", "study", "report", str(path), "--runs-dir", str(runs),
                          "--effect", "1.0"], capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    rows = json.loads((runs / "tiny" / "report" / "report.json").read_text())
    primary = [r for r in rows if r["family"] == "primary"]
    assert [(r["comparison"], r["target"], r["protocol"]) for r in primary] == [("sassl - baseline", "objects", "knn")]

    def top1(trial: str) -> float:
        with open(runs / "tiny" / trial / "eval" / "summary.csv") as f:
            (row,) = [r for r in csv.DictReader(f) if r["target"] == "objects" and r["protocol"] == "knn"]
        return float(row["top1_mean"])

    want = paired_stats([top1(f"baseline-s{s}") for s in range(2)], [top1(f"sassl-s{s}") for s in range(2)])
    (r,) = primary
    assert r["n"] == 2 and r["diff"] == pytest.approx(want["diff"]) and r["mde"] == pytest.approx(want["mde"])
    same = lambda a, b: a is b is None or a == pytest.approx(b)  # noqa: E731 (no spread: no test, None)
    assert same(r["ci_low"], want["t_low"]) and same(r["ci_high"], want["t_high"]) and same(r["p"], want["p"])
    assert same(r["p_adjusted"], want["p"])  # Holm over one primary outcome is the p itself
    assert r["pairs_for_effect"] == (pairs_needed(want["sd"], 1.0) if want["sd"] else None)
    assert {"report.md", "report.csv", "report.json", "forest.html"} <= {p.name for p in (runs / "tiny" / "report").iterdir()}
    assert "## sassl - baseline" in rep.stdout and "objects/knn" in rep.stdout
    status = subprocess.run([sys.executable, "-m", "sassl.cli", "study", "status", str(path), "--runs-dir", str(runs)],
                            capture_output=True, text=True, timeout=300)
    assert status.stdout.count("| finished |") == 4 and "2/2" in status.stdout, status.stdout


def _submitit_local_runs_the_missing_trial(path, runs):
    import shutil

    before = {t: (runs / "tiny" / t / "eval" / "summary.json").stat().st_mtime_ns for t in ("baseline-s0", "sassl-s0")}
    shutil.rmtree(runs / "tiny" / "sassl-s1")
    r = subprocess.run([sys.executable, "-m", "sassl.cli", "study", "run", str(path), "--runs-dir", str(runs),
                        "--launcher", "submitit-local"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "1 trial job(s) submitted (submitit-local)" in r.stdout + r.stderr
    assert trial_state(runs / "tiny" / "sassl-s1") == "finished"
    assert any((runs / "tiny" / "submitit").iterdir())  # submitit's pickles and logs
    assert before == {t: (runs / "tiny" / t / "eval" / "summary.json").stat().st_mtime_ns for t in before}


def test_run_arms_runs_only_the_arms_named_first(tmp_path, monkeypatch, capsys):
    """`sassl study run FILE --arms sassl` runs that arm's trials alone, seed-major (the rest wait for a later run),
    passes the choice on to each lane's process, and refuses an arm the study does not have before recording it."""
    import sassl.study.runner as runner
    from sassl.cli import main

    path, runs, ran = _write(tmp_path, STUDY), tmp_path / "runs", []

    def fake_trial(trial, run):  # what a finished trial leaves, without training
        ran.append(trial.name)
        (run / "eval").mkdir(parents=True)
        (run / "eval" / "summary.json").write_text("[]")
    monkeypatch.setattr(runner, "run_trial", fake_trial)
    assert main(["study", "run", str(path), "--runs-dir", str(runs), "--arms", "sassl"]) == 0
    assert ran == ["sassl-s0", "sassl-s1"] and trial_state(runs / "tiny" / "baseline-s0") == "pending"
    with pytest.raises(ValueError, match="--arms: base not in study other; its arms: baseline, sassl"):
        runner.run_study(_write(tmp_path, STUDY.replace('name = "tiny"', 'name = "other"'), "other.toml"), runs,
                         arms=("base",))
    assert not (runs / "other").exists()
    started = []
    monkeypatch.setattr(runner.subprocess, "Popen", lambda cmd, env: started.append(cmd) or
                        type("Done", (), {"wait": lambda self: 0})())
    assert runner.run_study(path, runs, lanes=2, arms=("baseline",)) == 1  # the fake lanes ran nothing
    assert len(started) == 2 and all(cmd[-2:] == ["--arms", "baseline"] for cmd in started)
    assert main(["study", "lane", str(path), "--runs-dir", str(runs), "--arms", "baseline"]) == 0
    assert ran[2:] == ["baseline-s0", "baseline-s1"]


def test_a_resumed_trials_wall_time_adds_up_its_attempts(tmp_path, monkeypatch):
    """The study timing that prices the trials left (progress, `sassl study plan`) is the trial's whole wall time:
    an attempt stopped mid pre-training adds its time to the one that finishes it."""
    from types import SimpleNamespace

    from sassl.study import runner

    calls = []

    def execute(src, dest, params, cwd=None):
        calls.append(Path(dest).name)
        if calls == ["pretrain.ipynb"]:
            raise KeyboardInterrupt("stopped mid pre-training")
    clock = iter([100.0, 160.0, 1000.0, 1030.0])
    monkeypatch.setattr(runner, "execute", execute)
    monkeypatch.setattr(runner, "time", SimpleNamespace(time=lambda: next(clock)))
    run, trial = tmp_path / "base-s0", SimpleNamespace(pretrain={}, evaluate={})
    run.mkdir()
    with pytest.raises(KeyboardInterrupt):
        runner.run_trial(trial, run)
    runner.run_trial(trial, run)
    assert calls == ["pretrain.ipynb", "pretrain.ipynb", "evaluate.ipynb"]
    assert json.loads((run / runner.TIMING).read_text()) == {"seconds": 90.0}


def test_lanes_run_the_parents_sassl_whatever_their_working_directory_holds(tmp_path):
    """A study's lanes (and a benchmark's trainer) are `python -m sassl.cli` children: run from a folder holding
    another checkout's `sassl/`, they run the parent's code, not that one (which plain `-m` imports first)."""
    other = tmp_path / "sassl"
    other.mkdir()
    (other / "__init__.py").write_text("raise SystemExit('the sassl of the working directory')\n")
    (other / "cli.py").write_text("")
    plain = subprocess.run([sys.executable, "-m", "sassl.cli", "study", "--help"], cwd=tmp_path, capture_output=True,
                           text=True)
    assert "the sassl of the working directory" in plain.stderr  # the trap
    cmd, env = sassl_child("study", "--help", OMP_NUM_THREADS="3")
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "lane" in r.stdout and "report" in r.stdout
    assert env["OMP_NUM_THREADS"] == "3"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(Path(__file__).resolve().parents[2])


def test_sbatch_script_carries_the_options_given(tmp_path, capsys):
    from sassl.cli import main

    path = _write(tmp_path, STUDY)
    assert main(["study", "run", str(path), "--runs-dir", str(tmp_path / "runs"), "--launcher", "slurm",
                 "--partition", "gpu", "--time", "600", "--gpus-per-trial", "8", "--nodes-per-trial", "2",
                 "--slurm", "account=abc", "--slurm", "qos=high", "--show-sbatch"]) == 0
    script = capsys.readouterr().out
    for line in ("--partition=gpu", "--time=600", "--gpus-per-node=8", "--nodes=2", "--ntasks-per-node=1",
                 "--cpus-per-task=80", "--account=abc", "--qos=high", "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in script, line
    assert "-m submitit.core._submit" in script and not (tmp_path / "runs" / "tiny").exists()  # nothing submitted
    assert main(["study", "run", str(path), "--launcher", "slurm", "--slurm", "account", "--show-sbatch"]) == 2
    assert "--slurm: expected KEY=VALUE" in capsys.readouterr().err


def test_multi_gpu_trials_run_the_readmes_torchrun_lines(tmp_path):
    from sassl.study.launch import torchrun_command

    trial = load_study(_write(tmp_path, STUDY)).trials(tmp_path)[0]
    one = torchrun_command(trial, Path("c.json"), gpus=8, nodes=1)
    assert one == ["torchrun", "--standalone", "--nproc_per_node", "8", "-m", "sassl.cli", "pretrain", "--config",
                   "c.json", "--resume"]
    many = " ".join(torchrun_command(trial, Path("c.json"), gpus=8, nodes=4, master="node1"))
    assert "--nnodes 4 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint node1:29400 --rdzv-id baseline-s0" in many
    readme = (Path(__file__).parents[2] / "docs" / "scale.md").read_text()
    assert "--nnodes 4 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint $MASTER:29400" in readme


EVIDENCE = Path(__file__).parents[2] / "experiments" / "studies" / "evidence.toml"
RUN_FREE = ("name", "runs_dir", "resolved", "out", "encoder")  # where a trial ran, not what it computed


def test_the_evidence_study_describes_its_kept_trials_exactly():
    """experiments/studies/evidence.toml is the sweep that experiments/results/ holds: every kept trial's
    pre-training and evaluation configs are the ones the study file resolves to (resume-free settings aside)."""
    from sassl.eval.evaluate import upgraded_eval
    from sassl.training import PretrainConfig
    from sassl.training.config import upgraded

    study = load_study(EVIDENCE)
    resolved = study.resolved()["trials"]
    kept = [t for t in study.trials("runs") if (study.dir("runs") / t.name / "config.json").is_file()]
    assert len(kept) >= 13  # five pairs and beta = 1 at three seeds
    free = set(RUN_FREE) | set(PretrainConfig.RESUME_FREE)
    for t in kept:
        cfg = upgraded(json.loads((study.dir("runs") / t.name / "config.json").read_text()))  # older keys: today's
        want = {k: v for k, v in resolved[t.name]["pretrain"].items() if k not in free}
        assert {k: cfg[k] for k in want} == want, t.name
        ev = upgraded_eval(json.loads((study.dir("runs") / t.name / "eval" / "config.json").read_text()))
        want = {k: v for k, v in resolved[t.name]["evaluate"].items() if k not in RUN_FREE}
        assert {k: ev[k] for k in want} == want, t.name


def test_the_evidence_study_report_gives_the_numbers_of_evidence_md():
    """The study report over the kept trials reproduces experiments/results/evidence.md's primary table of SASSL
    minus the baseline (evidence.py's own report): pairs, mean difference, t interval, p, Holm, MDE."""
    from sassl.study.report import report_rows

    study = load_study(EVIDENCE)
    rows = [r for r in report_rows(study, "runs") if r["comparison"] == "ev-sassl - ev-base" and r["family"] == "primary"]
    md = (study.dir("runs") / "evidence.md").read_text()
    table = md.split(": primary outcomes\n\n", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    assert [(c[0], c[1]) for c in cells] == [(r["target"], r["protocol"]) for r in rows] == list(study.primary)
    for c, r in zip(cells, rows):
        assert int(c[2]) == r["n"] and c[4] == f"{r['diff']:+.2f}", c
        assert c[6] == f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]", c
        assert (c[8], c[9], c[10]) == (f"{r['p']:.3f}", f"{r['p_adjusted']:.3f}", f"{r['mde']:.2f}"), c


def test_the_study_report_tests_a2_across_style_sources(tmp_path, monkeypatch):
    """The evidence study's A.2: the comparisons that add only an image style source to the baseline (not beta = 1,
    noise or in-batch styles), each target's paired linear gain against the source-target distance, and Pearson's
    r with its Fisher-z interval in the report; distances are embedded once and kept."""
    import sassl.eval.tsne
    from sassl.stats import correlation
    from sassl.study.report import (kept_distances, report_markdown, report_rows, style_gain_points,
                                    style_source_comparisons)

    study = load_study(EVIDENCE)
    assert style_source_comparisons(study) == [("ev-sassl", "ev-base", "pbn"), ("ev-textures", "ev-base", "textures"),
                                               ("ev-photos", "ev-base", "photos")]
    rows = report_rows(study, "runs")
    far = {"objects": 9.0, "objects@test_shift": 8.5, "textures": 13.5, "elpv": 14.0}
    points = style_gain_points(study, rows, lambda source, target: far[target] + (source != "pbn"))
    linear = {r["target"]: r["diff"] for r in rows if r["comparison"] == "ev-sassl - ev-base" and r["protocol"] == "linear"}
    assert {p["target"]: p["gain"] for p in points if p["style"] == "pbn"} == linear and len(linear) == 4
    assert all(p["distance"] == far[p["target"]] for p in points if p["style"] == "pbn")
    c = correlation([far[t] for t in linear], list(linear.values()))
    md = report_markdown(study, "runs", rows, points=points)
    assert f"Pearson r = {c['r']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}] (Fisher z 95%)" in md
    one_source = load_study(_write(tmp_path, STUDY))  # baseline and pbn: A.2 needs two sources
    assert style_source_comparisons(one_source) == [("sassl", "baseline", "pbn")]
    assert style_gain_points(one_source, [{"comparison": "sassl - baseline", "protocol": "linear"}], far.get) == []
    calls = []
    monkeypatch.setattr(sassl.eval.tsne, "style_distance", lambda s, t, n: calls.append((s, t, n)) or 7.5)
    for _ in range(2):
        assert kept_distances(tmp_path / "report")("photos", "elpv") == 7.5
    assert calls == [("photos", "elpv", 100)] and "photos -> elpv" in (tmp_path / "report" / "style_distances.json").read_text()


def test_study_plan_counts_the_pairs_and_trials_an_effect_needs(capsys):
    """sassl study plan over the evidence study: pairs_needed at each primary outcome's observed sd, and the trials
    still to run (a seed where one arm is finished costs one trial, a new seed two)."""
    from sassl.cli import main
    from sassl.study.report import plan_rows, report_rows

    study = load_study(EVIDENCE)
    rows = {(r["comparison"], r["outcome"]): r for r in plan_rows(study, "runs", 1.5, lanes=2)}
    sd = {(r["comparison"], f"{r['target']}/{r['protocol']}"): r["sd"] for r in report_rows(study, "runs")}
    main_linear = rows[("ev-sassl - ev-base", "objects/linear")]
    need = pairs_needed(sd[("ev-sassl - ev-base", "objects/linear")], 1.5)
    assert main_linear["pairs for 1.5"] == need
    folder = study.dir("runs")
    done = {a: {t.seed for t in study.trials("runs") if t.arm == a and trial_state(folder / t.name) == "finished"}
            for a in study.arms}
    pairs = len(done["ev-sassl"] & done["ev-base"])  # the kept pairs; each seed past them needs both arms
    assert pairs >= 5 and main_linear["trials to run"] == 2 * max(0, need - pairs)
    beta1 = rows[("ev-beta1 - ev-sassl", "objects/knn")]  # seeds past beta = 1's three have ev-sassl already
    halves = len(done["ev-sassl"] - done["ev-beta1"])
    assert len(done["ev-beta1"] & done["ev-sassl"]) == 3 and halves >= 2
    extra = max(0, beta1["pairs for 1.5"] - 3)
    assert beta1["trials to run"] == min(extra, halves) + 2 * max(0, extra - halves)
    assert main(["study", "plan", str(EVIDENCE), "--effect", "1.5"]) == 0 and "| ev-sassl - ev-base |" in capsys.readouterr().out


def test_study_plan_prices_trials_in_gpu_hours_where_none_has_run(tmp_path, capsys):
    """A study with no trial yet, planned from the evidence study's pairs (--pilot): no wall time to go by, so the
    cost is GPU hours from each arm's traced FLOPs. trial_gflop is epochs x whole batches x (learner + p x SASSL):
    a stylizer cost counted for both views, or without p, or over a partial last batch, fails it."""
    from sassl.cli import main
    from sassl.plan import trace_step
    from sassl.study.report import plan_rows, trial_gflop
    from sassl.training.config import config_from_dict

    settings = {"learner": "mocov2", "batch_size": 8, "image_size": 32, "epochs": 3, "p": 0.5}
    cfg = config_from_dict(settings | {"style": "pbn"})
    mem = trace_step(cfg, 8, 8, None)
    images = 3 * (101 // 8) * 8  # drop_last: 12 whole batches an epoch
    assert trial_gflop(settings | {"style": "pbn"}, 101) == pytest.approx(
        images * (mem.learner_flops + 0.5 * mem.sassl_flops) / 1e9, rel=1e-9)
    assert trial_gflop(settings | {"style": "none"}, 101) == pytest.approx(images * mem.learner_flops / 1e9, rel=1e-9)

    path = _write(tmp_path, STUDY.replace('name = "tiny"', 'name = "priced"'))
    study = load_study(path)
    rows = plan_rows(study, tmp_path / "runs", 1.5, pilot=load_study(EVIDENCE), pilot_runs_dir="runs",
                     gpu_tflops=100.0, train_images=1000)
    gflop = {arm: trial_gflop(t.pretrain, 1000) for t in study.trials(tmp_path / "runs") for arm in [t.arm]}
    for r in rows:  # every pair still to run: both arms
        assert r["time"] == "" and r["trials to run"] == 2 * r["pairs for 1.5"]
        want = r["pairs for 1.5"] * (gflop["sassl"] + gflop["baseline"]) / 1e5 / 3600
        assert r["GPU hours at 100 TFLOP/s"] == pytest.approx(want, rel=2e-3), r
    assert main(["study", "plan", str(path), "--runs-dir", str(tmp_path / "runs"), "--effect", "1.5", "--pilot",
                 str(EVIDENCE), "--train-images", "1000"]) == 0
    assert "GPU hours at 200 TFLOP/s" in capsys.readouterr().out


def test_study_notebook_shows_the_report_of_a_study(tmp_path):
    """notebooks/study.ipynb through papermill over a copy of three kept evidence pairs: the status table, the
    report's tables and the forest plot, and the report files in the study folder."""
    import shutil

    from sassl.notebook import execute, notebook_path

    results = EVIDENCE.parent.parent / "results"
    for arm in ("ev-base", "ev-sassl"):
        for s in range(3):
            shutil.copytree(results / f"{arm}-s{s}", tmp_path / "results" / f"{arm}-s{s}")
    full = EVIDENCE.read_text()  # the evidence study with its two main arms and their comparison only
    text = (full.split("[arms.ev-beta1]")[0] + "[evaluate]" + full.split("[evaluate]")[1].split("[[compare]]")[0]
            + "[[compare]]" + full.split("[[compare]]")[1])
    (tmp_path / "studies").mkdir()
    study = _write(tmp_path / "studies", text, "evidence.toml")
    nb = execute(notebook_path("study"), tmp_path / "study.ipynb", {"study": str(study), "effect": 1.5},
                 cwd=notebook_path("study").parent)
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "ev-sassl - ev-base" in outputs and "pairs for 1.5" in outputs and "Paired differences" in outputs
    assert {"report.md", "report.json", "forest.html"} <= {p.name for p in (tmp_path / "results" / "report").iterdir()}


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "experiments" / "studies").glob("*.toml")),
                         ids=lambda p: p.name)
def test_the_workbenchs_own_study_files_are_valid(path):
    study = load_study(path)
    assert len(study.trials("runs")) >= 4 and study.primary

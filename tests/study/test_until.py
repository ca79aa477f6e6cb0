"""`sassl study run --until TIME`: a lane starts no trial its arm's finished trials say will end after TIME (on a
machine whose disk goes with it, a trial cut off at the end is lost), and goes on with a started one."""
import datetime
import json

import pytest

import sassl.study.runner as runner
from sassl.cli import main
from sassl.study.runner import TIMING, deadline, trial_state
from sassl.study.spec import load_study
from tiny import STUDY, write_study


def _finished(run, seconds):
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "summary.json").write_text("[]")
    (run / TIMING).write_text(json.dumps({"seconds": seconds}))


def test_until_reads_a_clock_time_or_an_iso_time_and_names_itself_when_wrong():
    five = datetime.datetime(2026, 12, 8, 5, 0).timestamp()
    assert deadline("05:30", now=five) == datetime.datetime(2026, 12, 8, 5, 30).timestamp()
    assert deadline("4:50", now=five) == datetime.datetime(2026, 12, 9, 4, 50).timestamp()  # the next 4:50
    assert deadline("2026-12-08T07:15", now=five) == datetime.datetime(2026, 12, 8, 7, 15).timestamp()
    with pytest.raises(ValueError, match=r"--until: '25:00' is neither HH:MM nor an ISO date"):
        deadline("25:00", now=five)
    with pytest.raises(ValueError, match="--until: 2026-12-08T04:00 has passed"):
        deadline("2026-12-08T04:00", now=five)


def test_a_lane_starts_only_the_trials_its_arm_says_fit_before_the_deadline(tmp_path, monkeypatch, capfd):
    path, runs, ran = write_study(tmp_path, STUDY), tmp_path / "runs", []
    study = load_study(path)
    folder = study.dir(runs)
    _finished(folder / "baseline-s0", 100.0)   # a baseline takes 100 s,
    _finished(folder / "sassl-s0", 1000.0)     # a SASSL trial 1000 s: the mean of both (550) fits neither below
    monkeypatch.setattr(runner, "run_trial", lambda trial, run: ran.append(trial.name) or _finished(run, 1.0))

    runner.lane(study, runs, until=runner.time.time() + 500)
    assert ran == ["baseline-s1"] and trial_state(folder / "sassl-s1") == "pending"
    assert "trial sassl-s1 not started: it takes ~16 min 40 s" in "".join(capfd.readouterr())  # a terminal line

    (folder / "sassl-s1" / "checkpoints").mkdir(parents=True)  # started since: it goes on whatever is left
    (folder / "sassl-s1" / "checkpoints" / "last.pt").write_bytes(b"")
    runner.lane(study, runs, until=runner.time.time() + 5)
    assert ran == ["baseline-s1", "sassl-s1"]


def test_the_deadline_reaches_each_lane_and_is_refused_for_a_cluster(tmp_path, monkeypatch, capsys):
    path, runs, started = write_study(tmp_path, STUDY), tmp_path / "runs", []
    monkeypatch.setattr(runner.subprocess, "Popen", lambda cmd, env: started.append(cmd) or
                        type("Done", (), {"wait": lambda self: 0})())
    until = datetime.datetime(2099, 1, 2, 3, 4)
    runner.run_study(path, runs, lanes=2, until=until.timestamp())
    assert len(started) == 2 and all(cmd[-2:] == ["--until", "2099-01-02T03:04:00"] for cmd in started)
    assert main(["study", "run", str(path), "--runs-dir", str(runs), "--launcher", "slurm", "--until", "04:00"]) == 2
    assert "--until: local lanes only" in capsys.readouterr().err

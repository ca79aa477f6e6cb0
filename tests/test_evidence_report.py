"""experiments/evidence.py's report of the evidence sweep, on constructed kept runs whose differences are known."""
import importlib.util
import json
from pathlib import Path

import pytest


def _evidence(monkeypatch, kept: Path):
    spec = importlib.util.spec_from_file_location("evidence", Path(__file__).parents[1] / "experiments" / "evidence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "KEPT", kept)
    return mod


def _kept(kept: Path, name: str, params: dict, linear: float, cos: float) -> None:
    d = kept / name / "eval"
    d.mkdir(parents=True)
    cfg = {"name": name, "p": 0.8, "alpha": [0.1, 0.3], "beta": [0.1, 0.3], "layers": 13, "style": "none"} | params
    (kept / name / "config.json").write_text(json.dumps(cfg))
    (d / "summary.json").write_text(json.dumps([{"target": "objects", "protocol": "linear", "top1_mean": linear}]))
    (d / "robustness.json").write_text(json.dumps([{"target": "objects", "protocol": "style_invariance",
                                                    "kind": "style change", "beta": 1.0, "cos_mean": cos}]))


def test_evidence_report_pairs_each_arm_with_the_baseline(tmp_path, monkeypatch):
    ev = _evidence(monkeypatch, tmp_path)
    for s in range(3):  # SASSL: +2, +3, +4 linear points; invariance +0.05 each seed; beta = 1: -1 at seeds 0, 1
        _kept(tmp_path, f"ev-base-s{s}", ev.SWEEP_RUNS[f"ev-base-s{s}"], 40.0 + s, 0.50)
        _kept(tmp_path, f"ev-sassl-s{s}", ev.SWEEP_RUNS[f"ev-sassl-s{s}"], 42.0 + 2 * s, 0.55)
    for s in range(2):
        _kept(tmp_path, f"ev-beta1-s{s}", ev.SWEEP_RUNS[f"ev-beta1-s{s}"], 39.0 + s, 0.60)
    text = ev.evidence_report()
    assert (tmp_path / "evidence.md").read_text() == text
    sections = {s.split("\n")[0]: s for s in text.split("### ")[1:]}
    base = "mocov2 epochs=60 baseline"
    assert list(sections) == [f"mocov2 epochs=60 + SASSL(pbn) minus {base}: accuracy",
                              f"mocov2 epochs=60 + SASSL(pbn) minus {base}: instruments",
                              f"mocov2 epochs=60 + SASSL(pbn) beta=[1.0, 1.0] minus {base}: accuracy",
                              f"mocov2 epochs=60 + SASSL(pbn) beta=[1.0, 1.0] minus {base}: instruments"]
    row = lambda sec: sec.strip().split("\n")[-1].split(" | ")  # noqa: E731 (the table's one row)
    sassl_linear = row(sections[f"mocov2 epochs=60 + SASSL(pbn) minus {base}: accuracy"])
    assert sassl_linear[:5] == ["| objects", "linear", "3", "41.00", "+3.00"]  # baseline mean 41, mean diff (2+3+4)/3
    inv = row(sections[f"mocov2 epochs=60 + SASSL(pbn) minus {base}: instruments"])
    assert inv[1:5] == ["invariance beta=1.0", "3", "50.00", "+5.00"] and inv[5] == "" and inv[7] == "-"  # no spread: no t
    beta1 = row(sections[f"mocov2 epochs=60 + SASSL(pbn) beta=[1.0, 1.0] minus {base}: accuracy"])
    assert beta1[2:5] == ["2", "41.00", "-1.00"]
    assert float(sassl_linear[7]) == pytest.approx(0.0351, abs=5e-4)  # paired t: mean 3, sd 1, n 3 -> t 5.196, df 2
    assert sassl_linear[5] == "[+0.52, +5.48]"  # 3 +- t(0.975, 2) = 4.303 x 1 / sqrt(3)


def test_a_kept_run_is_not_trained_again_on_a_fresh_machine(tmp_path, monkeypatch):
    """runs/ is not tracked: on a fresh machine the sweep skips the runs whose files are kept (committed) and
    trains the others."""
    ev = _evidence(monkeypatch, tmp_path / "kept")
    monkeypatch.setattr(ev, "RUNS", tmp_path / "runs")
    trained = []
    monkeypatch.setattr(ev, "execute", lambda nb, out, params, cwd: trained.append((nb.name, params.get("name"))))
    monkeypatch.setattr(ev, "keep", lambda name: [])
    _kept(tmp_path / "kept", "ev-base-s0", ev.SWEEP_RUNS["ev-base-s0"], 40.0, 0.5)
    for name in ("ev-base-s0", "ev-sassl-s0"):
        ev.run_one(name, ev.SWEEP_RUNS[name])
    assert trained == [("pretrain.ipynb", "ev-sassl-s0"), ("evaluate.ipynb", None)]

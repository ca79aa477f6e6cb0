"""experiments/evidence.py's report of the evidence sweep, on constructed kept runs whose differences are known."""
import importlib.util
import json
from pathlib import Path

import pytest


def _evidence(monkeypatch, kept: Path):
    spec = importlib.util.spec_from_file_location("evidence", Path(__file__).parents[2] / "experiments" / "evidence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "KEPT", kept)
    return mod


def _kept(kept: Path, name: str, params: dict, linear: float, cos: float, more: dict | None = None) -> None:
    """A kept run: objects linear `linear`, invariance at beta = 1 `cos`, and `more` {(target, protocol): top-1}."""
    d = kept / name / "eval"
    d.mkdir(parents=True)
    cfg = {"name": name, "p": 0.8, "alpha": [0.1, 0.3], "beta": [0.1, 0.3], "layers": 13, "style": "none"} | params
    (kept / name / "config.json").write_text(json.dumps(cfg))
    rows = [{"target": t, "protocol": p, "top1_mean": v} for (t, p), v in ((more or {}) | {("objects", "linear"): linear}).items()]
    (d / "summary.json").write_text(json.dumps(rows))
    (d / "robustness.json").write_text(json.dumps([{"target": "objects", "protocol": "style_invariance",
                                                    "kind": "style change", "beta": 1.0, "cos_mean": cos}]))


def test_evidence_report_pairs_each_arm_with_the_baseline(tmp_path, monkeypatch):
    ev = _evidence(monkeypatch, tmp_path)
    # SASSL: +2, +3, +4 objects linear points; elpv linear +6, +9, +12 (both primary); textures kNN +1, +2, +3
    # (secondary); invariance +0.05 each seed (primary); the other primary outcomes +1 each seed (no spread,
    # no test); beta = 1: -1 linear at seeds 0, 1
    same = {("objects", "knn"): 35.0, ("objects@test_shift", "linear"): 30.0, ("textures", "linear"): 25.0}
    for s in range(3):
        _kept(tmp_path, f"ev-base-s{s}", ev.EVIDENCE_TRIALS[f"ev-base-s{s}"], 40.0 + s, 0.50,
              same | {("elpv", "linear"): 70.0, ("textures", "knn"): 30.0})
        _kept(tmp_path, f"ev-sassl-s{s}", ev.EVIDENCE_TRIALS[f"ev-sassl-s{s}"], 42.0 + 2 * s, 0.55,
              {k: v + 1 for k, v in same.items()} | {("elpv", "linear"): 76.0 + 3 * s, ("textures", "knn"): 31.0 + s})
    for s in range(2):
        _kept(tmp_path, f"ev-beta1-s{s}", ev.EVIDENCE_TRIALS[f"ev-beta1-s{s}"], 39.0 + s, 0.60)
    # seed 0's augmentation record: excess loss 0.01 + 0.2 x beta in three bins (+0.02 per 0.1), alpha flat
    bins = [{"by": "beta", "value": b, "images": 10, "excess_loss": 0.01 + 0.2 * b, "stderr": 0.01} for b in (0.1, 0.2, 0.3)]
    bins += [{"by": "alpha", "value": a, "images": 10, "excess_loss": 0.0, "stderr": 0.01} for a in (0.1, 0.2, 0.3)]
    (tmp_path / "ev-sassl-s0" / "augment_summary.json").write_text(json.dumps(
        [{"by": "stylized", "value": 1, "images": 30, "excess_loss": 0.05, "stderr": 0.004},
         {"by": "stylized", "value": 0, "images": 8, "excess_loss": -0.2, "stderr": 0.01}] + bins))
    for n in ("ev-beta1-s0", "ev-sassl-s1"):  # sweep order: base-s0, sassl-s0, beta1-s0, base-s1, sassl-s1, ...
        (tmp_path / n / "augment_summary.json").write_text(json.dumps(
            [{"by": "stylized", "value": 1, "images": 30, "excess_loss": 0.1, "stderr": 0.004}]))
    text = ev.evidence_report()
    assert (tmp_path / "evidence.md").read_text() == text
    sections = {s.split("\n")[0]: s for s in text.split("### ")[1:]}
    base = "mocov2 epochs=60 baseline"
    sassl, beta1 = f"mocov2 epochs=60 + SASSL(pbn) minus {base}", f"mocov2 epochs=60 + SASSL(pbn) beta=[1.0, 1.0] minus {base}"
    hard = next(k for k in sections if k.startswith("Which SASSL draws are hard"))
    pairing = f"mocov2 epochs=60 + SASSL(pbn) and {base}: what pairing by seed removes (primary outcomes)"
    beta1_sassl = f"mocov2 epochs=60 + SASSL(pbn) beta=[1.0, 1.0] minus mocov2 epochs=60 + SASSL(pbn)"
    assert list(sections) == [f"{sassl}: primary outcomes", pairing, f"{sassl}: other accuracies",
                              f"{beta1}: primary outcomes", f"{beta1_sassl}: primary outcomes", hard]
    # beta = 1 has 2 pairs: no pairing table; against SASSL (the paper's claim) its primary outcomes only
    spread = {tuple(r[:2]): r[2:] for r in (r.split(" | ") for r in sections[pairing].strip().split("\n")[4:])}
    # objects linear: baseline 40, 41, 42 (sd 1), SASSL 42, 44, 46 (sd 2), differences sd 1; unpaired sqrt(1 + 4);
    # r = (1 + 4 - 1) / (2 x 1 x 2) = 1
    assert spread[("| objects", "linear")] == ["3", "1.00", "2.00", "1.00", "2.24", "0.45", "1.00 |"]
    # elpv linear: baseline 70 at every seed (sd 0: no correlation), SASSL 76, 79, 82
    assert spread[("| elpv", "linear")] == ["3", "0.00", "3.00", "3.00", "3.00", "1.00", " |"]
    rows = lambda sec: [r.split(" | ") for r in sec.strip().split("\n")[4:]]  # noqa: E731 (the table's rows)
    record = rows(sections[hard])
    assert [r[:2] for r in record] == [["| mocov2 epochs=60 + SASSL(pbn)", "ev-sassl-s0"],  # arm by arm
                                       ["| mocov2 epochs=60 + SASSL(pbn)", "ev-sassl-s1"],
                                       ["| mocov2 epochs=60 + SASSL(pbn) beta=[1.0, 1.0]", "ev-beta1-s0"]]
    assert " | ".join(record[0][2:]) == ("+0.0500 +- 0.0040 | -0.2000 +- 0.0100 | "
                                         "+0.0000 +- 0.0071 | +0.0200 +- 0.0071 |")  # 0.01 / sqrt(2)
    knn, sassl_linear, shift, textures, elpv, inv = rows(sections[f"{sassl}: primary outcomes"])  # PRIMARY's order
    assert [r[1] for r in (knn, shift, textures)] == ["knn", "linear", "linear"] and knn[4] == "+1.00" and knn[8] == "-"
    assert sassl_linear[:5] == ["| objects", "linear", "3", "41.00", "+3.00"]  # baseline mean 41, mean diff (2+3+4)/3
    assert float(sassl_linear[8]) == pytest.approx(0.0351, abs=5e-4)  # paired t: mean 3, sd 1, n 3 -> t 5.196, df 2
    assert sassl_linear[5:7] == ["+2.00 +3.00 +4.00", "[+0.52, +5.48]"]  # 3 +- t(0.975, 2) = 4.303 x 1 / sqrt(3)
    assert elpv[:5] == ["| elpv", "linear", "3", "70.00", "+9.00"] and float(elpv[8]) == pytest.approx(0.0351, abs=5e-4)
    # Holm over the two primary tests (the invariance row has none): 2 x 0.0351 for both; with textures kNN
    # (p 0.0742) in the same family it would be 3 x 0.0351
    assert float(sassl_linear[9]) == float(elpv[9]) == pytest.approx(0.0702, abs=5e-4)
    assert inv[1:5] == ["invariance beta=1.0", "3", "50.00", "+5.00"] and inv[6] == "" and inv[8] == "-"  # no spread: no t
    (tex_knn,) = rows(sections[f"{sassl}: other accuracies"])
    assert tex_knn[:5] == ["| textures", "knn", "3", "30.00", "+2.00"] and float(tex_knn[9]) == pytest.approx(0.0742, abs=5e-4)
    beta1_linear, _ = rows(sections[f"{beta1}: primary outcomes"])
    assert beta1_linear[2:5] == ["2", "40.50", "-1.00"]  # the baseline over the pairs' seeds 0, 1 (not 41, all three)
    # beta = 1 minus SASSL: 39 - 42, 40 - 44 (SASSL's mean over seeds 0, 1: 43); invariance 0.60 - 0.55
    vs_sassl_linear, vs_sassl_inv = rows(sections[f"{beta1_sassl}: primary outcomes"])
    assert vs_sassl_linear[:6] == ["| objects", "linear", "2", "43.00", "-3.50", "-3.00 -4.00"]
    assert vs_sassl_inv[1:5] == ["invariance beta=1.0", "2", "55.00", "+5.00"]
    assert sections[f"{beta1_sassl}: primary outcomes"].split("\n")[2].startswith("| target | protocol | seeds | SASSL | diff |")
    # fewer pairs than the evidence study plans (SASSL 10 seeds, beta = 1 3): the MDE at the planned count, at the
    # spread seen so far
    from sassl.stats import min_detectable
    assert sections[f"{sassl}: primary outcomes"].split("\n")[2].endswith("| MDE | MDE at 10 |")
    assert sections[f"{beta1}: primary outcomes"].split("\n")[2].endswith("| MDE | MDE at 3 |")
    assert float(sassl_linear[11].rstrip(" |")) == pytest.approx(min_detectable(1.0, 10), abs=0.006)  # sd 1
    assert float(elpv[11].rstrip(" |")) == pytest.approx(min_detectable(3.0, 10), abs=0.006)  # sd 3
    assert float(elpv[11].rstrip(" |")) < float(elpv[10])  # 10 pairs detect less than the 3 so far
    assert inv[11].strip(" |") == beta1_linear[11].strip(" |") == ""  # no spread: nothing to scale


def test_a_kept_run_is_not_trained_again_on_a_fresh_machine(tmp_path, monkeypatch):
    """runs/ is not tracked: on a fresh machine the sweep skips the runs whose files are kept (committed) and
    trains the others."""
    ev = _evidence(monkeypatch, tmp_path / "kept")
    monkeypatch.setattr(ev, "RUNS", tmp_path / "runs")
    trained = []
    monkeypatch.setattr(ev, "execute", lambda nb, out, params, cwd: trained.append((nb.name, params.get("name"))))
    monkeypatch.setattr(ev, "keep", lambda name: [])
    _kept(tmp_path / "kept", "pa-noise-s0", ev.SWEEP_RUNS["pa-noise-s0"], 40.0, 0.5)
    for name in ("pa-noise-s0", "pa-content-s0"):
        ev.run_one(name, ev.SWEEP_RUNS[name])
    assert trained == [("pretrain.ipynb", "pa-content-s0"), ("evaluate.ipynb", None)]


def test_old_reports_read_instruments_through_compare_and_keep_published_tables(tmp_path, monkeypatch):
    """robust-report / paper-report read a run's cosines through sassl.compare.instrument_rows (a stage row of the
    same change is not the output's invariance), and on a machine without their runs they leave the published
    table in RESULTS and the figure in docs/ as they are."""
    ev = _evidence(monkeypatch, tmp_path / "kept")
    monkeypatch.setattr(ev, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(ev, "ROOT", tmp_path)
    run = tmp_path / "runs" / "r18-base-s0"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "summary.json").write_text(json.dumps([{"target": "objects", "protocol": "linear", "top1_mean": 30.0}]))
    (run / "eval" / "results.json").write_text(json.dumps([{"target": "objects", "protocol": "stylized-linear", "drop": 4.0}]))
    (run / "eval" / "robustness.json").write_text(json.dumps([
        {"target": "objects", "protocol": "style_invariance", "kind": "style change", "beta": 1.0, "cos_mean": 0.6},
        {"target": "objects", "protocol": "style_invariance", "kind": "content change", "beta": None, "cos_mean": 0.3},
        {"target": "objects", "protocol": "style_decodability", "style_decodability": 0.99, "content_decodability": 0.5},
        {"target": "objects", "protocol": "stage_invariance", "kind": "content change (same class)", "beta": None,
         "stage": "layer1", "cos_mean": 0.9}]))
    (run / "metrics.json").write_text(json.dumps({"knn_top1": 33.0}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "knn_top1": k}) + "\n" for s, k in ((0, 31.0), (9, 33.0))))
    scores = ev._robust_scores(run)
    assert scores[("objects", "invariance beta=1.0")] == pytest.approx(0.6)
    assert scores[("objects", "invariance content")] == pytest.approx(0.3)  # not layer1's 0.9
    assert scores[("objects", "stylized-linear drop")] == 4.0 and scores[("objects", "knn monitor gain")] == 2.0
    (tmp_path / "docs").mkdir()
    published = "before\n<!-- paper-ablations:begin -->\n| published |\n<!-- paper-ablations:end -->\nafter\n"
    (tmp_path / "docs" / "RESULTS.md").write_text(published)
    assert "not run yet" in ev.paper_report()  # r18-base-s0 alone: 11 of 12 rows not run here
    assert (tmp_path / "docs" / "RESULTS.md").read_text() == published
    with pytest.raises(SystemExit, match="r18-sassl-s"):
        ev.robust_report()
    assert not (tmp_path / "docs" / "robust_tradeoff.png").exists()


def test_keep_from_a_study_folder_copies_the_small_files_and_summarises_the_augment_record(tmp_path, monkeypatch):
    """`evidence.py keep --from FOLDER NAME`: a trial trained in a study folder elsewhere leaves its small files and
    its augmentation summary under experiments/results/NAME; checkpoints and augment.bin stay behind."""
    import numpy as np

    from sassl.tracking import AUGMENT

    ev = _evidence(monkeypatch, tmp_path / "kept")
    src = tmp_path / "study" / "ev-base-s6"
    (src / "eval").mkdir(parents=True)
    (src / "checkpoints").mkdir()
    for rel, text in {"config.json": '{"seed": 6}', "metrics.json": '{"knn_top1": 42.0}', "metrics.jsonl": "{}\n",
                      "eval/summary.json": "[]", "eval/results.csv": "a\n1\n", "checkpoints/last.pt": "x"}.items():
        (src / rel).write_text(text)
    rec = np.zeros(8, AUGMENT)
    rec["step"], rec["stylized"], rec["alpha"], rec["beta"] = [1] * 4 + [2] * 4, [1, 0] * 4, 0.2, 0.15
    rec["loss"] = np.arange(8, dtype=np.float32)
    rec.tofile(src / "augment.bin")
    assert ev.main(["keep", "--from", str(tmp_path / "study"), "ev-base-s6"]) == 0
    out = tmp_path / "kept" / "ev-base-s6"
    for rel in ("config.json", "metrics.json", "metrics.jsonl", "eval/summary.json", "eval/results.csv"):
        assert (out / rel).read_text() == (src / rel).read_text(), rel
    assert not (out / "checkpoints").exists() and not (out / "augment.bin").exists()
    summary = {r["by"] + str(r["value"]): r for r in json.loads((out / "augment_summary.json").read_text())}
    assert summary["stylized1"]["images"] == 4 and summary["stylized0"]["images"] == 4
    # the stylized images' losses (0, 2 | 4, 6) sit 0.5 below their step's mean (1.5 | 5.5)
    assert summary["stylized1"]["excess_loss"] == pytest.approx(-0.5)

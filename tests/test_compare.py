"""Run comparison: grouping by variant over seeds, differences with Welch's t-test."""
import json

import pytest

from sassl.compare import collect_runs, compare_table, differences, to_markdown, variant_label


def _run(root, name, style, seed, knn, linear, **cfg):
    d = root / name
    (d / "eval").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"learner": "mocov2", "style": style, "seed": seed, "name": name,
                                               "p": 0.8, "alpha": [0.1, 0.3], "beta": [0.1, 0.3], "layers": 13} | cfg))
    (d / "metrics.json").write_text(json.dumps({"knn_top1": knn}))
    (d / "eval" / "summary.json").write_text(json.dumps([{"target": "objects", "protocol": "linear", "top1_mean": linear}]))


def test_variants_means_and_welch(tmp_path):
    for s, (k, lin) in enumerate([(30, 40.0), (31, 41.0), (32, 42.0)]):
        _run(tmp_path, f"base-s{s}", "none", s, k, lin)
    for s, (k, lin) in enumerate([(35, 50.0), (36, 51.0), (37, 52.0)]):
        _run(tmp_path, f"sassl-s{s}", "pbn", s, k, lin)
    _run(tmp_path, "beta1", "pbn", 0, 20, 30.0, beta=[1.0, 1.0])
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "config.json").write_text(json.dumps({"command": "demo"}))  # not a training run: skipped
    rows = collect_runs(tmp_path)
    table = compare_table(rows)
    lin = {r["variant"]: r for r in table if r["protocol"] == "linear"}
    assert set(lin) == {"mocov2 baseline", "mocov2 + SASSL(pbn)", "mocov2 + SASSL(pbn) beta=[1.0, 1.0]"}
    assert lin["mocov2 + SASSL(pbn)"]["top1_mean"] == 51.0 and lin["mocov2 + SASSL(pbn)"]["top1_std"] == 1.0
    diffs = {(d["variant"], d["protocol"]): d for d in differences(rows)}
    d = diffs[("mocov2 + SASSL(pbn)", "linear")]
    # naive Welch: means differ by 10, both sample variances 1, n = 3: t = 10 / sqrt(2/3) = 12.25, df = 4
    assert d["diff"] == 10.0 and d["p_value"] < 0.001 and d["verdict"] == "significant (p<0.05)"
    assert diffs[("mocov2 + SASSL(pbn) beta=[1.0, 1.0]", "linear")]["verdict"] == "n/a (<2 seeds)"
    assert "| variant |" in to_markdown(table, ["variant", "top1_mean"])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        collect_runs(tmp_path, ["nope"])
    assert variant_label({"learner": "byol", "style": "batch", "layers": 4}) == "byol + SASSL(batch) layers=4"


def test_runs_with_other_training_settings_are_their_own_variant(tmp_path):
    """Runs that differ in a training setting (here the target momentum, and a budget) are never pooled, and
    SASSL is compared with the baseline of the same settings."""
    from sassl.train import PretrainConfig

    slow = PretrainConfig.ema + 0.005
    for s in (0, 1):
        _run(tmp_path, f"base-s{s}", "none", s, 30, 40.0 + s)
        _run(tmp_path, f"sassl-s{s}", "pbn", s, 30, 42.0 + s)
        _run(tmp_path, f"slow-base-s{s}", "none", s, 30, 10.0 + s, ema=slow)
        _run(tmp_path, f"slow-sassl-s{s}", "pbn", s, 30, 20.0 + s, ema=slow)
    _run(tmp_path, "long", "pbn", 0, 30, 60.0, epochs=PretrainConfig.epochs * 2, num_workers=7, device="cuda")
    table = {r["variant"]: r for r in compare_table(collect_runs(tmp_path)) if r["protocol"] == "linear"}
    slow_label = f"mocov2 ema={slow}"
    assert set(table) == {"mocov2 baseline", "mocov2 + SASSL(pbn)", f"{slow_label} baseline",
                          f"{slow_label} + SASSL(pbn)", f"mocov2 epochs={PretrainConfig.epochs * 2} + SASSL(pbn)"}
    assert table[f"{slow_label} baseline"]["top1_mean"] == 10.5 and table["mocov2 baseline"]["top1_mean"] == 40.5
    diffs = {d["variant"]: d["diff"] for d in differences(collect_runs(tmp_path)) if d["protocol"] == "linear"}
    assert diffs == {"mocov2 + SASSL(pbn)": 2.0, f"{slow_label} + SASSL(pbn)": 10.0}

"""Issue 8's CPU-scale evidence, run through the workbench's own notebooks (papermill).

    python experiments/evidence.py core        # MoCo v2: default views vs SASSL (pbn), 3 seeds each
    python experiments/evidence.py ablations   # in-batch, beta = 1, noise, content, first 4/8/10 layers
    python experiments/evidence.py learners    # SimCLR and BYOL with and without SASSL, 2 seeds each
    python experiments/evidence.py compare     # compare.ipynb over every run -> runs/evidence/

Each run: notebooks/pretrain.ipynb -> runs/<name>/pretrain.ipynb, then notebooks/evaluate.ipynb ->
runs/<name>/evaluate.ipynb (targets objects, objects@test_shift, textures, elpv; kNN, linear probe,
1/10-shot). Finished runs are skipped, so a killed sweep resumes where it stopped; wall time per run
goes to runs/evidence/timing.jsonl.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"
NB = ROOT / "notebooks"

SASSL = {"style": "pbn"}
BASE = {"style": "none"}
SWEEPS = {
    "core": [(f"moco-{tag}-s{s}", {"learner": "mocov2", "seed": s} | kw)
             for s in (0, 1, 2) for tag, kw in (("base", BASE), ("sassl", SASSL))],
    "ablations": [(f"moco-{tag}-s0", {"learner": "mocov2", "seed": 0} | kw) for tag, kw in (
        ("batch", {"style": "batch"}), ("beta1", SASSL | {"beta": [1.0, 1.0]}), ("noise", {"style": "noise"}),
        ("content", {"style": "content"}), ("layers4", SASSL | {"layers": 4}), ("layers8", SASSL | {"layers": 8}),
        ("layers10", SASSL | {"layers": 10}))],
    "learners": [(f"{lr}-{tag}-s{s}", {"learner": lr, "seed": s} | kw)
                 for lr in ("simclr", "byol") for s in (0, 1) for tag, kw in (("base", BASE), ("sassl", SASSL))],
}
EVAL = {"targets": ["objects", "objects@test_shift", "textures", "elpv"], "protocols": ["knn", "linear", "fewshot"],
        "seeds": [0, 1, 2], "shots": [1, 10]}


def run_one(name: str, params: dict) -> None:
    run = RUNS / name
    if (run / "eval" / "summary.json").is_file():
        print(f"{name}: done already")
        return
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pm.execute_notebook(str(NB / "pretrain.ipynb"), str(run / "pretrain.ipynb"), parameters={"name": name} | params,
                        cwd=str(NB), progress_bar=False)
    t1 = time.time()
    pm.execute_notebook(str(NB / "evaluate.ipynb"), str(run / "evaluate.ipynb"), parameters={"encoder": name} | EVAL,
                        cwd=str(NB), progress_bar=False)
    (RUNS / "evidence").mkdir(exist_ok=True)
    with open(RUNS / "evidence" / "timing.jsonl", "a") as f:
        f.write(json.dumps({"run": name, "pretrain_s": round(t1 - t0, 1), "evaluate_s": round(time.time() - t1, 1)}) + "\n")
    print(f"{name}: {t1 - t0:.0f} s pre-training, {time.time() - t1:.0f} s evaluation", flush=True)


def main(argv: list[str]) -> int:
    if not argv or any(a not in (*SWEEPS, "compare") for a in argv):
        print(__doc__)
        return 2
    for what in argv:
        if what == "compare":
            (RUNS / "evidence").mkdir(exist_ok=True)
            done = [n for sweep in SWEEPS.values() for n, _ in sweep if (RUNS / n / "eval" / "summary.json").is_file()]
            pm.execute_notebook(str(NB / "compare.ipynb"), str(RUNS / "evidence" / "compare.ipynb"),
                                parameters={"name": "evidence", "runs": done}, cwd=str(NB), progress_bar=False)
            continue
        for name, params in SWEEPS[what]:
            run_one(name, params)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

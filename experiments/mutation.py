"""Mutation testing, one module at a time: `make mutation MODULE=sassl/optim.py` (or `python experiments/mutation.py
MODULE`). mutmut mutates MODULE only and runs the fast in-process tests that cover it (TESTS below, without the
ones marked slow: notebook and browser tests start kernels that import the installed package, not the mutated
copy, and multi-process tests start fresh interpreters, so they cannot count);
the counts and every survivor's diff go to docs/mutation/<module>.txt, so that no run has to be repeated.
Survivors are then killed by a new test or explained as equivalent in docs/TESTING.md."""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEARNER_TESTS = ["tests/core/test_losses_learners.py", "tests/core/test_core_pinned.py"]
TESTS = {
    "sassl/learners/losses.py": LEARNER_TESTS + ["tests/scale/test_device_semantics.py::test_losses_are_float32_under_bf16_autocast"],
    **{f"sassl/learners/{m}.py": LEARNER_TESTS for m in ("heads", "momentum", "mocov2", "mocov3", "byol", "simclr",
                                                          "__init__")},
    "sassl/stylizer/augment.py": ["tests/core/test_augment.py", "tests/core/test_core_pinned.py"],
    "sassl/views.py": ["tests/core/test_views.py", "tests/core/test_core_pinned.py"],
    "sassl/optim.py": ["tests/core/test_optim.py", "tests/core/test_core_pinned.py"],
    "sassl/eval/knn.py": ["tests/eval/test_eval.py", "tests/core/test_core_pinned.py"],
    "sassl/eval/linear.py": ["tests/eval/test_eval.py", "tests/core/test_core_pinned.py"],
    # fine-tuning's own tests (the evaluate() table test fine-tunes too, for seconds per mutant)
    "sassl/eval/finetune.py": ["tests/eval/test_eval.py::test_finetune_against_a_hand_written_one",
                               "tests/eval/test_eval.py::test_finetune_batches_boundaries_and_what_finetune_passes_on",
                               "tests/eval/test_eval.py::test_finetune_learns_and_leaves_backbone_untouched"],
    # the resume and checkpoint functions, one by one (the trainer's own tests train for seconds each)
    "sassl/training/run.py": ["tests/training/test_checkpoint.py"],
}
# modules whose mutants are counted in some functions only (fnmatch on mutmut's names, module.x_function__mutmut_N)
FUNCTIONS = {"sassl/training/run.py": ["open_run", "prune_metrics", "_comparable", "save_checkpoint", "load_checkpoint"]}
CONFIG = """[mutmut]
source_paths =
    sassl
only_mutate =
    {module}
pytest_add_cli_args_test_selection =
{tests}
pytest_add_cli_args =
    -p
    no:cacheprovider
    -m
    not slow
"""


def result_file(module: str) -> Path:
    """docs/mutation/<module>.txt, where a module's run is kept."""
    out = ROOT / "docs" / "mutation" / (module.replace("/", "_").removesuffix(".py") + ".txt")
    out.parent.mkdir(exist_ok=True)
    return out


def header(module: str) -> str:
    """The result file's first lines: what was mutated and which tests ran."""
    scope = f"functions: {' '.join(FUNCTIONS[module])}\n" if module in FUNCTIONS else ""
    return f"module: {module}\n{scope}tests: {' '.join(TESTS[module])}\n"


def run(module: str) -> Path:
    if module not in TESTS:
        raise SystemExit(f"MODULE: one of {', '.join(TESTS)}; add its tests to TESTS in {__file__}")
    cfg = ROOT / "setup.cfg"
    if cfg.exists():
        raise SystemExit(f"{cfg} exists; this script writes its own for the run and removes it after")
    cfg.write_text(CONFIG.format(module=module, tests="\n".join("    " + t for t in TESTS[module])))
    try:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        dotted = module.removesuffix(".py").replace("/", ".")
        only = [f"{dotted}.x_{fn}__mutmut_*" for fn in FUNCTIONS.get(module, [])]
        r = subprocess.run([str(Path(sys.executable).parent / "mutmut"), "run", *only], cwd=ROOT, capture_output=True,
                           text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
        if r.returncode:  # e.g. no mutant reached by the tests: mutmut skips decorated functions
            note = r.stdout.strip().splitlines()[-4:]
            out = result_file(module)
            out.write_text(header(module) + "mutmut stopped: " + " ".join(note) + "\n")
            print(out.read_text())
            return out
        res = subprocess.run([str(Path(sys.executable).parent / "mutmut"), "results", "--all", "true"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        rows = [line.strip().rsplit(": ", 1) for line in res.splitlines() if ": " in line]
        if only:
            rows = [(n, st) for n, st in rows if any(fnmatch.fnmatch(n, p) for p in only)]
        counts: dict[str, int] = {}
        for _, status in rows:
            counts[status] = counts.get(status, 0) + 1
        survivors = [name for name, status in rows if status == "survived"]
        diffs = [subprocess.run([str(Path(sys.executable).parent / "mutmut"), "show", name], cwd=ROOT,
                                capture_output=True, text=True).stdout for name in survivors]
    finally:
        cfg.unlink()
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    out = result_file(module)
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    total = sum(counts.values())
    out.write_text(header(module) + f"counts: {json.dumps(counts)}\n"
                   f"killed: {killed} of {total} ({100 * killed / max(1, total):.1f}%)\n\n"
                   + "\n".join(f"## {n}\n{d}" for n, d in zip(survivors, diffs)))
    print(out.read_text().split("\n\n")[0])
    return out


if __name__ == "__main__":
    for m in sys.argv[1:] or TESTS:
        run(m)

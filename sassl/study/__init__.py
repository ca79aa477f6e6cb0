"""Studies: a researcher's question (arms x seeds, a budget, outcomes named in advance, comparisons) in one TOML
file, answered by `sassl study run|status|report FILE`.

spec.py (the study file and its validation), runner.py (trials in lanes, locks, resumption: the folder is the
database), report.py (status, the paired report, the forest plot).
"""
from sassl.study.report import status_rows, write_report
from sassl.study.runner import run_study
from sassl.study.spec import load_study

__all__ = ["load_study", "run_study", "status_rows", "write_report"]

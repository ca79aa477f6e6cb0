"""A study file: the question (arms x seeds, a shared pre-training budget, the evaluation, the comparisons and
the primary outcomes named in advance), read with the standard library's TOML parser and validated before
anything runs. Every error names the key and what would fix it.

    name = "sassl-vs-moco"            # the study folder: <runs-dir>/<name>/
    seeds = [0, 1, 2, 3, 4]
    primary = ["objects/linear", "objects/knn"]   # named before any result; Holm within them

    [pretrain]                        # any `sassl pretrain` setting (PretrainConfig field), for every arm
    learner = "mocov2"

    [arms.baseline]                   # each arm: overrides of [pretrain]
    style = "none"

    [arms.sassl]
    style = "pbn"

    [evaluate]                        # any `sassl evaluate` setting (EvalConfig field)
    targets = ["objects", "elpv"]
    protocols = ["knn", "linear"]

    [[compare]]                       # each comparison: arm minus against, paired by seed
    arm = "sassl"
    against = "baseline"

A trial is (arm, seed): an ordinary run folder <runs-dir>/<name>/<arm>-s<seed>/ trained by the pretrain notebook
and evaluated by the evaluate notebook, as `sassl notebook` runs them.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sassl.compare import parse_outcomes
from sassl.config import from_dict, plain
from sassl.eval.evaluate import PROTOCOL_ROWS, EvalConfig
from sassl.training import PretrainConfig, config_from_dict

KEYS = ("name", "seeds", "primary", "pretrain", "arms", "evaluate", "compare", "description", "folder")
STUDY_OWNS = ("name", "seed", "runs_dir")  # pretrain settings the study sets for each trial
EVAL_OWNS = ("encoder", "runs_dir", "out")  # evaluate settings the study sets for each trial
# outcome rows named otherwise than the protocol that makes them: the instruments (sassl.compare.instrument_rows);
# few-shot rows are "1-shot", "10-shot", ..., the stylized protocol's "stylized-knn" and "stylized-linear"
INSTRUMENT_OF = {"invariance": "style_invariance", "stage": "stage_invariance", "style decodability": "style_decodability",
                 "content decodability": "style_decodability", "shape bias": "shape_bias"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Trial:
    """One (arm, seed): its run folder's name and the settings its two notebooks get."""

    arm: str
    seed: int
    pretrain: dict  # the pretrain notebook's parameters (settings given, plus name, seed, runs_dir)
    evaluate: dict  # the evaluate notebook's parameters

    @property
    def name(self) -> str:
        return f"{self.arm}-s{self.seed}"


@dataclass(frozen=True)
class Study:
    """A validated study file. `resolved` holds each trial's full configs (every default filled in): what the
    trial computes, compared with the study folder's copy before a later run."""

    path: Path
    name: str
    seeds: tuple[int, ...]
    arms: dict[str, dict]
    pretrain: dict
    evaluate: dict
    compare: tuple[tuple[str, str], ...]  # (arm, against)
    primary: tuple[tuple[str, str], ...]  # (target, protocol)
    arm_seeds: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)  # arms run at fewer seeds
    folder: str = ""  # the study folder relative to the file; "": <runs-dir>/<name>

    def dir(self, runs_dir: str | Path) -> Path:
        """The study's folder, absolute (the notebooks run in notebooks/, the user's shell elsewhere): `folder`
        beside the study file when the file names one, else <runs-dir>/<name>."""
        folder = self.path.parent / self.folder if self.folder else Path(runs_dir) / self.name
        return Path(os.path.abspath(folder))

    def trials(self, runs_dir: str | Path) -> list[Trial]:
        """Every trial, seed-major (seed 0 of every arm, then seed 1, ...): a study cut short is a smaller paired
        study, not an unpaired one."""
        folder = str(self.dir(runs_dir))
        return [Trial(arm, seed, self.pretrain | over | {"name": f"{arm}-s{seed}", "seed": seed, "runs_dir": folder},
                      self.evaluate | {"encoder": f"{arm}-s{seed}", "runs_dir": folder})
                for seed in self.seeds for arm, over in self.arms.items() if seed in self.arm_seeds.get(arm, self.seeds)]

    def resolved(self) -> dict:
        """What the study computes, as plain data: each trial's resolved pretrain and evaluate configs (run-folder
        independent), the comparisons and the primary outcomes."""
        out = {"primary": [f"{t}/{p}" for t, p in self.primary], "compare": [list(c) for c in self.compare],
               "trials": {}}
        for t in self.trials("."):
            pre = plain(dataclasses.asdict(config_from_dict({k: v for k, v in t.pretrain.items() if k != "runs_dir"})))
            ev = plain(dataclasses.asdict(from_dict(EvalConfig, {k: v for k, v in t.evaluate.items() if k != "runs_dir"})))
            out["trials"][t.name] = {"pretrain": pre, "evaluate": ev}
        return out


def _fail(path: Path, key: str, message: str) -> None:
    raise ValueError(f"{path}: {key}: {message}")


def _table(path: Path, data: dict, key: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        _fail(path, key, f"expected a table ([{key}]), got {type(value).__name__}")
    return value


def _settings(path: Path, key: str, values: dict, fields: set[str], owned: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(values) - fields)
    if unknown:
        _fail(path, key, f"unknown {what} setting(s) {unknown}; see `sassl {what} --help` for the settings")
    taken = sorted(set(values) & set(owned))
    if taken:
        _fail(path, key, f"{taken} are set by the study for each trial; remove them")


def _arms(path: Path, arms: dict, fields: set[str], seeds: list[int]) -> tuple[dict, dict]:
    """The arms' pretrain overrides, and the seeds of the arms that run at fewer seeds (an arm's own `seeds`,
    a subset of the study's)."""
    if len(arms) < 2:
        _fail(path, "arms", f"at least two arms ([arms.NAME] tables) are needed, got {list(arms)}")
    for arm, over in arms.items():
        if not NAME.match(arm):
            _fail(path, f"arms.{arm}", "an arm's name must be a folder name (letters, digits, '.', '_', '-')")
        if not isinstance(over, dict):
            _fail(path, f"arms.{arm}", "expected a table of pretrain settings")
        own = over.get("seeds", seeds)
        if (not isinstance(own, list) or len(own) < 2 or not all(isinstance(x, int) for x in own)
                or not set(own) <= set(seeds)):
            _fail(path, f"arms.{arm}.seeds", f"an arm's seeds are two or more of the study's seeds {seeds}, got {own!r}")
        _settings(path, f"arms.{arm}", {k: v for k, v in over.items() if k != "seeds"}, fields, STUDY_OWNS, "pretrain")
    return ({a: {k: v for k, v in o.items() if k != "seeds"} for a, o in arms.items()},
            {a: tuple(o["seeds"]) for a, o in arms.items() if "seeds" in o})


def _comparisons(path: Path, compare, arms: dict) -> list[tuple[str, str]]:
    if not isinstance(compare, list) or not compare:
        _fail(path, "compare", "at least one [[compare]] table (arm = ..., against = ...) is needed")
    pairs = []
    for i, c in enumerate(compare):
        if not isinstance(c, dict) or set(c) != {"arm", "against"}:
            _fail(path, f"compare[{i}]", f"expected exactly the keys arm and against, got {c!r}")
        for k in ("arm", "against"):
            if not isinstance(c[k], str) or c[k] not in arms:
                _fail(path, f"compare[{i}].{k}", f"no arm named {c[k]!r}; the arms are {list(arms)}")
        if c["arm"] == c["against"]:
            _fail(path, f"compare[{i}]", "an arm compared against itself")
        pairs.append((c["arm"], c["against"]))
    return pairs


def _check_outcomes(path: Path, primary: list[tuple[str, str]], pretrain_dataset: set[str], evaluate: EvalConfig) -> None:
    """Each primary outcome must be one that a trial produces: an evaluated target and protocol, an instrument of
    an evaluated protocol, or the pre-training kNN monitor ("DATASET/knn (monitor)")."""
    for target, protocol in primary:
        where = f"'{target}/{protocol}'"
        if protocol == "knn (monitor)":
            if target not in pretrain_dataset:
                _fail(path, "primary", f"{where}: the kNN monitor runs on the pre-training dataset "
                                       f"({', '.join(sorted(pretrain_dataset))}), not {target!r}")
            continue
        if target not in evaluate.targets:
            _fail(path, "primary", f"{where}: target {target!r} is not evaluated; [evaluate] targets are "
                                   f"{list(evaluate.targets)}")
        source = ("fewshot" if protocol.endswith("-shot") else "stylized" if protocol.startswith("stylized-") else
                  next((p for prefix, p in INSTRUMENT_OF.items() if protocol.startswith(prefix)), protocol))
        if source not in PROTOCOL_ROWS:
            _fail(path, "primary", f"{where}: no protocol or instrument is called {protocol!r}; protocols: "
                                   f"{', '.join(PROTOCOL_ROWS)}")
        if source not in evaluate.protocols:
            _fail(path, "primary", f"{where}: needs {source!r} among [evaluate] protocols (now "
                                   f"{list(evaluate.protocols)}); add it or name another outcome")


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; ValueError names the file, the key and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such study file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        _fail(path, ", ".join(unknown), f"unknown key(s); a study file has {', '.join(KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        _fail(path, "name", f"a folder name (letters, digits, '.', '_', '-') is needed, got {name!r}")
    seeds = data.get("seeds")
    if (not isinstance(seeds, list) or len(seeds) < 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            or len(set(seeds)) != len(seeds)):
        _fail(path, "seeds", f"at least two different seeds (integers >= 0) are needed for a paired comparison, "
                             f"got {seeds!r}")
    pretrain = _table(path, data, "pretrain")
    pre_fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    _settings(path, "pretrain", pretrain, pre_fields, STUDY_OWNS, "pretrain")
    arms, arm_seeds = _arms(path, _table(path, data, "arms"), pre_fields, seeds)
    evaluate = _table(path, data, "evaluate")
    _settings(path, "evaluate", evaluate, {f.name for f in dataclasses.fields(EvalConfig)}, EVAL_OWNS, "evaluate")
    pairs = _comparisons(path, data.get("compare"), arms)
    primary = data.get("primary", [])
    if not isinstance(primary, list) or not primary:
        _fail(path, "primary", "name at least one outcome as 'TARGET/PROTOCOL' before any result exists")
    try:
        outcomes = parse_outcomes(primary, "primary")
    except ValueError as e:
        _fail(path, "primary", str(e))
    folder = data.get("folder", "")
    if not isinstance(folder, str):
        _fail(path, "folder", f"a path relative to the study file, got {folder!r}")
    study = Study(path, name, tuple(seeds), arms, dict(pretrain), dict(evaluate), tuple(pairs), tuple(outcomes),
                  arm_seeds, folder)
    try:  # every trial's settings resolve (learner, recipe, ranges, types): the configs' own checks
        resolved = study.resolved()
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    datasets = {t["pretrain"]["dataset"] for t in resolved["trials"].values()}
    _check_outcomes(path, list(outcomes), datasets, from_dict(EvalConfig, evaluate))
    return study

"""Bad input, generated (hypothesis): any value for any setting of `sassl pretrain`, `sassl evaluate` and a study
file is either a valid config or a ValueError that names the setting; never another exception."""
import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sassl.config import from_dict
from sassl.eval.evaluate import EvalConfig
from sassl.training.config import PretrainConfig, config_from_dict

# values of every JSON/TOML kind, the odd ones included (NaN, inf, huge ints, empty and nested lists)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["", "none", "pbn", "mocov2", "resnet18", "cpu", "0", "-1", "nan", "1e9"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4), st.lists(st.lists(SCALARS, max_size=2), max_size=2))
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _names_the_field(message: str, name: str) -> bool:
    return name in message or name.replace("_", "-") in message


PER_FIELD = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])


def _of_its_type(cls, name):
    """Values near the field's own type (its default's kind, bounds and signs), and values of any kind."""
    default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
    near = VALUES
    if isinstance(default, bool):
        near = st.booleans()
    elif isinstance(default, int):
        near = st.integers(min_value=-3, max_value=10**9)
    elif isinstance(default, float):
        near = st.floats(allow_nan=True, allow_infinity=True)
    elif isinstance(default, tuple):
        near = st.lists(st.one_of(st.floats(-2, 2), st.integers(-2, 20), st.text(max_size=8)), max_size=3)
    return st.one_of(near, VALUES)


def _checked_eval(values: dict) -> EvalConfig:
    """An EvalConfig as `sassl evaluate` checks it before any data is loaded."""
    from sassl.eval.evaluate import _check

    cfg = from_dict(EvalConfig, values)
    _check(cfg)
    return cfg


def _config_or_error_naming(build, name: str, value) -> None:
    """build() returns a config whose `name` holds only finite numbers, or raises a ValueError naming `name`."""
    try:
        cfg = build()
    except ValueError as e:
        assert _names_the_field(str(e), name), f"{name}={value!r}: {e}"
        return
    got = getattr(cfg, name)
    for v in (got if isinstance(got, tuple) else (got,)):  # a number that passed is one a run can use
        assert not (isinstance(v, float) and not math.isfinite(v)), f"{name}={value!r} accepted as {got!r}"


BUILD = {PretrainConfig: config_from_dict, EvalConfig: _checked_eval}  # how each command checks its settings


@pytest.mark.parametrize("cls, name", [(cls, f.name) for cls in BUILD for f in dataclasses.fields(cls)],
                         ids=lambda v: v.__name__ if isinstance(v, type) else v)
@PER_FIELD
@given(data=st.data())
def test_any_setting_is_a_config_or_an_error_naming_it(cls, name, data):
    """config_from_dict is what `sassl pretrain`, the notebooks and study files go through; _checked_eval what
    `sassl evaluate` checks before loading anything."""
    value = data.draw(_of_its_type(cls, name))
    _config_or_error_naming(lambda: BUILD[cls]({name: value}), name, value)


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)


@SLOW
@given(st.sampled_from(["pretrain", "evaluate"]), st.data())
def test_any_flag_value_on_the_command_line_parses_or_is_refused_by_name(command, data):
    """The real parser of `sassl pretrain|evaluate` with one flag and any text: argparse's refusal (exit 2,
    naming the flag) or the config's ValueError naming it; nothing else. Nothing trains: the config is built
    the way the handler builds it, without the handler."""
    import argparse

    from sassl.cli import COMMANDS, _config_values

    cls = PretrainConfig if command == "pretrain" else EvalConfig
    name = data.draw(st.sampled_from([f.name for f in dataclasses.fields(cls)]))
    text = data.draw(st.one_of(TEXT, st.sampled_from(["nan", "inf", "-1", "0", "1e400", "a,b", "0.5,0.1", "[]"])))
    ap = argparse.ArgumentParser(prog="sassl", exit_on_error=False)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for add in COMMANDS:
        add(sub)
    flag = "--" + name.replace("_", "-")
    try:
        args = ap.parse_args([command, flag, text] + (["--encoder", "r"] if command == "evaluate" and name != "encoder" else []))
    except SystemExit as e:  # argparse refused it, with its own message naming the flag
        assert e.code == 2
        return
    except argparse.ArgumentError as e:
        assert flag in str(e) or name in str(e), str(e)
        return
    values = _config_values(args, cls)
    _config_or_error_naming(lambda: BUILD[cls](values), name, text)


STUDY_KEYS = ["name", "seeds", "primary", "folder", "description"]


@SLOW
@given(st.sampled_from(STUDY_KEYS + ["pretrain.epochs", "pretrain.lr", "pretrain.style", "arms.b.style",
                                     "arms.b.seeds", "evaluate.targets", "evaluate.protocols", "compare.arm"]),
       VALUES)
def test_any_study_value_is_a_study_or_an_error_naming_its_key(tmp_path_factory, key, value):
    """A study file with one key set to any value: load_study accepts it or names the key."""

    from sassl.study.spec import load_study

    study = {"name": "s", "seeds": [0, 1], "primary": ["objects/knn"], "pretrain": {"epochs": 1},
             "arms": {"a": {"style": "none"}, "b": {"style": "pbn"}},
             "evaluate": {"targets": ["objects"], "protocols": ["knn"]}, "compare": [{"arm": "b", "against": "a"}]}
    where, leaf = (key.rsplit(".", 1) if "." in key else ("", key))
    node = study
    for part in where.split(".") if where else []:
        node = node[part] if not isinstance(node.get(part), list) else node[part][0]
    if value is None:
        node.pop(leaf, None)  # TOML has no null: a missing key
    else:
        node[leaf] = value
    text = _toml(study)
    if text is None:
        return  # a value TOML cannot hold (nested mixed lists): no file to parse
    path = tmp_path_factory.mktemp("s") / "study.toml"
    path.write_text(text)
    try:
        load_study(path)
    except ValueError as e:
        assert leaf in str(e) or key in str(e) or "study.toml" in str(e), f"{key}={value!r}: {e}"


def _toml(d: dict, prefix: str = "") -> str | None:
    """A small TOML writer for the test's dicts (tables, arrays of tables, scalars and lists)."""
    import json

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            items = [val(x) for x in v if x is not None]
            return None if None in items else "[" + ", ".join(items) + "]"
        return None

    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for x in v:
                body = _toml(x)
                if body is None:
                    return None
                lines.append(f"[[{prefix}{k}]]\n{body}")
        else:
            s = val(v)
            if s is None:
                return None
            lines.insert(0, f"{k} = {s}")
    for k, v in tables:
        body = _toml({kk: vv for kk, vv in v.items() if not isinstance(vv, dict)})
        if body is None:
            return None
        lines.append(f"[{prefix}{k}]\n{body}")
        for kk, vv in v.items():
            if isinstance(vv, dict):
                sub = _toml(vv)
                if sub is None:
                    return None
                lines.append(f"[{prefix}{k}.{kk}]\n{sub}")
    return "\n".join(lines)

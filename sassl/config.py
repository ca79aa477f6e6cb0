"""Flat dataclass configs from dicts (notebook parameters, JSON files, CLI flags), type-checked.

A tuple field whose default is two numbers is a (min, max) range and takes exactly two numbers;
any other tuple field takes a list of one or more values of its default's element type."""
from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any


def plain(values: dict) -> dict:
    """A config dict with tuples as lists, as it reads back from config.json."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def is_range(default: Any) -> bool:
    """A (min, max) range field: its default is a tuple of two floats."""
    return isinstance(default, tuple) and len(default) == 2 and all(isinstance(e, float) for e in default)


def check_range(name: str, r: Any, positive: bool = False) -> tuple[float, float]:
    """A (min, max) range within [0, 1] (min > 0 with `positive`), as floats; the one check and message
    for alpha, beta and crop_scale wherever they come from."""
    try:
        lo, hi = (float(v) for v in r)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a (min, max) pair, got {r!r}") from None
    if not (0.0 <= lo <= hi <= 1.0) or (positive and lo <= 0):
        raise ValueError(f"{name}: need {'0 < min' if positive else '0 <= min'} <= max <= 1, got ({lo}, {hi})")
    return lo, hi


def coerce(key: str, v: Any, default: Any) -> Any:
    """v checked against the type of `default` (ints -> float where a float is expected, lists -> tuples);
    ValueError naming `key` otherwise."""
    def fail():
        raise ValueError(f"parameter {key!r}: expected {type(default).__name__} like {default!r}, got {v!r}")

    if isinstance(default, bool):
        return v if isinstance(v, bool) else fail()
    if isinstance(default, int):
        return v if isinstance(v, int) and not isinstance(v, bool) else fail()
    if isinstance(default, float):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
            raise ValueError(f"parameter {key!r}: expected a finite number like {default!r}, got {v!r}")
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else fail()
    if isinstance(default, tuple):
        if isinstance(v, str) or not isinstance(v, (list, tuple)):
            fail()
        if is_range(default):
            if len(v) != 2:
                fail()
            return tuple(coerce(key, e, 0.0) for e in v)
        if not v:
            fail()
        return tuple(coerce(key, e, default[0]) for e in v) if default else tuple(v)
    return v if isinstance(v, str) else fail()


def check_bounds(cfg: Any, bounds: dict[str, str]) -> None:
    """Each named numeric setting of `cfg` inside its interval, written as '>0', '>=0', '>=1', '[0,1]' or
    '(0,1]'; ValueError naming the setting otherwise."""
    for name, interval in bounds.items():
        v = getattr(cfg, name)
        if interval.startswith(">="):
            ok = v >= float(interval[2:])
        elif interval.startswith(">"):
            ok = v > float(interval[1:])
        else:
            lo, hi = (float(x) for x in interval[1:-1].split(","))
            ok = (v >= lo if interval[0] == "[" else v > lo) and (v <= hi if interval[-1] == "]" else v < hi)
        if not ok:
            said = interval if interval[0] in "[(" else interval.replace(">=", ">= ") if ">=" in interval else \
                interval.replace(">", "> ")
            raise ValueError(f"{name}: must be {said}, got {v!r}")


def parse_bool(v: str) -> bool:
    """A flag's true/false (1/0, yes/no); anything else is argparse's error naming the value."""
    if v.lower() in ("1", "true", "yes"):
        return True
    if v.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def from_dict(cls, values: dict):
    """cls(**values) after checking names and types; ValueError names the offending parameter."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; known: {', '.join(fields)}")
    return cls(**{k: coerce(k, v, fields[k].default) for k, v in values.items()})


def setting(default: Any, help: str) -> Any:
    """A config field with its default and its one-line help: `sassl pretrain --help` / `sassl evaluate --help`
    print it, and the docs and the notebooks' parameter checks read it (field_help)."""
    return dataclasses.field(default=default, metadata={"help": help})


def field_help(cls) -> dict[str, str]:
    """Each field's help text (`setting(default, help)`); fields without one map to ""."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

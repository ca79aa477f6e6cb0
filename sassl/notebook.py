"""Helpers that keep the notebooks thin: parameter checking, where runs live, small HTML tables."""
from __future__ import annotations

import html
import os
from pathlib import Path


def runs_root(start: str | os.PathLike | None = None) -> Path:
    """The workbench's runs/ folder: $SASSL_RUNS, else the nearest runs/ (holding README.md) at or above
    the current directory (notebooks run with notebooks/ as their directory), else ./runs."""
    if os.environ.get("SASSL_RUNS"):
        return Path(os.environ["SASSL_RUNS"])
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "runs" / "README.md").is_file():
            return d / "runs"
    return here / "runs"


def config_from_cells(namespace: dict, names_before: set, cls, notebook_only: dict | None = None):
    """The config a notebook's parameters cell (plus papermill's injected cell) describes.

    namespace: globals(); names_before: set(globals()) taken before the parameters cell. Every new
    plain value (modules, classes and functions imported meanwhile are ignored) must be a field of
    `cls` or a key of `notebook_only` (name -> default); an unknown name or a wrong type raises
    ValueError naming it. Returns (config, {notebook-only values})."""
    import dataclasses
    import inspect

    from sassl.config import coerce, from_dict

    fields = {f.name for f in dataclasses.fields(cls)}
    notebook_only = notebook_only or {}
    new = {k: v for k, v in namespace.items()  # parameters are plain values; imports of the cell are not
           if k not in names_before and not k.startswith("_") and not (inspect.ismodule(v) or callable(v))}
    unknown = sorted(set(new) - fields - set(notebook_only))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}; known: {', '.join(sorted(fields | set(notebook_only)))}")
    extra = {k: coerce(k, new.get(k, default), default) for k, default in notebook_only.items()}
    values = {k: v for k, v in new.items() if k in fields}
    return from_dict(cls, values), extra


def html_table(rows: list[dict], columns: list[str] | None = None, digits: int = 2) -> str:
    """A plain HTML table of dict rows (for IPython.display.HTML)."""
    if not rows:
        return "<p>(no rows)</p>"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v):
        return "" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

"""Helpers that keep the notebooks thin: parameter checking, where runs live, small HTML tables."""
from __future__ import annotations

import html
import sys
import os
from collections.abc import Callable
from pathlib import Path

from sassl.config import coerce, from_dict
from sassl.eval.evaluate import EvalConfig, default_out
from sassl.eval.report import eval_report
from sassl.records import terminal_line


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


def config_from_cells(namespace: dict, names_before: set, cls, notebook_only: dict | None = None,
                      resolve: Callable[[dict], object] | None = None):
    """The config a notebook's parameters cell (plus papermill's injected cell) describes.

    namespace: globals(); names_before: set(globals()) taken before the parameters cell. Every new
    plain value (modules, classes and functions imported meanwhile are ignored) must be a field of
    `cls` or a key of `notebook_only` (name -> default); an unknown name or a wrong type raises
    ValueError naming it. `resolve`: the config's own builder from the settings given (pretrain: layers the
    learner's settings and a recipe under them); else cls(**values). Returns (config, {notebook-only values})."""
    import dataclasses
    import inspect

    fields = {f.name for f in dataclasses.fields(cls)}
    notebook_only = notebook_only or {}
    new = {k: v for k, v in namespace.items()  # parameters are plain values; imports of the cell are not
           if k not in names_before and not k.startswith("_") and not (inspect.ismodule(v) or callable(v))}
    unknown = sorted(set(new) - fields - set(notebook_only))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}; known: {', '.join(sorted(fields | set(notebook_only)))}")
    extra = {k: coerce(k, new.get(k, default), default) for k, default in notebook_only.items()}
    values = {k: v for k, v in new.items() if k in fields}
    if resolve is not None:
        # NOTE: a notebook's parameters cell holds every default, so only the parameters that differ from their
        # defaults count as given (and win over the layers under them: the learner's own settings, a recipe)
        defaults = dataclasses.asdict(cls())
        values = {k: v for k, v in values.items() if coerce(k, v, defaults[k]) != defaults[k]}
        return resolve(values), extra
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


NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_path(notebook: str | os.PathLike) -> Path:
    """A notebook file, or the name of one of the workbench's notebooks ('pretrain', 'evaluate', ...)."""
    p = Path(notebook)
    if p.suffix == ".ipynb" and p.is_file():
        return p
    named = NOTEBOOKS / (p.name if p.suffix == ".ipynb" else p.name + ".ipynb")
    if not named.is_file():
        known = ", ".join(sorted(q.stem for q in NOTEBOOKS.glob("*.ipynb")))
        raise FileNotFoundError(f"notebook {str(notebook)!r}: no such file, and not one of the workbench's ({known})")
    return named


def parameter_defaults(path: Path) -> dict:
    """The names and default values of a notebook's parameters cell (the cell tagged 'parameters')."""
    import ast
    import json

    cells = json.loads(Path(path).read_text())["cells"]
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    body = ast.parse("".join(cell["source"])).body
    return {t.id: ast.literal_eval(node.value) for node in body if isinstance(node, ast.Assign) for t in node.targets}


def eval_folder_of(path: Path, params: dict) -> Path | None:
    """Where an evaluation notebook (one with an `encoder` and no run `name`) writes its tables, else None."""
    values = parameter_defaults(path) | params
    if "encoder" not in values or "name" in values:
        return None
    root = Path(values.get("runs_dir") or runs_root(path.parent))
    return default_out(EvalConfig(encoder=str(values["encoder"]), runs_dir=str(root), out=str(values.get("out", ""))))


def run_folder_of(path: Path, params: dict) -> Path:
    """Where a notebook run's results go, as the notebook itself decides: runs/<name> for pretrain,
    style_tsne and compare; the encoder's run folder (or runs/eval-<encoder>) for evaluate."""
    out = eval_folder_of(path, params)
    if out is not None:
        return out.parent if out.name == "eval" else out
    values = parameter_defaults(path) | params
    return Path(values.get("runs_dir") or runs_root(path.parent)) / str(values.get("name", path.stem))


def kernel_manager_class():
    """The kernel manager `execute` runs notebooks with: the kernel on Unix sockets in the user's private
    Jupyter runtime folder (mode 0700) instead of localhost TCP, where any local user can reach it (ipykernel
    warns about that on every run). Each kernel's sockets get a name of their own there.
    NOTE: jupyter_client's own ipc default names them kernel-ipc-1, -2, ... in the current directory, found
    free by looking for the file: two notebooks started at once from the same directory (two sweeps side by
    side) took the same names and one kernel answered the other's client ("Invalid Signature", then
    "Kernel didn't respond")."""
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import default

    class PrivateKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            runtime = Path(jupyter_runtime_dir())
            runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
            # a socket path holds at most 107 bytes: 12 hex digits keep it short under a long $HOME
            return str(runtime / f"sassl-{uuid.uuid4().hex[:12]}-ipc")

    return PrivateKernelManager


def execute(src: str | os.PathLike, dest: str | os.PathLike, params: dict, cwd: str | os.PathLike | None = None):
    """papermill's execute_notebook (no progress bar, the kernel's output kept in the notebook) on a private
    kernel (kernel_manager_class). Returns the executed notebook."""
    import papermill as pm

    return pm.execute_notebook(str(src), str(dest), parameters=params, cwd=None if cwd is None else str(cwd),
                               progress_bar=False, log_output=False, kernel_manager_class=kernel_manager_class())


def run_notebook(notebook: str | os.PathLike, params: dict, out: str | os.PathLike | None = None) -> Path:
    """Execute a notebook with papermill into its run folder (created), as `sassl notebook` does; returns
    the executed notebook's path. Progress lines of long cells reach the terminal (sassl.records.terminal_line)."""
    src = notebook_path(notebook)
    unknown = sorted(set(params) - set(parameter_defaults(src)))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {src.name}; known: {', '.join(parameter_defaults(src))}")
    dest = Path(out) if out else run_folder_of(src, params) / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    terminal_line(f"running {src} -> {dest}")
    execute(src, dest, params, cwd=src.parent)
    evaluated = eval_folder_of(src, params)
    if evaluated is not None and (evaluated / "summary.json").is_file():  # its numbers, the random-init baseline beside
        terminal_line(eval_report(evaluated))
    terminal_line(f"executed notebook: {dest}\nrun folder: {dest.parent}")
    return dest


def lab_command(host: str = "127.0.0.1", port: int = 8888, browser: bool = True, token: str | None = None,
                root: str | os.PathLike | None = None, extra: list[str] | None = None) -> list[str]:
    """The JupyterLab command `sassl lab` runs: this environment's Python (so its kernel has sassl), the
    workbench as root (notebooks/ and runs/ both reachable), opened on notebooks/, on loopback with a token."""
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.ip={host}", f"--ServerApp.port={port}",
           f"--ServerApp.root_dir={root or NOTEBOOKS.parent}", "--ServerApp.default_url=/lab/tree/notebooks"]
    if token is not None:
        cmd.append(f"--IdentityProvider.token={token}")  # default: a random token, printed with the URL
    if not browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--ServerApp.allow_root=True")  # containers and CI run as root; Jupyter refuses without it
    return cmd + list(extra or [])

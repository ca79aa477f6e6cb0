"""The package's import graph: sassl's own imports at the top of each module, and no circles."""
import ast
from pathlib import Path

PKG = Path(__file__).parents[2] / "sassl"
LAZY_OK = {("sassl.cli", "sassl.app")}  # the Gradio app: seconds to import, only `sassl app` needs it


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        name = ".".join(f.relative_to(PKG.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    return mods


def _imports(mods: dict[str, Path]):
    """(module, imported sassl module, at top level?) for every import statement of sassl's own."""
    for name, f in mods.items():
        tree = ast.parse(f.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sassl":
                targets = {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                           for a in node.names}
            elif isinstance(node, ast.Import):
                targets = {a.name for a in node.names if a.name.split(".")[0] == "sassl"}
            else:
                continue
            for t in targets:
                yield name, t, id(node) in top


def test_sassl_imports_sit_at_the_top_of_each_module():
    inner = {(m, t) for m, t, top in _imports(_modules()) if not top} - LAZY_OK
    assert not inner, f"function-level imports of sassl's own modules: {sorted(inner)}"


def test_no_import_circles():
    mods = _modules()
    graph: dict[str, set] = {m: set() for m in mods}
    for m, t, _ in _imports(mods):
        if t in mods and t != m:
            graph[m].add(t)
    seen, on_path, circles = set(), [], []

    def visit(m):
        if m in on_path:
            circles.append(on_path[on_path.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for t in sorted(graph[m]):
            visit(t)
        on_path.pop()

    for m in sorted(graph):
        visit(m)
    assert not circles, f"import circles: {circles}"


def test_design_names_every_resume_free_setting_and_every_module():
    """docs/DESIGN.md stays true to the code where it can drift: the settings a resume may change are exactly
    PretrainConfig.RESUME_FREE, and its layout table names every module of sassl/."""
    import re

    from sassl.training import PretrainConfig

    root = PKG.parent
    design = (root / "docs" / "DESIGN.md").read_text()
    listed = design.split("PretrainConfig.RESUME_FREE` (")[1].split(")")[0]
    assert set(re.findall(r"`(\w+)`", listed)) == set(PretrainConfig.RESUME_FREE)
    layout = design.split("## 3. Layout")[1].split("## 4.")[0]
    missing = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        folder, name = rel.rsplit("/", 1)
        stem = name.removesuffix(".py")
        named = rel in layout or (name == "__init__.py" and f"{folder}/" in layout) or re.search(rf"(?<![\w/]){re.escape(name)}", layout) or (
            folder != "sassl" and f"{folder}/" in layout and re.search(rf"\b{stem}\b", layout))
        if not named:
            missing.append(rel)
    assert not missing, f"docs/DESIGN.md's layout (section 3) does not name {missing}"


def test_package_front_door_names_resolve_to_their_owners():
    """`import sassl` gives __version__ (the installed metadata's) and every public name from the module that
    owns it, loaded on first use: importing the package alone loads none of them."""
    import importlib.metadata
    import subprocess
    import sys

    import sassl

    assert sassl.__version__ == importlib.metadata.version("sassl")
    for name, owner in sassl.PUBLIC.items():
        assert getattr(sassl, name) is getattr(importlib.import_module(owner), name), name
    out = subprocess.run([sys.executable, "-c", "import sys, sassl; print(sorted(m for m in sys.modules "
                          "if m.startswith('sassl.') or m in ('tqdm', 'plotly')))"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    try:
        sassl.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_sassl_defaults_have_one_owner():
    """p, alpha, beta and layers are written once (sassl.stylizer.DEFAULTS, the paper's 0.8, U(0.1, 0.3),
    all 13 layers); the op, style settings, run configs, the explorer, its app and run comparisons take
    them from there (the same objects, not copies)."""
    import inspect

    from sassl.compare import SASSL_DEFAULTS
    from sassl.explorer import Explorer
    from sassl.stylizer import DEFAULTS, SASSL, make_style_op
    from sassl.training import PretrainConfig

    assert DEFAULTS == {"p": 0.8, "alpha": (0.1, 0.3), "beta": (0.1, 0.3), "layers": 13}
    cfg = PretrainConfig()
    for fn in (SASSL.__init__, make_style_op, Explorer.run):
        params = inspect.signature(fn).parameters
        for k, v in DEFAULTS.items():
            assert params[k].default is v, (fn.__qualname__, k)
    assert all(getattr(cfg, k) is v for k, v in DEFAULTS.items())
    assert SASSL_DEFAULTS == {k: list(v) if isinstance(v, tuple) else v for k, v in DEFAULTS.items()}
    app = (PKG / "app.py").read_text()
    for widget in ('value=DEFAULTS["p"]', 'value=DEFAULTS["alpha"][0]', 'value=DEFAULTS["alpha"][1]',
                   'value=DEFAULTS["beta"][0]', 'value=DEFAULTS["beta"][1]', 'value=DEFAULTS["layers"]'):
        assert widget in app, widget


def test_learner_settings_have_one_owner():
    """Learner hyper-parameters are written once (sassl.learners.LEARNERS): the constructors have no defaults of
    their own and take what create_learner gives them from the row (so MoCo v2's heads are 4096 wide, its row's
    width); PretrainConfig's learner fields are the default learner's row."""
    import inspect

    import torch

    from sassl.learners import LEARNERS, create_learner, settings_of
    from sassl.training import PretrainConfig

    for name, spec in LEARNERS.items():
        params = inspect.signature(spec.cls.__init__).parameters
        assert all(params[k].default is inspect.Parameter.empty for k in settings_of(spec.cls)), name
        assert set(spec.module) <= set(settings_of(spec.cls)), name
        model = create_learner(name, "resnet18", image_size=32)
        widths = [m.out_features for m in model.projector.modules() if isinstance(m, torch.nn.Linear)]
        assert (widths[0], widths[-1]) == (spec.run["proj_hidden"], spec.run["proj_dim"]), name
        assert getattr(model, "temperature", None) == spec.run.get("temperature"), name
        assert getattr(model, "queue_size", 0) == spec.module.get("queue_size", 0), name
    cfg = PretrainConfig()
    assert {k: getattr(cfg, k) for k in LEARNERS[cfg.learner].run} == LEARNERS[cfg.learner].run


def test_modules_and_functions_stay_readable():
    """No module of sassl/ over 450 lines and no function over 60: a file a reader can hold, a function on one
    screen (split by job, not by line count)."""
    long_modules, long_functions = [], []
    for name, f in _modules().items():
        text = f.read_text()
        if len(text.splitlines()) > 450:
            long_modules.append((name, len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long_functions.append((f"{name}.{node.name}", node.end_lineno - node.lineno + 1))
    assert not long_modules, f"modules over 450 lines: {long_modules}"
    assert not long_functions, f"functions over 60 lines: {long_functions}"

"""Every notebook runs through papermill with tiny parameters and leaves what it must in its run folder."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sassl.notebook import execute, parameter_defaults, run_notebook

pm = pytest.importorskip("papermill")

NB = Path(__file__).parents[2] / "notebooks"
TINY = dict(max_steps=2, batch_size=8, image_size=32, epochs=1, num_workers=0, show_views=3, knn_max_train=400,
            knn_max_test=200)


def _run(nb: str, out: Path, **params):
    out.parent.mkdir(parents=True, exist_ok=True)
    return execute(NB / nb, out, params, cwd=NB)  # as `sassl notebook` runs them


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("SASSL_RUNS", str(root))  # the kernels inherit it
    yield root
    mp.undo()


@pytest.mark.slow
def test_pretrain_and_evaluate_notebooks(runs, capfd):
    for name, style in (("sassl", "pbn"), ("base", "none")):
        _run("pretrain.ipynb", runs / name / "pretrain.ipynb", name=name, style=style, log_augment=style != "none", **TINY)
        run = runs / name
        assert {"config.json", "metrics.jsonl", "metrics.json", "pretrain.ipynb"} <= {p.name for p in run.iterdir()}
        if style != "none":  # the augmentation record's summary: every recorded image, stylized or not
            summ = json.loads((run / "figures" / "augment_summary.json").read_text())
            assert sum(r["images"] for r in summ if r["by"] == "stylized") == 2 * TINY["batch_size"]
        assert (run / "figures" / "views.png").is_file() and (run / "figures" / "curves.html").is_file()
        assert json.loads((run / "config.json").read_text())["style"] == style
        capfd.readouterr()
        run_notebook("evaluate", dict(encoder=name, targets=["objects"], protocols=["knn", "linear"], seeds=[0, 1],
                                      max_per_split=50, probe_epochs=3))  # as `sassl notebook evaluate` (make demo)
        summary = (run / "eval" / "summary.csv").read_text().splitlines()
        assert summary[0] == "target,protocol,n,top1_mean,top1_std,top5_mean,top5_std" and len(summary) == 3
        # the terminal gets the numbers, the random-init encoder beside them (evaluated once for both runs)
        printed = "".join(capfd.readouterr())  # terminal_line: stdout, or the real stderr once ipykernel is loaded
        assert "random init" in printed and str(run / "eval" / "summary.csv") in printed
        knn = next(ln for ln in printed.splitlines() if ln.startswith("objects") and " knn " in ln)
        assert re.search(r"[+-]\d+\.\d\d$", knn)
    assert len(list((runs / "baselines").iterdir())) == 1
    _run("compare.ipynb", runs / "compare" / "compare.ipynb", style_images=12, primary=["objects/linear"])
    table = json.loads((runs / "compare" / "table.json").read_text())
    tiny = "mocov2 image_size=32 epochs=1 batch_size=8 max_steps=2"  # settings that differ from the defaults
    assert {r["variant"] for r in table} == {f"{tiny} + SASSL(pbn)", f"{tiny} baseline"}
    assert {"variant", "target", "protocol", "seeds", "top1_mean", "top1_std"} <= set(table[0])
    diffs = json.loads((runs / "compare" / "differences.json").read_text())
    assert {d["protocol"] for d in diffs} == {"knn", "linear", "knn (monitor)"}
    assert (runs / "compare" / "figures" / "compare.html").is_file()
    paired = json.loads((runs / "compare" / "paired.json").read_text())  # the two tiny runs share seed 0
    assert {(r["target"], r["protocol"], r["seeds"]) for r in paired} >= {("objects", "linear", 1)}
    assert (paired[0]["protocol"], paired[0]["family"]) == ("linear", "primary")  # the named outcome first
    assert {r["family"] for r in paired[1:]} == {"secondary"}
    assert (runs / "compare" / "figures" / "paired.html").is_file()  # the forest plot of the primary outcome
    (point,) = json.loads((runs / "compare" / "style_gain.json").read_text())  # pbn's styles against objects
    assert (point["style"], point["target"], point["seeds"]) == ("pbn", "objects", 1) and point["distance"] > 0
    assert (runs / "compare" / "figures" / "style_gain.html").is_file()


def test_style_tsne_notebook(style_tsne_run):
    m = json.loads((style_tsne_run / "overlap.json").read_text())
    assert m["datasets"] == ["paintings", "textures"] and len(m["frechet"]) == 2
    assert (style_tsne_run / "figures" / "tsne.html").is_file() and (style_tsne_run / "style_tsne.ipynb").is_file()
    # reopened (JupyterLab, nbviewer), the executed notebook shows what it stored: its figures as plotly's
    # mime type with their data, not only as a static image or a widget that needs the kernel
    cells = json.loads((style_tsne_run / "style_tsne.ipynb").read_text())["cells"]
    figs = [o["data"]["application/vnd.plotly.v1+json"] for c in cells for o in c.get("outputs", [])
            if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) >= 2, "the t-SNE and overlap figures stored in the notebook"
    names = [",".join(t.get("name", "") for t in f["data"]) for f in figs]
    assert "paintings,textures" in names  # one t-SNE trace per dataset of the parameters, with its points
    tsne = figs[names.index("paintings,textures")]
    assert all(len(t["x"]) == len(t["y"]) > 0 for t in tsne["data"])


@pytest.mark.parametrize("params, message", [
    ({"lerner": "simclr"}, "unknown notebook parameter(s) ['lerner']"),
    ({"alpha": [0.5, 0.2]}, "alpha: need 0 <= min <= max <= 1"),
])
def test_wrong_parameter_fails_in_the_first_cell(runs, params, message, capfd):
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run("pretrain.ipynb", runs / "bad" / "pretrain.ipynb", name="bad", **params)
    assert message in str(e.value)
    assert "without encryption" not in capfd.readouterr().err  # the kernel listens on Unix sockets, not TCP
    assert not (runs / "bad" / "checkpoints").exists()  # nothing trained


PARAMETERIZED = sorted(p.name for p in NB.glob("*.ipynb") if parameter_defaults(p))


def test_every_notebook_but_the_quickstart_takes_parameters():
    assert set(PARAMETERIZED) == {p.name for p in NB.glob("*.ipynb")} - {"quickstart.ipynb"}


@pytest.mark.parametrize("nb", PARAMETERIZED)
def test_papermill_reads_every_parameter(nb):
    """`papermill --help-notebook` and `-p` see every name of the parameters cell with its default (a comment
    papermill cannot parse, e.g. one holding ' = ', makes it drop that parameter with only a warning)."""
    import ast

    import nbformat

    cell = next(c for c in nbformat.read(NB / nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = {t.id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body
                for t in node.targets if isinstance(node, ast.Assign)}
    seen = pm.inspect_notebook(str(NB / nb))
    assert set(seen) == set(assigned), f"{nb}: papermill misses {set(assigned) - set(seen)}"
    for name, value in assigned.items():
        assert ast.literal_eval(seen[name]["default"]) == value, (nb, name)


def test_quickstart_outputs_checked_by_nbval():
    """nbval runs notebooks/quickstart.ipynb in this environment and compares every stored text output (the
    sampled SASSL parameters, the exact replay) with what the code gives now; images are not compared."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
                        str(NB / "quickstart.ipynb")], cwd=NB, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:]
    assert "5 passed" in r.stdout, r.stdout[-2000:]  # one nbval item per code cell


@pytest.mark.parametrize("nb, cls, notebook_only", [
    ("pretrain.ipynb", "sassl.training:PretrainConfig", {"resume", "show_views"}),
    ("evaluate.ipynb", "sassl.eval.evaluate:EvalConfig", set()),
])
def test_parameters_cell_lists_every_config_field_with_its_default(nb, cls, notebook_only):
    """A notebook's parameters are its config's fields with the same defaults (runs_dir empty means the
    workbench's runs/), plus the notebook-only ones; resume is off by default as in `sassl pretrain`."""
    import dataclasses
    import importlib

    from sassl.config import plain

    module, name = cls.split(":")
    config = getattr(importlib.import_module(module), name)
    cell = parameter_defaults(NB / nb)
    defaults = plain({f.name: f.default for f in dataclasses.fields(config)}) | {"runs_dir": ""}
    assert {k: v for k, v in cell.items() if k not in notebook_only} == defaults
    assert set(cell) - set(defaults) == notebook_only
    if "resume" in cell:
        assert cell["resume"] is False


def test_notebooks_started_at_once_from_one_folder_get_kernels_of_their_own(tmp_path):
    """Two sweeps side by side start notebooks from the same folder: each kernel's sockets must have a name of
    their own, in the private runtime folder (jupyter_client's ipc default, kernel-ipc-1.. in the current
    folder, gave both kernels the same sockets) and none left in the notebook's folder."""
    import stat
    import threading

    import nbformat
    from jupyter_core.paths import jupyter_runtime_dir

    from sassl.notebook import kernel_manager_class

    cls = kernel_manager_class()
    a, b = cls(), cls()
    runtime = Path(jupyter_runtime_dir()).resolve()
    assert a.transport == "ipc" and a.ip != b.ip and Path(a.ip).parent.resolve() == runtime
    assert stat.S_IMODE(runtime.stat().st_mode) & 0o077 == 0  # nobody else can reach the sockets
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("k = 0", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("print(k * 2)")],
                                 metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                          "language": "python"}})
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    done, errors = {}, []

    def one(k: int) -> None:
        try:
            done[k] = execute(tmp_path / "tiny.ipynb", tmp_path / f"out{k}.ipynb", {"k": k}, cwd=tmp_path)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)
    threads = [threading.Thread(target=one, args=(k,)) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [done[k].cells[-1].outputs[0]["text"].strip() for k in (1, 2)] == ["2", "4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out1.ipynb", "out2.ipynb", "tiny.ipynb"]

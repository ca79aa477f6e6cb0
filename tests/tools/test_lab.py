"""JupyterLab as users open it (`sassl lab`): the style-space notebook run and its widgets used in headless
Chromium. (That an executed notebook keeps its plotly figures is checked in its JSON: test_notebooks.)"""
import os
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from browser import Chromium, free_port, need_chromium
from conftest import TSNE_SMALL
from sassl.notebook import lab_command

pm = pytest.importorskip("papermill")
NB = Path(__file__).parents[2] / "notebooks"
SMALL = TSNE_SMALL


def test_lab_command_is_loopback_with_token_on_notebooks():
    cmd = lab_command(port=9999, browser=False, token="t0k")
    assert cmd[1:3] == ["-m", "jupyterlab"] and "--ServerApp.ip=127.0.0.1" in cmd and "--no-browser" in cmd
    assert f"--ServerApp.root_dir={NB.parent}" in cmd and "--ServerApp.default_url=/lab/tree/notebooks" in cmd
    assert "--IdentityProvider.token=t0k" in cmd
    assert not any("token=" in c for c in lab_command())  # default: Jupyter's own random token


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on loopback over a folder with style_tsne.ipynb (small parameters injected, not run) and an
    empty runs/ for what the kernel writes."""
    need_chromium()
    root = tmp_path_factory.mktemp("lab")
    (root / "runs").mkdir()
    (root / "runs" / "README.md").touch()
    env = os.environ | {"SASSL_RUNS": str(root / "runs")}  # the kernels inherit it
    pm.execute_notebook(str(NB / "style_tsne.ipynb"), str(root / "style_tsne.ipynb"), parameters=SMALL,
                        prepare_only=True)
    port, token = free_port(), secrets.token_hex(16)
    proc = subprocess.Popen(lab_command(port=port, browser=False, token=token, root=root,
                                        extra=["--LabApp.expose_app_in_browser=True",  # window.jupyterapp for the test
                                               f"--LabApp.workspaces_dir={tmp_path_factory.mktemp('ws')}"]),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("JupyterLab exited at start")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not answer in 120 s")
    yield base, token, root
    proc.terminate()
    proc.wait(20)


def panel(path: str) -> str:
    """JavaScript for the JupyterLab notebook panel showing `path` (relative to the server root)."""
    return (f"(window.jupyterapp && Array.from(jupyterapp.shell.widgets('main'))"
            f".find(w => w.context && w.context.path === '{path}'))")


def plots(path: str) -> str:
    """JavaScript for the plotly figures rendered in that notebook."""
    return f"Array.from({panel(path)} ? {panel(path)}.node.querySelectorAll('.js-plotly-plot') : [])"


def traces(path: str) -> str:
    return f"{plots(path)}.map(p => p.data.map(t => t.name).join(','))"


NO_NEWS = "Array.from(document.querySelectorAll('button')).find(b => b.textContent.trim() === 'No')?.click()"


def show_plot(page, path: str, i: int) -> None:
    """Scroll plot i (negative: from the end) into view for the screenshot, with Jupyter's news prompt closed."""
    page.js(NO_NEWS)
    page.js(f"{plots(path)}.at({i}).scrollIntoView({{block: 'center'}})")
    time.sleep(1.0)


@pytest.fixture
def open_in_lab(lab, tmp_path):
    """open_in_lab(path) -> a headless Chromium page showing that notebook in the JupyterLab above."""
    base, token, _ = lab
    pages = []

    def open_(path: str) -> Chromium:
        pages.append(Chromium(tmp_path / f"profile{len(pages)}"))
        pages[-1].call("Page.navigate", url=f"{base}/lab/tree/{path}?token={token}")
        return pages[-1]

    yield open_
    for page in pages:
        page.close()


@pytest.mark.slow
def test_widgets_in_jupyterlab_update_the_tsne(open_in_lab, tmp_path):
    nb = "style_tsne.ipynb"
    page = open_in_lab(nb)
    page.wait(f"{panel(nb)} && {panel(nb)}.sessionContext.session?.kernel?.status === 'idle'", 180,
              "the notebook open with an idle kernel")
    page.js(f"(() => {{ jupyterapp.shell.activateById({panel(nb)}.id);"
            " return jupyterapp.commands.execute('notebook:run-all-cells'); })()")
    page.wait(f"{plots(nb)}.length >= 2 && Array.from(document.querySelectorAll('button'))"
              ".some(b => b.textContent.trim() === 'update')", 300, "the t-SNE figure and the widgets")
    first = page.js(traces(nb))
    assert first[0] == "paintings,textures"  # one trace per dataset of the parameters
    show_plot(page, nb, 0)
    page.screenshot(tmp_path / "before.png", keep_as="lab_style_tsne_before_update.png")
    # the widgets as a person uses them: pick other datasets, then press update
    page.js("(() => { const s = document.querySelector('.widget-select-multiple select');"
            " for (const o of s.options) o.selected = ['paintings', 'photos'].includes(o.textContent.trim());"
            " s.dispatchEvent(new Event('change', {bubbles: true})); })()")
    page.js("Array.from(document.querySelectorAll('button')).find(b => b.textContent.trim() === 'update').click()")
    page.wait(f"{plots(nb)}.length >= 4", 300, "the updated t-SNE figure in the widget's output")
    after = page.js(traces(nb))
    assert after[2] == "paintings,photos" and after[2] != first[0]
    show_plot(page, nb, -2)
    page.screenshot(tmp_path / "after.png", keep_as="lab_style_tsne_after_update.png")

"""Plotly figures saved as HTML (always) and PNG (when kaleido can render, within a time limit)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

# NOTE: kaleido renders through a headless browser, and that export hangs at random on some hosts (plotly/Kaleido
# issues 134 and 110; seen here once, at the end of a training run on a loaded 2-core machine). It runs in a
# process of its own that is killed after PNG_TIMEOUT_S, so a figure never holds up a run: the HTML is written
# first and stays the figure.
PNG_TIMEOUT_S = 120.0
PNG_ENV = "SASSL_PNG"  # "0": figures as HTML only, no browser started (the test suite; headless batch jobs)
_RENDER = ("import sys, plotly.io as pio; pio.from_json(sys.stdin.read(), skip_invalid=True).write_image("
           "sys.argv[1], width=int(sys.argv[2]), height=int(sys.argv[3]), scale=1)")



def write_png(fig, path: str | Path, width: int, height: int, timeout: float = PNG_TIMEOUT_S) -> None:
    """fig as a PNG at `path`, rendered by kaleido in a child process (its own process group, killed with its
    browser after `timeout` seconds: TimeoutError); a failed render raises RuntimeError with kaleido's message."""
    proc = subprocess.Popen([sys.executable, "-c", _RENDER, str(path), str(width), str(height)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(fig.to_json().encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimeoutError(f"static export took over {timeout:g} s") from None
    if proc.returncode:
        raise RuntimeError(err.decode(errors="replace").strip().splitlines()[-1] if err.strip() else "kaleido failed")


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Write stem.html, and stem.png if a static renderer (kaleido) works here within PNG_TIMEOUT_S (and
    $SASSL_PNG is not 0); returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.with_suffix(".html")]
    fig.write_html(out[0], include_plotlyjs="cdn")
    if os.environ.get(PNG_ENV, "1") == "0":
        return out
    try:
        write_png(fig, stem.with_suffix(".png"), fig.layout.width or 1000, fig.layout.height or 450)
        out.append(stem.with_suffix(".png"))
    except (RuntimeError, TimeoutError, OSError) as e:  # kaleido missing, no browser, or a hung export
        warnings.warn(f"no PNG for {stem.name} (static export unavailable: {type(e).__name__}: {e}); the HTML has "
                      "the figure")
    return out

"""Headless Chromium driven over the DevTools protocol (websockets), for the app and JupyterLab tests."""
from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ARTEFACTS = Path(__file__).parent / "artefacts"  # screenshots kept as test artefacts (git-ignored)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_chromium() -> str:
    """The chromium binary, or a loud skip saying why and how to get it."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("SKIPPED LOUDLY: no Chromium on this machine, so no browser test ran; `apt-get install chromium` "
                    "(the set-up does it when run as root) and run the suite again")
    return exe


class Chromium:
    """One headless Chromium page: `call(method, **params)` (CDP), `js(expr)`, `wait(expr)`, `screenshot(path)`."""

    def __init__(self, profile: Path, size: str = "1400,1000"):
        port = free_port()
        self.proc = subprocess.Popen([need_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                      f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                                      f"--window-size={size}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(120):
            try:
                pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=1).read())
                page = next(p for p in pages if p["type"] == "page")
                break
            except (OSError, StopIteration):
                time.sleep(0.5)
        else:
            self.close()
            pytest.fail("headless Chromium did not open its DevTools port in 60 s")
        from websockets.sync.client import connect

        self._connection = connect(page["webSocketDebuggerUrl"], max_size=2**27)
        self.ws = self._connection.__enter__()
        self._ids = iter(range(1, 10**9))

    def call(self, method: str, **params) -> dict:
        i = next(self._ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == i:
                return msg.get("result", {})

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JavaScript failed: {r['exceptionDetails'].get('exception', {}).get('description', r)}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 120, what: str = "") -> object:
        """Poll a JavaScript expression until it is truthy; fail naming `what` after `timeout` seconds."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            v = self.js(expression)
            if v:
                return v
            time.sleep(0.5)
        pytest.fail(f"browser: {what or expression} not seen in {timeout:.0f} s")

    def screenshot(self, path: Path, keep_as: str | None = None) -> bytes:
        """A PNG of the page at `path`; also copied to tests/artefacts/<keep_as>."""
        data = base64.b64decode(self.call("Page.captureScreenshot")["data"])
        Path(path).write_bytes(data)
        if keep_as:
            ARTEFACTS.mkdir(exist_ok=True)
            shutil.copy(path, ARTEFACTS / keep_as)
        return data

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self._connection.__exit__(None, None, None)
        self.proc.terminate()
        self.proc.wait(10)

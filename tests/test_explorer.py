"""The stylization explorer: callback logic without a server, the app over loopback, and in headless Chromium."""
import base64
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from sassl.data.decode import to_tensor
from sassl.explorer import Explorer, check_upload


@pytest.fixture(scope="module")
def ex():
    return Explorer("cpu")


@pytest.fixture(scope="module")
def contents(ex):
    return ex.contents("objects", n=3, seed=0)


def test_run_matches_the_op_and_replays(ex, contents):
    from sassl.stylizer import SASSL, SASSLParams

    r = ex.run(contents, "paintings", p=1.0, alpha=(0.2, 0.4), beta=(0.5, 0.5), seed=3, size=64)
    assert len(r.rows) == 3 and all(set(row) == {"crop", "stylized", "output", "left", "right", "caption"} for row in r.rows)
    assert all(0.2 <= a <= 0.4 for a in r.params["alpha"]) and r.params["beta"] == [0.5] * 3
    # the output is beta * stylized + (1 - beta) * crop (8-bit rounding aside), and replaying the params gives it again
    for row in r.rows:
        crop, sty, out = (to_tensor(row[k]) for k in ("crop", "stylized", "output"))
        assert (out - (0.5 * sty + 0.5 * crop)).abs().max() < 2.5 / 255
    op = SASSL(ex.stylizer, "bank", ex.bank("paintings"), p=1.0, alpha=(0.2, 0.4), beta=(0.5, 0.5))
    crops = torch.stack([to_tensor(row["crop"]) for row in r.rows])
    d = r.params
    params = SASSLParams("bank", torch.tensor(d["apply"]), torch.tensor(d["alpha"]), torch.tensor(d["beta"]),
                         torch.tensor(d["style_index"]))
    again, _ = op(crops, params)
    assert (again - torch.stack([to_tensor(row["output"]) for row in r.rows])).abs().max() < 2.5 / 255
    assert "STYLIZED" in r.rows[0]["caption"] and "alpha=" in r.rows[0]["caption"]


def test_p0_leaves_crops_and_seed_resamples(ex, contents):
    r = ex.run(contents, "noise", p=0.0, seed=0, size=64)
    assert all(to_tensor(row["output"]).equal(to_tensor(row["crop"])) for row in r.rows)
    a = ex.run(contents, "batch", seed=0, size=64)
    b = ex.run(contents, "batch", seed=0, size=64)
    c = ex.run(contents, "batch", seed=1, size=64)
    assert a.params == b.params and a.params != c.params
    assert "content #" in a.rows[0]["caption"]
    assert len(a.figure.data) == 3  # content, style, blended (no bank for in-batch)
    assert len(ex.run(contents, "paintings", seed=0, size=64).figure.data) == 4


def test_uploads_validated(ex, tmp_path):
    ok = tmp_path / "ok.png"
    Image.new("RGB", (80, 60), "red").save(ok)
    assert check_upload(ok).size == (80, 60)
    bad_type = tmp_path / "x.exe"
    bad_type.write_bytes(b"MZ")
    with pytest.raises(ValueError, match="type .exe not accepted"):
        check_upload(bad_type)
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="not a readable image"):
        check_upload(fake)
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (10 * 2**20 + 1))
    with pytest.raises(ValueError, match="over the 10 MB limit"):
        check_upload(big)
    r = ex.run(ex.contents("objects", [str(ok)]), "style image", style_image=str(ok), p=1.0, size=64)
    assert r.rows[0]["caption"].endswith("style=ok.png")
    with pytest.raises(ValueError, match="style image: upload one"):
        ex.run([Image.new("RGB", (64, 64))], "style image")
    with pytest.raises(ValueError, match="in-batch styles need at least 2"):
        ex.run([Image.new("RGB", (64, 64))], "batch")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """`sassl app` in a subprocess on loopback (the default host)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sassl.cli", "app", "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("app exited: " + proc.stdout.read())
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("app did not start in 120 s")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
def test_app_over_loopback_with_gradio_client(server):
    from gradio_client import Client

    assert server.startswith("http://127.0.0.1:")
    client = Client(server, verbose=False)
    args = dict(content_src="objects", uploads=[], n=2, style="paintings", bank_file="", style_image=None, offset=1,
                p=1.0, a_lo=0.1, a_hi=0.3, b_lo=0.1, b_hi=0.3, layers=13, seed=5, size=64, content_seed=0)
    gallery, text, _plot, params = client.predict(*args.values(), api_name="/update")
    assert len(gallery) == 10 and text.count("STYLIZED") == 2 and params["seed"] == 5
    gallery2, text2, _, params2 = client.predict(*(args | {"seed": 6}).values(), api_name="/update")
    assert params2["alpha"] != params["alpha"] and text2 != text
    with pytest.raises(Exception, match="bank file: give a style bank"):  # bad input: an error message, server stays up
        client.predict(*(args | {"style": "bank file"}).values(), api_name="/update")
    assert len(client.predict(*args.values(), api_name="/update")[0]) == 10


def _cdp_call(ws):
    """A minimal Chrome DevTools Protocol client: call(method, **params) -> result."""
    counter = iter(range(1, 10**6))

    def call(method, **params):
        i = next(counter)
        ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(ws.recv(timeout=60))
            if msg.get("id") == i:
                return msg.get("result", {})

    return call


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian chromium (the set-up installs it)")
def test_app_in_headless_chromium_resample_changes_images(server, tmp_path):
    port = _free_port()
    browser = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                f"--remote-debugging-port={port}", f"--user-data-dir={tmp_path / 'profile'}",
                                "--window-size=1400,1000", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(60):
            try:
                pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=1).read())
                page = next(p for p in pages if p["type"] == "page")
                break
            except (OSError, StopIteration):
                time.sleep(0.5)
        from websockets.sync.client import connect

        with connect(page["webSocketDebuggerUrl"], max_size=2**26) as ws:
            call = _cdp_call(ws)
            call("Page.navigate", url=server)

            def gallery_srcs():
                js = "Array.from(document.querySelectorAll('#views img')).map(i => i.src).join('|')"
                return call("Runtime.evaluate", expression=js)["result"].get("value", "")

            def wait_change(old, timeout=120):
                t0 = time.time()
                while time.time() - t0 < timeout:
                    v = gallery_srcs()
                    if v and v != old and v.count("|") >= 4:
                        time.sleep(1.0)
                        return gallery_srcs()
                    time.sleep(0.5)
                pytest.fail(f"gallery did not change (had {old[:80]!r})")

            first = wait_change("")  # the page loads and renders the first update
            shot = tmp_path / "explorer_before.png"
            shot.write_bytes(base64.b64decode(call("Page.captureScreenshot")["data"]))
            call("Runtime.evaluate", expression="document.querySelector('#resample').click()")
            second = wait_change(first)
            assert second != first
            after = tmp_path / "explorer_after.png"
            after.write_bytes(base64.b64decode(call("Page.captureScreenshot")["data"]))
            assert after.read_bytes() != shot.read_bytes()
            artefacts = Path(__file__).parent / "artefacts"  # kept as a test artefact (git-ignored)
            artefacts.mkdir(exist_ok=True)
            shutil.copy(shot, artefacts / "explorer_before_resample.png")
            shutil.copy(after, artefacts / "explorer_after_resample.png")
    finally:
        browser.terminate()
        browser.wait(10)

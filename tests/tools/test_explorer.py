"""The stylization explorer: callback logic without a server, and the app over loopback (gradio_client)."""
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from PIL import Image

from browser import free_port
from sassl.data.decode import to_tensor
from sassl.explorer import Explorer, check_upload


@pytest.fixture(scope="module")
def ex():
    return Explorer("cpu")


@pytest.fixture(scope="module")
def contents(ex):
    return ex.contents("objects", n=3, seed=0)


def test_run_matches_the_op_and_replays(ex, contents):
    from sassl.stylizer import SASSL, SASSLParams, make_style_op

    r = ex.run(contents, "paintings", p=1.0, alpha=(0.2, 0.4), beta=(0.5, 0.5), seed=3, size=64)
    assert len(r.rows) == 3 and all(set(row) == {"crop", "stylized", "output", "left", "right", "caption"} for row in r.rows)
    assert all(0.2 <= a <= 0.4 for a in r.params["alpha"]) and r.params["beta"] == [0.5] * 3
    # the output is beta * stylized + (1 - beta) * crop (8-bit rounding aside), and replaying the params gives it again
    for row in r.rows:
        crop, sty, out = (to_tensor(row[k]) for k in ("crop", "stylized", "output"))
        assert (out - (0.5 * sty + 0.5 * crop)).abs().max() < 2.5 / 255
    op = SASSL(ex.stylizer, "bank", make_style_op("paintings", ex.stylizer).bank, p=1.0, alpha=(0.2, 0.4), beta=(0.5, 0.5))
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
    # the settings a user types: each refused with its name, nothing silently cut or swapped
    with pytest.raises(ValueError, match=r"content upload: at most 8 images at a time, got 9"):
        ex.contents("objects", [str(ok)] * 9)
    assert len(ex.contents("objects", [str(ok)] * 8)) == 8
    two = [Image.new("RGB", (64, 64)), Image.new("RGB", (64, 64), "blue")]
    with pytest.raises(ValueError, match="alpha"):
        ex.run(two, "batch", alpha=(0.3, 0.1), size=64)
    with pytest.raises(ValueError, match="beta"):
        ex.run(two, "batch", beta=(0.2, 1.5), size=64)
    for size in (31, 513):
        with pytest.raises(ValueError, match=rf"size: must be in \[32, 512\], got {size}"):
            ex.run(two, "batch", size=size)


@pytest.fixture(scope="module")
def server():
    """`sassl app` in a subprocess on loopback (the default host)."""
    port = free_port()
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

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sassl.cli import main
from sassl.data.decode import ImageDecodeError, center_square, load_rgb, to_tensor
from sassl.stylizer import StyleBank, build_bank
from sassl.stylizer.bank import StyleBankError


@pytest.fixture
def style_folder(tmp_path, art):
    d = tmp_path / "styles"
    (d / "sub").mkdir(parents=True)
    shutil.copy(art[0], d / "a.jpg")
    shutil.copy(art[1], d / "sub" / "b.png")
    (d / "notes.txt").write_text("not an image")
    (d / "broken.jpg").write_bytes(art[0].read_bytes()[:300])  # truncated JPEG
    return d


def test_build_bank_skips_and_counts_bad_files(stylizer, style_folder, tmp_path):
    with pytest.warns(UserWarning, match="skipped 2 of 4 files"):
        bank = build_bank(stylizer, str(style_folder), image_size=128, progress=False, weights_sha256=stylizer.weights_sha256)
    assert len(bank) == 2 and bank.meta["skipped"] == 2 and bank.meta["count"] == 2
    assert [n.split("/")[-1] for n in bank.meta["names"]] == ["a.jpg", "b.png"]
    with torch.no_grad():  # a JPEG decoded only as far as a 128 px square needs (draft mode), then embedded
        square = center_square(load_rgb(style_folder / "a.jpg", 128), 128)
        ref = stylizer.embed(to_tensor(square)[None])
        full = stylizer.embed(to_tensor(center_square(load_rgb(style_folder / "a.jpg"), 128))[None])
    torch.testing.assert_close(bank.embeddings[:1], ref)
    assert (ref - full).norm() < 0.3  # the reduced decode moves the code little (two paintings: ~4.7 apart)
    path = bank.save(tmp_path / "bank.pt")
    again = StyleBank.load(path, weights_sha256=stylizer.weights_sha256)
    torch.testing.assert_close(again.embeddings, bank.embeddings)
    with pytest.raises(StyleBankError, match="rebuild the bank"):
        StyleBank.load(path, weights_sha256="0" * 64)


def test_bank_errors(stylizer, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        build_bank(stylizer, str(tmp_path / "empty"), progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.jpg").write_text("hello")
    with pytest.raises(ValueError, match="none of its 1 files is a usable image"), pytest.warns(UserWarning):
        build_bank(stylizer, str(tmp_path / "junk"), progress=False)
    with pytest.raises(FileNotFoundError, match="neither a folder.*available: paintings"):
        build_bank(stylizer, "no-such-set", progress=False)
    with pytest.raises(StyleBankError, match="no such style bank"):
        StyleBank.load(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"xx")
    with pytest.raises(StyleBankError, match="not a readable style bank"):
        StyleBank.load(tmp_path / "bad.pt")
    torch.save({"format": 1, "embeddings": torch.zeros(2, 100), "meta": {"count": 3}}, tmp_path / "lie.pt")
    with pytest.raises(StyleBankError, match="metadata says 3 styles"):
        StyleBank.load(tmp_path / "lie.pt")


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "LA", "CMYK", "I;16", "1"])
def test_decoder_handles_modes(tmp_path, mode):
    a = (np.arange(32 * 32 * 3) % 256).astype(np.uint8).reshape(32, 32, 3)
    img = Image.fromarray(a).convert(mode if mode not in ("I;16",) else "L")
    if mode == "I;16":
        img = Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16))
    suffix = ".tif" if mode in ("CMYK", "I;16") else ".png"
    img.save(tmp_path / f"x{suffix}")
    out = load_rgb(tmp_path / f"x{suffix}")
    assert out.mode == "RGB" and out.size == (32, 32)
    if mode == "RGBA":  # transparent pixels composite on white
        t = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
        t.save(tmp_path / "t.png")
        assert load_rgb(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)


def test_decoder_errors_name_the_file(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "tiny.png")
    with pytest.raises(ImageDecodeError, match="tiny.png.*too small"):
        load_rgb(tmp_path / "tiny.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageDecodeError, match="bad.png: not a readable image"):
        load_rgb(tmp_path / "bad.png")


def test_cli_stylize(photos, art, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert main(["stylize", str(photos[0]), str(art[0]), "-o", str(out), "--alpha", "0.5", "--size", "100",
                 "--device", "cpu"]) == 0
    im = Image.open(out)
    src = load_rgb(photos[0])
    scale = 100 / max(src.size)
    assert im.size == (round(src.width * scale), round(src.height * scale))
    assert main(["stylize", str(photos[0]), str(art[0]), "-o", str(out), "--beta", "2"]) == 2
    assert "--beta must lie in [0, 1]" in capsys.readouterr().err
    assert main(["stylize", str(tmp_path / "nope.jpg"), str(art[0]), "-o", str(out)]) == 2
    assert "nope.jpg: no such file" in capsys.readouterr().err


def test_cli_style_bank(style_folder, tmp_path, capsys):
    out = tmp_path / "b.pt"
    with pytest.warns(UserWarning):
        assert main(["style-bank", "build", str(style_folder), "--out", str(out), "--image-size", "64", "--device", "cpu"]) == 0
    assert "2 styles" in capsys.readouterr().out
    assert main(["style-bank", "info", str(out)]) == 0
    assert '"skipped": 2' in capsys.readouterr().out
    assert main(["style-bank", "build", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "neither a folder" in capsys.readouterr().err


def test_demo_writes_contact_sheet(tmp_path):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--size", "96", "--device", "cpu"]) == 0
    sheet = Image.open(tmp_path / "demo" / "figures" / "stylization_grid.png")
    assert sheet.width > 7 * 96 and (tmp_path / "demo" / "config.json").is_file()

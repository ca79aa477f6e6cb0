"""Stylizing image files: one content with one style (`sassl stylize`), and the demo sheet of bundled photos
and paintings at several (alpha, beta) (`sassl demo`)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from PIL import Image

from sassl.data import image_paths
from sassl.data.decode import center_square, load_rgb, to_pil, to_tensor
from sassl.devices import resolve_device
from sassl.records import git_commit
from sassl.figures.sheet import contact_sheet
from sassl.stylizer import pretrained, stylize

DEMO_SETTINGS = [(1.0, 1.0), (0.5, 1.0), (0.3, 0.3), (0.2, 0.2), (0.1, 0.1)]  # (alpha, beta) columns


def _fit_longer_side(img, size: int):
    scale = size / max(img.size)
    return img.resize((max(8, round(img.width * scale)), max(8, round(img.height * scale))), Image.LANCZOS)


def stylize_file(content: str, style: str, out: str, alpha: float = 1.0, beta: float = 1.0, size: int = 384,
                 style_size: int = 256, device: str = "auto") -> Path:
    """Stylize one image file with another as style; alpha blends embeddings, beta blends pixels."""
    for name, v in (("alpha", alpha), ("beta", beta)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"--{name} must lie in [0, 1], got {v}")
    if size < 16 or style_size < 32:
        raise ValueError(f"--size must be >= 16 and --style-size >= 32, got {size}, {style_size}")
    dev = resolve_device(device)
    st = pretrained(dev)
    c = to_tensor(_fit_longer_side(load_rgb(content), size))[None].to(dev)
    s = to_tensor(center_square(load_rgb(style), style_size))[None].to(dev)
    with torch.no_grad():
        y = stylize(st, c, st.embed(s), st.embed(c), torch.tensor([alpha], device=dev), torch.tensor([beta], device=dev))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    to_pil(y[0]).save(out)
    return out


def demo(out_dir: str = "runs/demo", size: int = 224, device: str = "auto") -> Path:
    """Contact sheet: content | style | stylized at several (alpha, beta), on bundled real images."""
    t0 = time.time()
    dev = resolve_device(device)
    st = pretrained(dev)
    photos, art = image_paths("opencv-photos"), image_paths("opencv-art")
    pairs = list(zip(photos[:4], art[:4]))
    rows, captions = [], []
    for cpath, spath in pairs:
        c_img, s_img = center_square(load_rgb(cpath), size), center_square(load_rgb(spath), 256)
        c, s = to_tensor(c_img)[None].to(dev), to_tensor(s_img)[None].to(dev)
        row, cap = [c_img, s_img], [cpath.name[:22], spath.name[:22]]
        with torch.no_grad():
            zc, zs = st.embed(c), st.embed(s)
            for a, b in DEMO_SETTINGS:
                y = stylize(st, c, zs, zc, torch.tensor([a], device=dev), torch.tensor([b], device=dev))
                row.append(to_pil(y[0]))
                cap.append(f"alpha={a} beta={b}")
        rows.append(row)
        captions.append(cap)
    header = ["content", "style"] + ["stylized" if (a, b) == (1.0, 1.0) else "SASSL blend" for a, b in DEMO_SETTINGS]
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    sheet_path = out / "figures" / "stylization_grid.png"
    contact_sheet(rows, header, tile=180, captions=captions).save(sheet_path)
    config = {"command": "demo", "size": size, "device": str(dev), "settings_alpha_beta": DEMO_SETTINGS,
              "pairs": [[str(c), str(s)] for c, s in pairs], "weights_sha256": st.weights_sha256,
              "git_commit": git_commit()}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "metrics.json").write_text(json.dumps({"seconds": round(time.time() - t0, 2), "images": len(rows) * len(DEMO_SETTINGS)}))
    return sheet_path

"""The stylization explorer's logic, as plain functions (the Gradio app in apps/explorer.py is a thin shell).

    ex = Explorer()
    contents = ex.contents("objects", n=4, seed=0)
    out = ex.run(contents, style="paintings", p=0.8, alpha=(0.1, 0.3), beta=(0.1, 0.3), seed=0)
    out.rows[0]["output"], out.rows[0]["caption"], out.figure
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from sassl.data import get_dataset
from sassl.data.decode import ImageDecodeError, load_rgb, to_pil
from sassl.devices import resolve_device
from sassl.stylizer import DEFAULTS, STYLE_KEYWORDS, make_style_op, mix, pretrained
from sassl.data.loader import random_resized_crop
from sassl.views import TwoViews

CONTENT_SETS = ("objects", "paintings", "photos")
STYLE_SETS = ("paintings", "textures", "pbn")
STYLE_MODES = STYLE_SETS + ("bank file", "style image") + tuple(k for k in STYLE_KEYWORDS if k != "none")
UPLOAD_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_SIZE = 512
MAX_UPLOADS = 8  # content images an update stylizes at most


def check_upload(path: str | os.PathLike, what: str = "upload") -> Image.Image:
    """An uploaded file as an RGB image, or ValueError saying what is wrong (type, size, unreadable)."""
    p = Path(path)
    if p.suffix.lower() not in UPLOAD_SUFFIXES:
        raise ValueError(f"{what} {p.name}: type {p.suffix or '(none)'} not accepted; use {', '.join(sorted(UPLOAD_SUFFIXES))}")
    size = p.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(f"{what} {p.name}: {size / 2**20:.1f} MB is over the {MAX_UPLOAD_BYTES // 2**20} MB limit")
    try:
        return load_rgb(p)
    except ImageDecodeError as e:
        raise ValueError(f"{what} {p.name}: not a readable image ({e})") from None


@dataclass
class Result:
    rows: list[dict]        # per content image: crop, stylized (T(c, z), before interpolation), output, left, right (PIL), caption
    params: dict            # the sampled SASSL parameters (replayable)
    figure: object          # plotly figure: content / style / blended embeddings in the style space (PCA)


class Explorer:
    """Holds the stylizer; `run` is one update of the explorer (dataset banks are cached on disk by load_bank)."""

    def __init__(self, device: str | torch.device | None = None):
        self.device = resolve_device(str(device or "auto"))
        self.stylizer = pretrained(self.device)

    def contents(self, source: str, uploads: list[str] | None = None, n: int = 4, seed: int = 0) -> list[Image.Image]:
        """n images of a bundled set (seeded pick), or the uploaded files (validated)."""
        if uploads:
            if len(uploads) > MAX_UPLOADS:
                raise ValueError(f"content upload: at most {MAX_UPLOADS} images at a time, got {len(uploads)}; "
                                 "upload fewer")
            return [check_upload(u, "content upload") for u in uploads]
        if source not in CONTENT_SETS:
            raise ValueError(f"content: choose one of {', '.join(CONTENT_SETS)} or upload images")
        ds = get_dataset(source, split="test" if source == "objects" else "all")
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
        return [ds.usable(i)[1] for i in idx]

    @torch.no_grad()
    def run(self, contents: list[Image.Image], style: str = "paintings", bank_file: str | None = None,
            style_image: str | None = None, offset: int = 1, p: float = DEFAULTS["p"], alpha=DEFAULTS["alpha"],
            beta=DEFAULTS["beta"], layers: int = DEFAULTS["layers"], seed: int = 0, size: int = 256, crop_scale=(0.08, 1.0)) -> Result:
        """Crop each content image, run the SASSL op (sampled with `seed`) and the two-view pipeline."""
        if not contents:
            raise ValueError("content: no images")
        if not 32 <= size <= MAX_SIZE:
            raise ValueError(f"size: must be in [32, {MAX_SIZE}], got {size}")
        if style not in STYLE_MODES:
            raise ValueError(f"style: choose one of {', '.join(STYLE_MODES)}")
        if style == "bank file" and not bank_file:
            raise ValueError("bank file: give a style bank .pt (sassl style-bank build SOURCE --out FILE)")
        if style == "style image":
            if not style_image:
                raise ValueError("style image: upload one")
            check_upload(style_image, "style upload")
        if style == "batch" and len(contents) < 2:
            raise ValueError("batch: in-batch styles need at least 2 content images")
        g = torch.Generator().manual_seed(int(seed))
        pairs = [(random_resized_crop(im, size, g, crop_scale), random_resized_crop(im, size, g, crop_scale))
                 for im in contents]
        c1 = torch.stack([a for a, _ in pairs]).to(self.device)
        c2 = torch.stack([b for _, b in pairs]).to(self.device)
        setting = {"bank file": bank_file, "style image": style_image}.get(style, style)
        choice = make_style_op(setting, self.stylizer, p=p, alpha=tuple(alpha), beta=tuple(beta), layers=int(layers),
                               batch_offset=(int(offset) % len(contents)) or 1 if style == "batch" else None,
                               progress=False)
        op, bank = choice.op, choice.bank
        names = bank.meta.get("names") if bank is not None else None
        source = op.source
        params = op.sample(len(contents), g)
        out, _ = op(c1, params)  # the real op
        full = dataclasses.replace(params, apply=torch.ones_like(params.apply), beta=torch.ones_like(params.beta))
        stylized, _ = op(c1, full)  # T(content, z) for every image: what the interpolation starts from
        views = TwoViews(normalize=False).to(self.device)
        left = views.apply(out, views.sample(len(contents), 0, g))
        right = views.apply(c2, views.sample(len(contents), 1, g))
        rows = []
        for i in range(len(contents)):
            j = int(params.style_index[i])
            who = {"batch": f"content #{j}", "content": "itself", "noise": "Gaussian noise"}.get(source)
            if who is None:
                who = Path(names[j]).name if names else f"bank row {j}"
            cap = (f"#{i} {'STYLIZED' if params.apply[i] else 'not stylized'}: alpha={params.alpha[i]:.2f} "
                   f"beta={params.beta[i]:.2f} style={who}")
            rows.append({"crop": to_pil(c1[i]), "stylized": to_pil(stylized[i]), "output": to_pil(out[i]),
                         "left": to_pil(left[i]), "right": to_pil(right[i]), "caption": cap})
        fig = self.style_figure(c1, bank, op, params)
        return Result(rows, params.to_dict() | {"layers": int(layers), "seed": int(seed)}, fig)

    def style_figure(self, crops: torch.Tensor, bank, op, params):
        """PCA of the style space: bank styles (grey), contents, and the blended embedding each gets."""
        import plotly.graph_objects as go

        everyone = torch.arange(len(crops), device=self.device)
        zs, zc = (z.float().cpu() for z in op.codes(crops.to(self.device), params, everyone))
        zb = mix(zs, zc, params.alpha)
        ref = torch.cat([bank.embeddings.float(), zc]) if bank is not None and len(bank) > 2 else torch.cat([zc, zs])
        mean = ref.mean(0)
        _, _, v = torch.pca_lowrank(ref - mean, q=2, center=False, niter=4)
        proj = lambda z: ((z - mean) @ v[:, :2]).numpy()  # noqa: E731
        fig = go.Figure()
        if bank is not None:
            b = proj(bank.embeddings.float())
            fig.add_scatter(x=b[:, 0], y=b[:, 1], mode="markers", name="style bank", marker={"color": "#bbb", "size": 6},
                            hovertext=[Path(n).name for n in bank.meta.get("names", [])] or None)
        for z, name, sym in ((zc, "content", "circle"), (zs, "style", "diamond"), (zb, "blended z", "star")):
            q = proj(z)
            fig.add_scatter(x=q[:, 0], y=q[:, 1], mode="markers+text", name=name, text=[f"#{i}" for i in range(len(q))],
                            textposition="top center", marker={"symbol": sym, "size": 11})
        fig.update_layout(template="plotly_white", title="style space (PCA)", height=420, margin={"l": 30, "r": 10, "t": 40, "b": 30})
        return fig

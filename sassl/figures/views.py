"""Image grids of what a run's augmentation pipeline feeds the learner (crops, left and right views)."""
from __future__ import annotations

import torch
from PIL import Image

from sassl.data import get_dataset
from sassl.data.decode import to_pil
from sassl.devices import resolve_device
from sassl.figures.sheet import contact_sheet
from sassl.training.config import style_op
from sassl.data.loader import TwoCrops, to_unit
from sassl.views import VIEWS, TwoViews

def augmented_views(cfg, n: int = 8, seed: int = 0, device: str | None = None):
    """What a run's pipeline feeds the learner: n crop pairs of cfg.dataset through TwoViews (SASSL on
    the left view as cfg says). Returns (crops (n, 3, S, S), left, right (unnormalised, [0, 1]), params)."""
    dev = resolve_device(device or cfg.device)
    ds = get_dataset(cfg.dataset, split="train")
    crops = TwoCrops(ds, cfg.image_size, seed, scale=cfg.crop_scale)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    c1, c2, _ = zip(*(crops[i] for i in idx))
    c1, c2 = to_unit(torch.stack(c1).to(dev)), to_unit(torch.stack(c2).to(dev))
    views = TwoViews(VIEWS[cfg.views], sassl=style_op(cfg, dev, progress=False).op, normalize=False).to(dev)
    v1, v2, params = views(c1, c2, torch.Generator().manual_seed(seed))
    return c1.cpu(), v1.cpu(), v2.cpu(), params


def view_grid(cfg, n: int = 8, seed: int = 0, tile: int = 128, device: str | None = None) -> Image.Image:
    """Contact sheet: crop | left view (SASSL slot) | right view, per image, with the sampled SASSL params."""
    crops, left, right, params = augmented_views(cfg, n, seed, device)
    sp = params[0].sassl
    caps = []
    for i in range(len(crops)):
        if sp is None:
            note = "SASSL off"
        elif bool(sp.apply[i]):
            note = f"a={sp.alpha[i]:.2f} b={sp.beta[i]:.2f} s={int(sp.style_index[i])}"
        else:
            note = "not stylized"
        caps.append(["", note, ""])

    def big(x):  # crops are small (64 px by default): show them at tile size
        return to_pil(x).resize((tile, tile), Image.BICUBIC)

    rows = [[big(crops[i]), big(left[i]), big(right[i])] for i in range(len(crops))]
    return contact_sheet(rows, ["crop", "left view (SASSL)", "right view"], tile=tile, captions=caps)

"""Image grids of what a run's augmentation pipeline feeds the learner (crops, left and right views)."""
from __future__ import annotations

import torch
from PIL import Image

from sassl.data import get_dataset
from sassl.data.decode import to_pil
from sassl.devices import resolve_device
from sassl.figures.sheet import contact_sheet
from sassl.training.config import local_size, style_op
from sassl.training.step import prepare_batch
from sassl.data.loader import TwoCrops, to_unit
from sassl.views import VIEWS, TwoViews

def augmented_views(cfg, n: int = 8, seed: int = 0, device: str | None = None):
    """What a run's pipeline feeds the learner: n crop pairs of cfg.dataset (and its local crops, with multi-crop)
    through TwoViews (SASSL on the crops cfg.sassl_crops names). Returns (crops (n, 3, S, S), left, right
    (unnormalised, [0, 1]), params, local views (a list, each (n, 3, s, s)))."""
    dev = resolve_device(device or cfg.device)
    ds = get_dataset(cfg.dataset, split="train")
    crops = TwoCrops(ds, cfg.image_size, seed, scale=cfg.crop_scale, local_crops=cfg.local_crops,
                     local_size=local_size(cfg), local_scale=cfg.local_scale)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    items = [crops[i] for i in idx]
    c1, c2, *local = (torch.stack([it[k] for it in items]).to(dev) for k in (0, 1, 3)[:2 + bool(cfg.local_crops)])
    views = TwoViews(VIEWS[cfg.views], sassl=style_op(cfg, dev, progress=False).op, normalize=False,
                     crops=cfg.sassl_crops).to(dev)
    (prep,) = prepare_batch(views, c1, c2, torch.Generator().manual_seed(seed), 1, local[0] if local else None)
    v1, v2, params = views.finish(prep)
    return to_unit(c1).cpu(), v1.cpu(), v2.cpu(), params, [v.cpu() for v in views.local_views(prep)]


def view_grid(cfg, n: int = 8, seed: int = 0, tile: int = 128, device: str | None = None) -> Image.Image:
    """Contact sheet: crop | left view (SASSL slot) | right view | each local view (multi-crop), per image, with the
    sampled SASSL params."""
    crops, left, right, params, local = augmented_views(cfg, n, seed, device)
    sp = params[0].sassl
    caps = []
    for i in range(len(crops)):
        if sp is None:
            note = "SASSL off"
        elif bool(sp.apply[i]):
            note = f"a={sp.alpha[i]:.2f} b={sp.beta[i]:.2f} s={int(sp.style_index[i])}"
        else:
            note = "not stylized"
        caps.append(["", note, ""] + [""] * len(local))

    def big(x):  # crops are small (64 px by default): show them at tile size
        return to_pil(x).resize((tile, tile), Image.BICUBIC)

    rows = [[big(crops[i]), big(left[i]), big(right[i])] + [big(v[i]) for v in local] for i in range(len(crops))]
    right, more = (" (SASSL)" if cfg.sassl_crops != "global1" else ""), (" (SASSL)" if cfg.sassl_crops == "all" else "")
    header = ["crop", "left view (SASSL)", "right view" + right] + [f"local {k + 1}{more}" for k in range(len(local))]
    return contact_sheet(rows, header, tile=tile, captions=caps)

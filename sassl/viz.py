"""Image grids for looking at what the augmentation does."""
from __future__ import annotations

from PIL import Image, ImageDraw


def contact_sheet(rows: list[list[Image.Image]], header: list[str] | None = None, tile: int = 160,
                  captions: list[list[str]] | None = None, pad: int = 4) -> Image.Image:
    """Paste rows of images into one sheet of tile x tile cells, with a header line and optional captions."""
    ncols = max(len(r) for r in rows)
    head_h = 18 if header else 0
    cap_h = 14 if captions else 0
    width = pad + ncols * (tile + pad)
    height = head_h + pad + len(rows) * (tile + cap_h + pad)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(header or []):
        draw.text((pad + c * (tile + pad) + 2, 3), text, fill="black")
    for r, row in enumerate(rows):
        y = head_h + pad + r * (tile + cap_h + pad)
        for c, im in enumerate(row):
            im = im.copy()
            im.thumbnail((tile, tile), Image.LANCZOS)
            x = pad + c * (tile + pad)
            sheet.paste(im, (x + (tile - im.width) // 2, y + (tile - im.height) // 2))
            if captions and c < len(captions[r]):
                draw.text((x + 2, y + tile + 1), captions[r][c], fill="black")
    return sheet


def augmented_views(cfg, n: int = 8, seed: int = 0, device: str | None = None):
    """What a run's pipeline feeds the learner: n crop pairs of cfg.dataset through TwoViews (SASSL on
    the left view as cfg says). Returns (crops (n, 3, S, S), left, right (unnormalised, [0, 1]), params)."""
    import torch

    from sassl.data import get_dataset
    from sassl.runtime import resolve_device
    from sassl.train import style_op
    from sassl.views import TwoCrops, TwoViews

    dev = resolve_device(device or cfg.device)
    ds = get_dataset(cfg.dataset, split="train")
    crops = TwoCrops(ds, cfg.image_size, seed, scale=cfg.crop_scale)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    c1, c2, _ = zip(*(crops[i] for i in idx))
    c1, c2 = torch.stack(c1).to(dev), torch.stack(c2).to(dev)
    views = TwoViews(sassl=style_op(cfg, dev, {}), normalize=False).to(dev)
    v1, v2, params = views(c1, c2, torch.Generator().manual_seed(seed))
    return c1.cpu(), v1.cpu(), v2.cpu(), params


def view_grid(cfg, n: int = 8, seed: int = 0, tile: int = 128, device: str | None = None) -> Image.Image:
    """Contact sheet: crop | left view (SASSL slot) | right view, per image, with the sampled SASSL params."""
    from sassl.data.decode import to_pil

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

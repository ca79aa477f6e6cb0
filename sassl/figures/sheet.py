"""Contact sheets: rows of images pasted into one picture (dataset previews, stylization grids, views)."""
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

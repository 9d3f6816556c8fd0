"""Image grids like Figs. 3-4: rows are identities (codes), columns are prompts or seeds."""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw


def image_grid(rows: Sequence[Sequence[Image.Image]], row_labels: Sequence[str] | None = None,
               pad: int = 2, label_width: int = 0) -> Image.Image:
    if not rows or not rows[0]:
        raise ValueError("a grid needs at least one row with one image")
    w, h = rows[0][0].size
    cols = max(len(r) for r in rows)
    grid = Image.new("RGB", (label_width + cols * (w + pad) + pad, len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for r, images in enumerate(rows):
        y = pad + r * (h + pad)
        if row_labels and label_width:
            draw.text((2, y + h // 2 - 5), row_labels[r], fill="black")
        for c, img in enumerate(images):
            grid.paste(img.convert("RGB").resize((w, h)), (label_width + pad + c * (w + pad), y))
    return grid

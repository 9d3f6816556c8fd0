"""Image grids like Figs. 3-4: rows are identities (codes), columns are prompts or seeds."""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw


def image_grid(rows: Sequence[Sequence[Image.Image]], row_labels: Sequence[str] | None = None,
               pad: int = 2, label_width: int = 0, max_side: int = 256) -> Image.Image:
    """Tiles take the first image's size, shrunk to fit `max_side` (1024 px renders make 256 px tiles)."""
    if not rows or not rows[0]:
        raise ValueError("a grid needs at least one row with one image")
    w, h = rows[0][0].size
    if max(w, h) > max_side:
        w, h = max(1, round(w * max_side / max(w, h))), max(1, round(h * max_side / max(w, h)))
    cols = max(len(r) for r in rows)
    grid = Image.new("RGB", (label_width + cols * (w + pad) + pad, len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for r, images in enumerate(rows):
        y = pad + r * (h + pad)
        if row_labels and label_width:
            draw.text((2, y + h // 2 - 5), row_labels[r], fill="black")
        for c, img in enumerate(images):
            tile = img.convert("RGB")
            grid.paste(tile if tile.size == (w, h) else tile.resize((w, h), Image.BICUBIC),
                       (label_width + pad + c * (w + pad), y))
    return grid

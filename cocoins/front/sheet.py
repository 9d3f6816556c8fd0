"""A character sheet: one character in one prompt at several noise seeds, side by side, so a user sees who the
code draws before using it (`cocoins character show`, the app's "Character sheet" button)."""

from __future__ import annotations

from typing import Sequence

from PIL import Image

from cocoins.characters.looks import LOOK_SEEDS

SHEET_PROMPT = "a portrait of a <{name}>person</{name}>"
SHEET_SEEDS = LOOK_SEEDS      # the sheet shows what casting measures (cocoins.characters.looks)


def render_sheet(pipe, name: str, prompt: str | None = None, seeds: Sequence[int] = SHEET_SEEDS,
                 **call_kwargs) -> tuple[Image.Image, str]:
    """The strip of `name` in `prompt` (default SHEET_PROMPT) at each noise seed, and the prompt used;
    `call_kwargs` go to `CoCoInsPipeline.__call__` (steps, guidance, size, batch_size, ...)."""
    from cocoins.method.latent_space import image_strip

    prompt = prompt or SHEET_PROMPT.format(name=name)
    out = pipe([prompt] * len(seeds), seed=list(seeds), **call_kwargs)
    return image_strip(out.images), prompt

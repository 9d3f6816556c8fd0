"""Appendix C.3 figures of the latent space: the interpolation strip (Fig. 8) and the neighbour ranking (Fig. 9).

Both use `cocoins.method.latent_space` (slerp between codes, neighbours by pseudo-word cosine); while that
module is absent the figures are skipped and the stage says so.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from cocoins.eval.prompt_sets import PORTRAIT_TEMPLATE, tag_subject
from cocoins.method.mapper import pseudo_words_one_by_one

LATENT_SPACE = "cocoins.method.latent_space"


def _render_codes(pipe, encoder, mapper, codes: torch.Tensor, prompt: str, noise_seed: int, steps: int,
                  guidance: float, resolution: int, batch_size: int) -> list:
    """One image per code [N, c], all with the same prompt and the same initial noise."""
    from cocoins.sdxl.generate import generate

    images = []
    for start in range(0, len(codes), batch_size):
        z = codes[start:start + batch_size].to(pipe.unet.device)
        words = pseudo_words_one_by_one(mapper, z[:, None, :])
        result = generate(pipe, encoder, [prompt] * len(z), words, [noise_seed] * len(z), steps=steps,
                          guidance=guidance, height=resolution, width=resolution)
        images.extend(result.images)
    return images


def draw_latent_space_figures(pipe, encoder, mapper, e, out_dir: Path, subject: str = "person") -> str:
    """Write interpolation.png (Fig. 8) and neighbors.png (Fig. 9) into `out_dir`; return a one-line note."""
    if importlib.util.find_spec(LATENT_SPACE) is None:
        return f"Figs. 8-9 skipped: {LATENT_SPACE} is not in this checkout"
    ls = importlib.import_module(LATENT_SPACE)
    missing = [name for name in ("interpolate_codes", "neighbor_order", "image_strip") if not hasattr(ls, name)]
    if missing:
        return f"Figs. 8-9 skipped: {LATENT_SPACE} has no {', '.join(missing)}"
    if e.interpolation_steps < 2 or e.neighbor_codes < 2:
        return "Figs. 8-9 skipped: eval.interpolation_steps and eval.neighbor_codes must be at least 2"
    args = (tag_subject(PORTRAIT_TEMPLATE, subject), e.seed, e.steps, e.guidance, e.resolution, e.batch_size)
    z = torch.randn(e.neighbor_codes, mapper.config.code_dim, generator=torch.Generator().manual_seed(e.seed))
    with torch.no_grad():
        # Fig. 8: two random codes and the slerp between them, one fixed initial noise.
        codes, _ = ls.interpolate_codes(z[0], z[1], e.interpolation_steps)
        strip = _render_codes(pipe, encoder, mapper, codes, *args)
        ls.image_strip(strip).save(out_dir / "interpolation.png", optimize=False)
        # Fig. 9: code 0 first, then the others by cosine of their pseudo-words to code 0's.
        order, _ = ls.neighbor_order(pseudo_words_one_by_one(mapper, z).cpu(), 0)
        ranked = _render_codes(pipe, encoder, mapper, z[order], *args)
        ls.image_strip(ranked).save(out_dir / "neighbors.png", optimize=False)
    return (f"Figs. 8-9 drawn: interpolation.png ({len(strip)} images), neighbors.png "
            f"({len(ranked)} codes, nearest first)")

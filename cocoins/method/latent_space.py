"""The latent space of Appendix C: interpolating codes (Fig. 8) and neighbours of a pseudo-word (Fig. 9).

Pure tensor functions; `cocoins interpolate` and `cocoins neighbors` render their results.

Interpolation is spherical (slerp) by default. Codes are z ~ N(0, I) in c = 256 dimensions, whose norm
concentrates at sqrt(c) (= 16 ± 0.7): the mapper only ever saw codes on that shell. A straight line between
two codes cuts inside it (the midpoint of two independent codes has norm about sqrt(c / 2) ≈ 11.3, a
code N(0, I) practically never produces), while slerp stays on it (White, "Sampling Generative Networks",
2016). `lerp` is kept for comparison; both return the two codes exactly at t = 0 and t = 1.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from PIL import Image

# Below this angle between the codes, slerp is numerically a lerp (sin(omega) ~ 0).
_SLERP_MIN_ANGLE = 1e-4


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """(1 - t) a + t b."""
    return a if t == 0 else b if t == 1 else (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation: sin((1 - t) Ω) / sin Ω · a + sin(t Ω) / sin Ω · b, Ω the angle between a and b.

    Equal to a at t = 0 and b at t = 1 exactly; keeps the norm when |a| = |b|.
    """
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    a64, b64 = a.double(), b.double()
    cos = torch.dot(a64.flatten(), b64.flatten()) / (a64.norm() * b64.norm())
    omega = torch.arccos(cos.clamp(-1.0, 1.0)).item()
    if omega < _SLERP_MIN_ANGLE:
        return lerp(a, b, t)
    s = math.sin(omega)
    return ((math.sin((1 - t) * omega) / s) * a64 + (math.sin(t * omega) / s) * b64).to(a.dtype)


def interpolate_codes(z_a: torch.Tensor, z_b: torch.Tensor, frames: int,
                      mode: Literal["slerp", "lerp"] = "slerp") -> tuple[torch.Tensor, list[float]]:
    """`frames` codes from z_a to z_b at evenly spaced t (Fig. 8): ([frames, c], the t values)."""
    if frames < 2:
        raise ValueError(f"interpolation needs at least 2 frames (the two endpoints), got {frames}")
    if z_a.shape != z_b.shape:
        raise ValueError(f"codes differ in shape: {list(z_a.shape)} vs {list(z_b.shape)}")
    fn = {"slerp": slerp, "lerp": lerp}.get(mode)
    if fn is None:
        raise ValueError(f"unknown interpolation {mode!r}; use slerp or lerp")
    ts = [i / (frames - 1) for i in range(frames)]
    return torch.stack([fn(z_a, z_b, t) for t in ts]), ts


def cosine_similarities(query: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of one pseudo-word [d] to each of `words` [N, d] -> [N] (Fig. 9)."""
    query, words = query.double().flatten(), words.double().flatten(1)
    return (words @ query) / (words.norm(dim=1) * query.norm()).clamp_min(1e-12)


def neighbor_order(words: torch.Tensor, query: int) -> tuple[list[int], torch.Tensor]:
    """Fig. 9's ordering: the query first, then the other codes by descending cosine similarity of their
    pseudo-words to the query's. Returns (indices in display order, similarity of each to the query [N]).
    Ties keep index order (a stable sort), so the order is reproducible."""
    if not 0 <= query < words.shape[0]:
        raise ValueError(f"query index {query} is outside the {words.shape[0]} sampled codes")
    sims = cosine_similarities(words[query], words)
    others = [i for i in range(words.shape[0]) if i != query]
    others.sort(key=lambda i: -sims[i].item())   # Python's sort is stable
    return [query] + others, sims


def image_strip(images: Sequence[Image.Image], gap: int = 4, background: tuple[int, int, int] = (255, 255, 255)
                ) -> Image.Image:
    """Images side by side, left to right, `gap` pixels apart."""
    if not images:
        raise ValueError("no images to put in a strip")
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    strip = Image.new("RGB", (width, max(im.height for im in images)), background)
    x = 0
    for im in images:
        strip.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return strip

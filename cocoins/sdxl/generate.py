"""Generate images with pseudo-words through the stock diffusers SDXL pipeline.

We only build the text conditioning (Eq. 4 via `PromptEncoder`) and hand it to
`StableDiffusionXLPipeline.__call__` as `prompt_embeds` / `pooled_prompt_embeds`, so scheduling, classifier-free
guidance, micro-conditioning, offloading and VAE decoding stay diffusers' own. The final latents are read
with a `callback_on_step_end` at the last step, the very tensor the pipeline then decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from PIL import Image
from torch import Tensor

from cocoins.sdxl.encode import PromptEncoder


@dataclass
class GenerationResult:
    images: list[Image.Image] | None  # None for output_type="latent"
    latents: Tensor                   # [B, 4, h, w] final denoised latents (scaled, before VAE decode)


def generate(pipe, encoder: PromptEncoder, tagged_prompts: Sequence[str], pseudo_words: Tensor | None,
             seeds: Sequence[int], steps: int, guidance: float, height: int, width: int,
             negative_prompt: str | Sequence[str] | None = None,
             output_type: Literal["pil", "latent"] = "pil") -> GenerationResult:
    """Generate one image per tagged prompt, instantiating subjects with `pseudo_words`.

    Args:
        pipe: a `StableDiffusionXLPipeline` (its tokenizers/encoders should be the ones `encoder` wraps).
        encoder: the `PromptEncoder` building ê = insert(e, w, i) (Eq. 4).
        tagged_prompts: B prompts with `<subjN>` tags (tags are stripped; plain prompts are fine).
        pseudo_words: [B, S, d1 + d2] mapper outputs w = f(z) (Eq. 3), or None for the plain prompts.
        seeds: B seeds; image b's initial noise comes from its own CPU `torch.Generator(seeds[b])`, so it does
            not depend on batch composition or device.
        steps, guidance: `num_inference_steps`, `guidance_scale` (CFG applies when guidance > 1).
        negative_prompt: plain text encoded by the pipeline itself; None gives SDXL's zeroed negative.
        output_type: "pil" decodes images; "latent" skips the VAE.
    """
    if len(seeds) != len(tagged_prompts):
        raise ValueError(f"got {len(seeds)} seeds for {len(tagged_prompts)} prompts; pass one seed per prompt")
    if output_type not in ("pil", "latent"):
        raise ValueError(f"output_type must be 'pil' or 'latent', got {output_type!r}")
    tokenized = encoder.tokenize(tagged_prompts, insert=pseudo_words is not None)
    with torch.no_grad():
        encoded = encoder.encode(tokenized, pseudo_words)
    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    captured: dict[str, Tensor] = {}

    def keep_final_latents(_pipe, step: int, _t, callback_kwargs: dict) -> dict:
        captured["latents"] = callback_kwargs["latents"]
        return {}  # change nothing

    out = pipe(
        prompt_embeds=encoded.prompt_embeds, pooled_prompt_embeds=encoded.pooled_prompt_embeds,
        negative_prompt=negative_prompt, num_inference_steps=steps, guidance_scale=guidance,
        height=height, width=width, generator=generators, output_type=output_type,
        callback_on_step_end=keep_final_latents, callback_on_step_end_tensor_inputs=["latents"],
    )
    if output_type == "latent":
        return GenerationResult(images=None, latents=out.images)
    return GenerationResult(images=list(out.images), latents=captured["latents"])

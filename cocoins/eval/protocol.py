"""Generation protocol of the evaluation: every identity's saved code on several prompts and noises.

Each job is (identity, prompt, noise seed). Noise seeds depend on the prompt and repeat index only, so all
identities of a subject share the same initial noises, and the no-pseudo-word baseline renders the very
same jobs: differences between rows come from the codes alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from cocoins.method.mapper import Mapper, sample_codes


@dataclass
class Rendered:
    jobs: pd.DataFrame          # one row per image: identity_id, subject, prompt_id, setting, tagged, seeds
    latents: torch.Tensor       # [N, 4, h, w] final denoised latents
    images: list                # PIL images, in job order


def make_jobs(identities: pd.DataFrame, prompts: pd.DataFrame, seeds_per_prompt: int, base_seed: int) -> pd.DataFrame:
    rows = []
    for ident in identities.itertuples():
        subject_prompts = prompts[prompts.subject == ident.subject].reset_index(drop=True)
        for p_index, prompt in enumerate(subject_prompts.itertuples()):
            for j in range(seeds_per_prompt):
                rows.append({"identity_id": ident.identity_id, "subject": ident.subject,
                             "code_seed": int(ident.code_seed), "prompt_id": prompt.prompt_id,
                             "setting": prompt.setting, "tagged": prompt.tagged,
                             "noise_seed": int(base_seed + 1_000 * p_index + j)})
    return pd.DataFrame(rows)


def codes_for(jobs: pd.DataFrame, code_dim: int) -> torch.Tensor:
    """The latent code z of each job's identity: N(0, I) from its recorded code seed. [N, 1, c]."""
    return torch.cat([sample_codes(torch.Generator().manual_seed(int(s)), 1, 1, code_dim)
                      for s in jobs["code_seed"]])


@torch.no_grad()
def render(pipe, encoder, mapper: Mapper | None, jobs: pd.DataFrame, steps: int, guidance: float,
           resolution: int, batch_size: int, desc: str) -> Rendered:
    """Render every job, with the mapper's pseudo-word or (mapper None) with the plain prompt."""
    from cocoins.sdxl.generate import generate

    latents, images = [], []
    device = pipe.unet.device
    for start in tqdm(range(0, len(jobs), batch_size), desc=desc):
        chunk = jobs.iloc[start:start + batch_size]
        pseudo_words = None
        if mapper is not None:
            pseudo_words = mapper(codes_for(chunk, mapper.config.code_dim).to(device))
        result = generate(pipe, encoder, chunk["tagged"].tolist(), pseudo_words, chunk["noise_seed"].tolist(),
                          steps=steps, guidance=guidance, height=resolution, width=resolution)
        latents.append(result.latents.float().cpu())
        images.extend(result.images)
    return Rendered(jobs.reset_index(drop=True), torch.cat(latents), images)

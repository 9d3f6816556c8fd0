"""Generation protocol of the evaluation: every identity's saved code on several prompts and noises.

Each job is (identity, prompt, repeat) with its noise seed. Two noise schemes (`eval.noise`):
- `independent` (default, the paper's Sim / Div): every (identity, prompt, repeat) has its own initial noise,
  as a user who samples a new code and a new seed gets. Two codes never share a noise, so Div measures the
  people the codes draw, not how far one noise can be pushed by a code.
- `shared`: the noise depends on the prompt and repeat only, so all identities share the same initial noises
  (the paper fixes noise like this only for Figs. 8-9): differences between rows come from the codes alone.
In both, the no-pseudo-word baseline renders the very same jobs (same noise per job).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from cocoins.method.mapper import Mapper, pseudo_words_one_by_one, sample_codes


@dataclass
class Rendered:
    jobs: pd.DataFrame          # one row per image: identity_id, subject, prompt_id, setting, tagged, seeds
    latents: torch.Tensor       # [N, 4, h, w] final denoised latents
    images: list                # PIL images, in job order


NOISE_SCHEMES = ("independent", "shared")
# Seed layout: base + IDENTITY_STRIDE * (identity row + 1) + PROMPT_STRIDE * prompt index + repeat (independent),
# base + PROMPT_STRIDE * prompt index + repeat (shared). The strides keep every job's seed distinct.
PROMPT_STRIDE, IDENTITY_STRIDE = 1_000, 1_000_000


def noise_seed(base_seed: int, scheme: str, identity_row: int, prompt_index: int, repeat: int) -> int:
    """The initial-noise seed of one job; `identity_row` is the identity's row in the full identity table, so
    evaluating fewer identities (Scenes) keeps every remaining job's seed."""
    if scheme not in NOISE_SCHEMES:
        raise ValueError(f"eval.noise must be one of {', '.join(NOISE_SCHEMES)}, got {scheme!r}")
    if not 0 <= repeat < PROMPT_STRIDE or not 0 <= prompt_index < IDENTITY_STRIDE // PROMPT_STRIDE:
        raise ValueError(f"seed layout holds < {PROMPT_STRIDE} repeats and < {IDENTITY_STRIDE // PROMPT_STRIDE} "
                         f"prompts per subject, got repeat {repeat}, prompt {prompt_index}")
    shared = base_seed + PROMPT_STRIDE * prompt_index + repeat
    return int(shared if scheme == "shared" else shared + IDENTITY_STRIDE * (identity_row + 1))


def make_jobs(identities: pd.DataFrame, prompts: pd.DataFrame, seeds_per_prompt: int, base_seed: int,
              noise: str = "independent", identities_per_subject: int | None = None) -> pd.DataFrame:
    """One row per (identity, prompt of its subject, repeat). `identities_per_subject` keeps each subject's
    first identities only (None: all)."""
    rows = []
    kept: dict[str, int] = {}
    for row, ident in enumerate(identities.itertuples()):
        kept[ident.subject] = kept.get(ident.subject, 0) + 1
        if identities_per_subject is not None and kept[ident.subject] > identities_per_subject:
            continue
        subject_prompts = prompts[prompts.subject == ident.subject].reset_index(drop=True)
        for p_index, prompt in enumerate(subject_prompts.itertuples()):
            for j in range(seeds_per_prompt):
                rows.append({"identity_id": ident.identity_id, "subject": ident.subject,
                             "code_seed": int(ident.code_seed), "prompt_id": prompt.prompt_id,
                             "setting": prompt.setting, "tagged": prompt.tagged,
                             "noise_seed": noise_seed(base_seed, noise, row, p_index, j)})
    return pd.DataFrame(rows)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def render_dtype(name: str, device: torch.device) -> torch.dtype:
    """`eval.dtype`: auto is bf16 on CUDA (SDXL's VAE overflows in fp16, where diffusers upcasts it to fp32 by
    its `force_upcast`; bf16 has fp32's range) and fp32 on CPU, so the mini-world renders the same bits."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"eval.dtype must be auto, {', '.join(DTYPES)}; got {name!r}")
    return DTYPES[name]


def fit_decoding(pipe, device: torch.device) -> bool:
    """On a GPU, decode a batch one image at a time (the VAE's slicing): at 1024 px a batched decode is the
    largest activation of the whole call. On CPU nothing changes (a sliced decode sums in another order, and
    the mini-world's renders keep their bits). Returns whether slicing is on."""
    if device.type != "cuda":
        return False
    pipe.vae.enable_slicing()
    return True


def codes_for(jobs: pd.DataFrame, code_dim: int) -> torch.Tensor:
    """The latent code z of each job's identity: N(0, I) from its recorded code seed. [N, 1, c]."""
    return torch.cat([sample_codes(torch.Generator().manual_seed(int(s)), 1, 1, code_dim)
                      for s in jobs["code_seed"]])


@torch.no_grad()
def render(pipe, encoder, mapper: Mapper | None, jobs: pd.DataFrame, steps: int, guidance: float,
           resolution: int, batch_size: int, desc: str, progress: bool = True) -> Rendered:
    """Render every job, with the mapper's pseudo-word or (mapper None) with the plain prompt."""
    from cocoins.sdxl.generate import generate

    latents, images = [], []
    for start in tqdm(range(0, len(jobs), batch_size), desc=desc, disable=not progress):
        chunk = jobs.iloc[start:start + batch_size]
        pseudo_words = None
        if mapper is not None:
            pseudo_words = pseudo_words_one_by_one(mapper, codes_for(chunk, mapper.config.code_dim))
        result = generate(pipe, encoder, chunk["tagged"].tolist(), pseudo_words, chunk["noise_seed"].tolist(),
                          steps=steps, guidance=guidance, height=resolution, width=resolution)
        latents.append(result.latents.float().cpu())
        images.extend(result.images)
    return Rendered(jobs.reset_index(drop=True), torch.cat(latents), images)

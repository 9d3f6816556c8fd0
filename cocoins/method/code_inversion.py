"""A person's code from one photo: the z whose pseudo-word f(z) draws them, base model and mapper frozen.

    z* = argmin_z  E_{t, ε} || m ⊙ (ε_θ(x_t, ê(P, f(z)), t) - ε) ||² / |m|     with ||z|| = sqrt(c)

x is the photo's latent, m its subject mask at latent resolution (as the train stage masks L_dis, Eq. 7),
P a prompt with one `<subj1>` span, ê the prompt with f(z) inserted (Eqs. 3-4) and x_t the noised latent
(Eq. 1). Only z moves. The mapper was trained on z ~ N(0, I): in c dimensions such draws lie within a few
percent of the sphere ||z|| = sqrt(c), so z is projected back onto that sphere after every step. A
-log N(z; 0, I) penalty instead would pull z towards 0, the least typical code of all, whose pseudo-word the
mapper never saw during training.

Unlike textual inversion (a free word, Gal et al. 2023), the result is an ordinary code of this mapper: the
same 256 numbers as a drawn character, held in the library, fingerprinted to the mapper, usable with any
prompt. Unlike reference encoders (IP-Adapter, PhotoMaker) the photo is needed once, not at every render.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class CodeInversionConfig:
    steps: int = 60               # Adam steps on z
    noises: int = 8               # (ε, t) pairs per step: the expectation's sample size
    lr: float = 0.15
    candidates: int = 32          # z ~ N(0, I) draws scored by the same loss; the best one starts the descent
    min_timestep: int = 100       # identity lives in the mid-to-high noise levels; t below this only
                                  # re-draws fine texture and adds variance


@dataclass
class CodeInversionResult:
    z: torch.Tensor               # [c], on the sphere ||z|| = sqrt(c)
    losses: list[float]           # masked denoising loss per Adam step
    start_loss: float             # the best candidate's loss, before the descent


def project_to_prior_shell(z: torch.Tensor) -> torch.Tensor:
    """Rescale each code [..., c] to norm sqrt(c), where z ~ N(0, I) lives (its norm is sqrt(c) ± ~0.7)."""
    c = z.shape[-1]
    return z * (c ** 0.5) / z.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def masked_denoising_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of the squared error inside the mask: ||m ⊙ (ε̂ - ε)||² / (|m| · channels), [B]."""
    se = (prediction - target).pow(2) * mask
    return se.flatten(1).sum(1) / (mask.flatten(1).sum(1) * prediction.shape[1]).clamp_min(1.0)


def latent_mask(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """A pixel mask [H, W] in {0, 1} at latent resolution [1, 1, h, w] (area average, then > 0.5: the latent
    cell is subject when most of its pixels are)."""
    m = torch.nn.functional.adaptive_avg_pool2d(mask.float()[None, None], latent_size)
    return (m > 0.5).float() if (m > 0.5).any() else (m > 0).float()


class CodeInverter:
    """Holds the frozen pieces (VAE, UNet, scheduler, prompt encoder, mapper) and fits codes to photos."""

    def __init__(self, sdxl, encoder, mapper):
        self.vae, self.unet = sdxl.vae, sdxl.unet
        self.alphas = sdxl.scheduler.alphas_cumprod.float()
        self.prediction = sdxl.scheduler.config.prediction_type
        self.encoder, self.mapper = encoder, mapper

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """x = E(photo) · scaling, the photo [3, H, W] in [-1, 1] -> [1, 4, h, w]."""
        dtype = next(self.vae.parameters()).dtype
        x = self.vae.encode(pixels[None].to(dtype)).latent_dist.mean
        return x.float() * self.vae.config.scaling_factor

    def _losses(self, z: torch.Tensor, x0, mask, tokens, eps, t, time_ids) -> torch.Tensor:
        """The masked denoising loss of each code in z [K, c] on the same (ε, t) draws [N]: [K]."""
        k, n = z.shape[0], eps.shape[0]
        words = self.mapper(z)[:, None, :].repeat_interleave(n, dim=0)          # Eq. 3, [K·N, 1, d]
        encoded = self.encoder.encode(tokens, words)                             # Eq. 4
        abar = self.alphas[t].repeat(k)[:, None, None, None]
        eps_k = eps.repeat(k, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps_k                       # Eq. 1
        out = self.unet(x_t, t.repeat(k), encoder_hidden_states=encoded.prompt_embeds,
                        added_cond_kwargs={"text_embeds": encoded.pooled_prompt_embeds,
                                           "time_ids": time_ids.expand(k * n, -1)}).sample.float()
        target = eps_k if self.prediction == "epsilon" else abar.sqrt() * eps_k - (1 - abar).sqrt() * x0
        return masked_denoising_loss(out, target, mask).reshape(k, n).mean(1)

    def _draws(self, gen: torch.Generator, shape, n: int, floor: int):
        eps = torch.randn((n, *shape), generator=gen)
        t = torch.randint(min(floor, len(self.alphas) - 1), len(self.alphas), (n,), generator=gen)
        return eps, t

    def fit(self, pixels: torch.Tensor, mask: torch.Tensor, prompt: str, cfg: CodeInversionConfig,
            seed: int = 0, progress: bool = True) -> CodeInversionResult:
        """The code of the person in `pixels` [3, H, W] ([-1, 1]) inside `mask` [H, W]; `prompt` tags them
        with `<subj1>`. The same (photo, prompt, cfg, seed) give the same code."""
        code_dim = int(self.mapper.config.code_dim)
        device = next(self.unet.parameters()).device
        gen = torch.Generator().manual_seed(int(seed))
        x0 = self.latents(pixels.to(device))
        m = latent_mask(mask, tuple(x0.shape[-2:])).to(device)
        h, w = pixels.shape[-2:]
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32, device=device)
        self.unet.requires_grad_(False)
        self.mapper.requires_grad_(False)
        for enc in self.encoder.text_encoders:
            enc.requires_grad_(False)

        def tokens(n):
            return self.encoder.tokenize([prompt] * n, insert=True)

        candidates = torch.randn(cfg.candidates, code_dim, generator=gen)
        eps, t = self._draws(gen, x0.shape[1:], cfg.noises, cfg.min_timestep)
        with torch.no_grad():
            scores = torch.cat([self._losses(candidates[i:i + 4].to(device), x0, m, tokens(len(candidates[i:i + 4])
                                                                                          * cfg.noises),
                                             eps.to(device), t.to(device), time_ids)
                                for i in range(0, cfg.candidates, 4)])
        best = int(scores.argmin())
        z = project_to_prior_shell(candidates[best:best + 1]).to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=cfg.lr)
        step_tokens = tokens(cfg.noises)
        losses = []
        for _ in tqdm(range(cfg.steps), desc="code from photo", disable=not progress):
            eps, t = self._draws(gen, x0.shape[1:], cfg.noises, cfg.min_timestep)
            loss = self._losses(z, x0, m, step_tokens, eps.to(device), t.to(device), time_ids).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                z.copy_(project_to_prior_shell(z))
            losses.append(float(loss.detach()))
        return CodeInversionResult(z.detach()[0].cpu(), losses, float(scores[best]))

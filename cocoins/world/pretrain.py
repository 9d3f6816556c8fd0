"""Train the mini SDXL from scratch (the `base` stage with `models.sdxl: mini`): the mini-world's "pretraining".

Three phases, as for latent diffusion:
1. Render a corpus of single-person portraits of fresh random identities (a world seed of its own, so the
   corpus people are not the ingest world's) and write `captions_per_image` captions for each
   (`captions.corpus_caption`: a `describe_share` of them describe the person, the rest name only the
   class). `named_people` more identities get `named_images` portraits each and a one-token name;
   `name_share` of their captions call them by it in the slot before the noun (`captions.named_caption`),
   as web captions name celebrities. Why: without them no single token of the text encoder stands for a
   whole person, and a pseudo-word (Eq. 4) cannot either (see README, "The mini-world").
2. Train the AutoencoderKL: L = ||D(z) - I||^2 + kl_weight * KL(q(z|I) || N(0, I)), z ~ q(z|I). Then set
   `scaling_factor` = 1 / std of the posterior means, in the config before saving (SDXL's 0.13025 plays the
   same role: unit-variance latents for the diffusion model).
3. Train the UNet and both text encoders (less their token tables) together on those latents with the
   pipeline scheduler's noise schedule (`mini_sdxl.MINI_SCHEDULER`) and its objective, for v-prediction
   L = ||v - v_theta(x_t, t, c)||^2 with x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps and
   v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (epsilon: the target is eps), dropping the
   caption 10% of the time to SDXL's zeroed embeddings (`force_zeros_for_empty_prompt`), the unconditional
   branch of classifier-free guidance. An EMA of the UNet is what is saved. The text encoders are frozen
   afterwards, like SDXL's: the mapper later trains against them.

Everything runs from seeds; with the same arguments and thread count the saved weights are the same bits.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cocoins.sdxl.encode import PromptEncoder, TokenizedPrompts, TokenSequences
from cocoins.world.captions import corpus_caption, name_tokens, named_caption
from cocoins.world.mini_sdxl import MiniArchitecture, build_mini_sdxl
from cocoins.world.people import SCENES, ImageSpec, WorldConfig, draw_traits, render


NAMES_FILE = "corpus_names.txt"   # the named people's names, one a line (diagnostics prompt with them)


@dataclass(frozen=True)
class MiniTrainConfig:
    """How the mini SDXL is trained (defaults: the embedded mini-world, about 16 minutes on 2 CPU cores)."""
    seed: int = 0
    corpus_seed: int = 1000            # world seed of the corpus identities (the ingest world uses data.seed)
    corpus_images: int = 4000
    captions_per_image: int = 4
    describe_share: float = 0.6        # captions that describe the person; the rest name only the class
    named_people: int = 0              # identities with a one-token name (0: none, the earlier mini-world)
    named_images: int = 5              # portraits of each named person
    name_share: float = 0.8            # captions of a named person's portrait that use the name
    train_used_rows: bool = False      # train the token-table rows of the words the corpus uses (names too)
    vae_steps: int = 3000
    vae_batch: int = 16                # measured: small batches, more steps reach a lower MSE in the same time
    vae_lr: float = 3e-3
    kl_weight: float = 1e-6
    unet_steps: int = 2500
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup_steps: int = 100
    caption_dropout: float = 0.1
    ema_decay: float = 0.999


@dataclass
class MiniCorpus:
    images: torch.Tensor        # [N, 3, S, S] float32 in [-1, 1]
    captions: list[list[str]]   # N lists of captions_per_image captions
    names: tuple[str, ...] = ()  # the named people's names, in identity order


def render_corpus(cfg: MiniTrainConfig, image_size: int) -> MiniCorpus:
    """Portraits of `corpus_images` random identities (one image each), then `named_images` portraits of
    each of `named_people` named identities; scenes drawn per image."""
    world = WorldConfig(seed=cfg.corpus_seed, image_size=image_size)
    rng = random.Random(cfg.corpus_seed)
    scenes = list(SCENES)
    names = name_tokens(cfg.named_people, cfg.corpus_seed) if cfg.named_people else ()
    # (identity, name or None) per image: the unnamed first, so named_people = 0 keeps the earlier corpus.
    plan = [(k + 1, None) for k in range(cfg.corpus_images)]
    plan += [(cfg.corpus_images + j + 1, name) for j, name in enumerate(names) for _ in range(cfg.named_images)]
    pixels, captions = [], []
    for k, (identity, name) in enumerate(tqdm(plan, desc="mini corpus", unit="img")):
        traits = draw_traits(cfg.corpus_seed, identity)
        spec = ImageSpec(f"{k:06d}", (identity,), rng.choice(scenes), k)
        image, _ = render(spec, {identity: traits}, world)
        pixels.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        captions.append([named_caption(name, traits, spec.scene, rng)
                         if name is not None and rng.random() < cfg.name_share
                         else corpus_caption(traits, spec.scene, rng, cfg.describe_share)
                         for _ in range(cfg.captions_per_image)])
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return MiniCorpus(images=x.contiguous(), captions=captions, names=names)


def _cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_vae(vae, images: torch.Tensor, cfg: MiniTrainConfig, gen: torch.Generator) -> dict[str, float]:
    """Phase 2: reconstruction MSE + kl_weight * KL, AdamW with cosine decay. Returns the last losses."""
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, cfg.vae_steps, cfg.warmup_steps))
    mse = kl = 0.0
    bar = tqdm(range(cfg.vae_steps), desc="mini VAE", unit="step")
    for _ in bar:
        batch = images[torch.randint(len(images), (cfg.vae_batch,), generator=gen)]
        posterior = vae.encode(batch).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        rec_loss = F.mse_loss(recon, batch)
        kl_loss = posterior.kl().mean()
        loss = rec_loss + cfg.kl_weight * kl_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        mse, kl = rec_loss.item(), kl_loss.item()
        bar.set_postfix(mse=f"{mse:.4f}")
    vae.eval().requires_grad_(False)
    return {"vae_mse": mse, "vae_kl": kl}


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior means (unscaled), as `cocoins.data.shards` encodes the training set."""
    return torch.cat([vae.encode(images[i:i + batch]).latent_dist.mean for i in range(0, len(images), batch)])


def _subset(tokenized: TokenizedPrompts, rows: list[int]) -> TokenizedPrompts:
    seqs = tuple(TokenSequences(s.input_ids[rows], tuple(s.positions[r] for r in rows),
                                tuple(s.subjects[r] for r in rows)) for s in tokenized.sequences)
    return TokenizedPrompts(tuple(tokenized.prompts[r] for r in rows), seqs, False,
                            tuple(tokenized.dropped[r] for r in rows))


class UsedRows(torch.nn.Module):
    """Trainable copies of the token-table rows of the ids a corpus uses, swapped in by a forward hook on the
    encoder's token embedding; `write_back` copies them into the table and removes the hook. SDXL's text
    encoders learned every word's row, a celebrity's name included: that is what made one token able to stand
    for a whole person. Training only the used rows keeps the step as cheap as with a frozen table."""

    def __init__(self, text_encoder, input_ids: torch.Tensor):
        super().__init__()
        self.table = text_encoder.get_input_embeddings()
        self.ids = torch.unique(input_ids)
        self.rows = torch.nn.Parameter(self.table.weight[self.ids].detach().clone())
        lookup = torch.full((self.table.num_embeddings,), -1, dtype=torch.long)
        lookup[self.ids] = torch.arange(len(self.ids))
        self.register_buffer("lookup", lookup, persistent=False)
        self.handle = self.table.register_forward_hook(self._swap)

    def _swap(self, module, args, output: torch.Tensor) -> torch.Tensor:
        slot = self.lookup[args[0]]
        return torch.where((slot >= 0)[..., None], self.rows[slot.clamp(min=0)], output)

    @torch.no_grad()
    def write_back(self) -> None:
        self.table.weight[self.ids] = self.rows.detach()
        self.handle.remove()


def train_unet(pipe, latents: torch.Tensor, captions: list[list[str]], cfg: MiniTrainConfig,
               gen: torch.Generator) -> tuple[torch.nn.Module, dict[str, float]]:
    """Phase 3: the scheduler's objective on scaled latents, UNet and text encoders together. Returns (EMA UNet,
    last losses)."""
    unet, te1, te2 = pipe.unet, pipe.text_encoder, pipe.text_encoder_2
    encoder = PromptEncoder.from_pipeline(pipe)
    flat = [c for per_image in captions for c in per_image]
    tokenized = encoder.tokenize(flat, insert=False)
    # Captions longer than the window lose their end (as in SDXL): counted in the summary, not lost silently.
    truncated = sum(any(len(ids) > tok.model_max_length for tok, ids in zip(encoder.tokenizers, per_caption))
                    for per_caption in zip(*(tok(flat).input_ids for tok in encoder.tokenizers)))
    per_image = len(captions[0])
    alphas_cumprod = pipe.scheduler.alphas_cumprod.float()
    prediction_type = pipe.scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"the mini trainer supports epsilon and v_prediction, not {prediction_type!r}")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32)   # SDXL micro-conditioning
    modules = (unet, te1, te2)
    for m in modules:
        m.train().requires_grad_(True)
    for te in (te1, te2):
        # The 49,408-row token tables stay frozen: updating all 6.3M entries every step (AdamW on dense
        # gradients) doubled the step time. With `train_used_rows` the rows of the words the corpus uses
        # train as a small table of their own (`UsedRows`), written back after; otherwise the transformer
        # layers learn to read the fixed random word vectors.
        te.get_input_embeddings().requires_grad_(False)
    used = [UsedRows(te, seq.input_ids) for te, seq in zip((te1, te2), tokenized.sequences)] \
        if cfg.train_used_rows else []
    params = [p for m in (*modules, *used) for p in m.parameters() if p.requires_grad]
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, cfg.unet_steps, cfg.warmup_steps))
    loss_value = 0.0
    bar = tqdm(range(cfg.unet_steps), desc="mini UNet + text encoders", unit="step")
    for step in bar:
        rows = torch.randint(len(latents), (cfg.unet_batch,), generator=gen)
        which = torch.randint(per_image, (cfg.unet_batch,), generator=gen)
        x0 = latents[rows]
        encoded = encoder.encode(_subset(tokenized, (rows * per_image + which).tolist()))
        keep = (torch.rand(cfg.unet_batch, generator=gen) >= cfg.caption_dropout).float()
        context = encoded.prompt_embeds * keep[:, None, None]
        pooled = encoded.pooled_prompt_embeds * keep[:, None]
        t = torch.randint(len(alphas_cumprod), (cfg.unet_batch,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        abar = alphas_cumprod[t][:, None, None, None]
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        pred = unet(x_t, t, encoder_hidden_states=context,
                    added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids.expand(len(t), -1)}).sample
        target = eps if prediction_type == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))   # warm-up of the EMA (as diffusers' EMAModel)
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.lerp_(p, 1 - decay)
        loss_value = 0.98 * loss_value + 0.02 * loss.item() if step else loss.item()
        bar.set_postfix(loss=f"{loss_value:.4f}")
    for rows in used:
        rows.write_back()
    for m in modules:
        m.eval().requires_grad_(False)
    return ema, {"unet_loss_ema": loss_value, "trained_token_rows": sum(len(r.ids) for r in used),
                 "truncated_captions": truncated}


def train_mini_sdxl(out_dir: str | Path, cfg: MiniTrainConfig = MiniTrainConfig(),
                    arch: MiniArchitecture = MiniArchitecture()) -> dict[str, float]:
    """Train the mini SDXL and save it as a diffusers directory (safetensors) in `out_dir`; return a summary
    (final losses, latent scaling factor, corpus size)."""
    if cfg.corpus_images < max(cfg.vae_batch, cfg.unet_batch):
        raise ValueError(f"corpus_images ({cfg.corpus_images}) must be at least the batch sizes "
                         f"({cfg.vae_batch}, {cfg.unet_batch})")
    if not 0.0 <= cfg.describe_share <= 1.0 or not 0.0 <= cfg.caption_dropout < 1.0 \
            or not 0.0 <= cfg.name_share <= 1.0:
        raise ValueError("describe_share and name_share must be in [0, 1] and caption_dropout in [0, 1)")
    if cfg.named_people < 0 or (cfg.named_people and cfg.named_images < 1):
        raise ValueError("named_people must be >= 0 and named_images >= 1")
    gen = torch.Generator().manual_seed(cfg.seed)
    corpus = render_corpus(cfg, arch.image_size)
    pipe = build_mini_sdxl(arch, cfg.seed)
    summary = train_vae(pipe.vae, corpus.images, cfg, gen)
    raw = encode_latents(pipe.vae, corpus.images)
    scaling = float(1.0 / raw.std())
    # In the config, before saving: `scaling_factor` is a registered config value, not an attribute.
    pipe.vae.register_to_config(scaling_factor=scaling)
    ema, unet_summary = train_unet(pipe, raw * scaling, corpus.captions, cfg, gen)
    pipe.unet.load_state_dict(ema.state_dict())
    out = Path(out_dir)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / NAMES_FILE).write_text("".join(f"{n}\n" for n in corpus.names))
    return {**summary, **unet_summary, "vae_scaling_factor": scaling, "corpus_images": len(corpus.images),
            "corpus_captions": sum(len(c) for c in corpus.captions), "named_people": len(corpus.names)}


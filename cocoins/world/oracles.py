"""How much of a person can one token carry in this base model? Ceilings for the mini-world's Sim and Div.

Before blaming (or crediting) the mapper's training, measure what the base model allows, on people whose
traits are known (fresh identities of the synthetic world), each rendered with several noises and read by
the trait classifier:

- plain: "A man is looking at the camera." The base draws anyone: the floor of true-trait agreement, and
  its per-image Div is the variety of people it draws.
- describe: the identity's full trait caption ("A man with tan skin, short black hair, ..."): what words
  can pin down.
- textual inversion: one free pseudo-word per identity (one slot in each text encoder, inserted before the
  noun as Eq. 4 inserts f(z)), optimised with the base model's own denoising loss on that identity's renders
  (Gal et al., 2023). What one token can carry at best: if it cannot reach high agreement, no mapper can.
- names: the named people of the base model's corpus ("A kestrel man ..."), if it has any: whether the
  base learned to read a whole person from one token.

Every number is a function of the models and the arguments (fixed seeds).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cocoins.sdxl.encode import PromptEncoder
from cocoins.sdxl.generate import generate
from cocoins.simdiv import sim_div
from cocoins.world.captions import trait_phrases
from cocoins.world.people import SCENE_PHRASES, SCENES, ImageSpec, Traits, WorldConfig, draw_traits, render
from cocoins.world.traits import TraitClassifier, trait_labels

PORTRAIT = "A {s} is looking at the camera."


@dataclass(frozen=True)
class OracleConfig:
    world_seed: int = 5000        # fresh identities: neither the corpus's, the ingest world's nor the classifier's
    identities: int = 8
    seeds: int = 6                # renders per identity and oracle
    ti_images: int = 24           # renders of each identity that textual inversion learns from
    ti_steps: int = 400
    ti_batch: int = 8             # images per identity and step
    ti_lr: float = 5e-2
    steps: int = 20               # sampler steps
    guidance: float = 5.0
    resolution: int = 32
    batch_size: int = 64


@dataclass
class OracleRow:
    true_trait_agreement: float        # mean over images and identity traits of read == drawn
    true_trait_agreement_std: float    # its spread over identities
    identity_sim: float | None
    identity_div: float | None         # of the identities' mean embeddings
    per_image_div: float | None        # every image its own person: the variety of people drawn at all
    images: int
    per_trait: dict[str, float] = field(default_factory=dict)


def _noun(t: Traits) -> str:
    return "man" if t.male else "woman"


def describing_caption(t: Traits) -> str:
    """Every drawn trait in the corpus's words, in the portrait prompt: what words can pin down."""
    phrases = trait_phrases(t)
    words = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    age = "young" if t.young else "older"
    return PORTRAIT.format(s=f"{age} {_noun(t)} with {words}")


def render_identity(world_seed: int, identity: int, count: int, image_size: int, first_index: int = 0
                    ) -> tuple[torch.Tensor, list[str]]:
    """`count` portraits of one identity ([count, 3, S, S] in [-1, 1]) and the scene of each."""
    world = WorldConfig(seed=world_seed, image_size=image_size)
    traits = {identity: draw_traits(world_seed, identity)}
    rng = random.Random(world_seed * 7919 + identity)
    scenes = list(SCENES)
    pixels, picked = [], []
    for k in range(count):
        spec = ImageSpec(f"{k:06d}", (identity,), rng.choice(scenes), first_index + k)
        image, _ = render(spec, traits, world)
        pixels.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        picked.append(spec.scene)
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, picked


def textual_inversion(pipe, encoder: PromptEncoder, identities: list[int], cfg: OracleConfig,
                      progress: bool = True) -> tuple[torch.Tensor, list[float]]:
    """One free pseudo-word per identity, [K, d1 + d2], fitted with the base model's denoising loss (its
    scheduler's objective) on `ti_images` renders of each, captioned "a photo of a <w> man in a green park".
    The identities are fitted together (one UNet call per step) but share nothing: the loss is a sum over
    identities and Adam is per coordinate, so this equals K separate runs. Returns (words, loss per step)."""
    vae, unet = pipe.vae, pipe.unet
    alphas = pipe.scheduler.alphas_cumprod.float()
    prediction = pipe.scheduler.config.prediction_type
    size = cfg.resolution
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32)
    latents, captions = [], []
    for ident in identities:
        x, scenes = render_identity(cfg.world_seed, ident, cfg.ti_images, size, first_index=10_000)
        with torch.no_grad():
            latents.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
        noun = _noun(draw_traits(cfg.world_seed, ident))
        captions.append([f"a photo of a <subj1>{noun}</subj1> {SCENE_PHRASES[s]}" for s in scenes])
    # Start from the embedding of "person" in each encoder: a neutral word, as textual inversion starts from a
    # coarse descriptor.
    start = [enc.get_input_embeddings().weight[tok("person", add_special_tokens=False).input_ids[0]]
             for enc, tok in zip(encoder.text_encoders, encoder.tokenizers)]
    words = torch.cat(start).detach().clone().repeat(len(identities), 1).requires_grad_(True)
    optimizer = torch.optim.Adam([words], lr=cfg.ti_lr)
    gen = torch.Generator().manual_seed(cfg.world_seed)
    losses = []
    for _ in tqdm(range(cfg.ti_steps), desc="textual inversion", disable=not progress):
        rows = torch.randint(cfg.ti_images, (len(identities), cfg.ti_batch), generator=gen)
        x0 = torch.cat([latents[k][rows[k]] for k in range(len(identities))])
        prompts = [captions[k][r] for k in range(len(identities)) for r in rows[k].tolist()]
        owner = torch.arange(len(identities)).repeat_interleave(cfg.ti_batch)
        encoded = encoder.encode(encoder.tokenize(prompts, insert=True), words[owner][:, None, :])
        t = torch.randint(len(alphas), (len(x0),), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        abar = alphas[t][:, None, None, None]
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        out = unet(x_t, t, encoder_hidden_states=encoded.prompt_embeds,
                   added_cond_kwargs={"text_embeds": encoded.pooled_prompt_embeds,
                                      "time_ids": time_ids.expand(len(t), -1)}).sample
        target = eps if prediction == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0
        loss = F.mse_loss(out, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return words.detach(), losses


def score(classifier: TraitClassifier, images: list, owners: list[int], truths: dict[int, Traits]) -> OracleRow:
    """True-trait agreement, identity Sim and Div of `images` drawn for identities `owners`."""
    probs = classifier.probabilities(images)
    traits = classifier.identity_traits
    read = {name: probs[name].argmax(dim=1).numpy() for name in traits}
    per_trait = {name: float(np.mean([read[name][i] == trait_labels(truths[o])[name] for i, o in enumerate(owners)]))
                 for name in traits}
    per_identity = {}
    for i, o in enumerate(owners):
        per_identity.setdefault(o, []).append(np.mean([read[n][i] == trait_labels(truths[o])[n] for n in traits]))
    means = [float(np.mean(v)) for v in per_identity.values()]
    embeddings = classifier.embed_probabilities(probs)
    sd = sim_div(embeddings, [str(o) for o in owners])
    each = sim_div(embeddings, [str(k) for k in range(len(owners))])
    return OracleRow(float(np.mean(means)), float(np.std(means)), sd.sim, sd.div, each.div, len(images),
                     {k: round(v, 4) for k, v in per_trait.items()})


def _render(pipe, encoder, prompts: list[str], words: torch.Tensor | None, seeds: list[int], cfg: OracleConfig):
    images = []
    for i in range(0, len(prompts), cfg.batch_size):
        chunk = None if words is None else words[i:i + cfg.batch_size]
        images += generate(pipe, encoder, prompts[i:i + cfg.batch_size], chunk, seeds[i:i + cfg.batch_size],
                           cfg.steps, cfg.guidance, cfg.resolution, cfg.resolution).images
    return images


@torch.no_grad()
def _fresh_row(pipe, encoder, classifier, prompts_by_identity: dict[int, str], words: dict[int, torch.Tensor] | None,
               truths: dict[int, Traits], cfg: OracleConfig, first_seed: int) -> OracleRow:
    owners = [i for i in prompts_by_identity for _ in range(cfg.seeds)]
    prompts = [prompts_by_identity[i] for i in owners]
    stacked = None if words is None else torch.stack([words[i] for i in owners])[:, None, :]
    seeds = [first_seed + k for k in range(len(owners))]
    return score(classifier, _render(pipe, encoder, prompts, stacked, seeds, cfg), owners, truths)


def run_oracles(pipe, classifier: TraitClassifier, cfg: OracleConfig, names: list[str] | None = None,
                corpus_seed: int | None = None, corpus_images: int = 0, progress: bool = True) -> dict[str, OracleRow]:
    """The rows plain / describe / textual_inversion (and names, given the corpus's names and where its named
    identities start), on `cfg.identities` fresh identities of world `cfg.world_seed`."""
    encoder = PromptEncoder.from_pipeline(pipe)
    identities = list(range(1, cfg.identities + 1))
    truths = {i: draw_traits(cfg.world_seed, i) for i in identities}
    rows = {
        "plain": _fresh_row(pipe, encoder, classifier, {i: PORTRAIT.format(s=_noun(truths[i])) for i in identities},
                            None, truths, cfg, 1),
        "describe": _fresh_row(pipe, encoder, classifier, {i: describing_caption(truths[i]) for i in identities},
                               None, truths, cfg, 1),
    }
    words, _ = textual_inversion(pipe, encoder, identities, cfg, progress)
    rows["textual_inversion"] = _fresh_row(
        pipe, encoder, classifier, {i: PORTRAIT.format(s=f"<subj1>{_noun(truths[i])}</subj1>") for i in identities},
        dict(zip(identities, words)), truths, cfg, 1)
    if names and corpus_seed is not None:
        picked = list(range(min(cfg.identities, len(names))))
        named = {corpus_images + j + 1: names[j] for j in picked}
        named_truths = {i: draw_traits(corpus_seed, i) for i in named}
        rows["names"] = _fresh_row(pipe, encoder, classifier,
                                   {i: PORTRAIT.format(s=f"{n} {_noun(named_truths[i])}") for i, n in named.items()},
                                   None, named_truths, cfg, 1)
    return rows


def read_names(base_dir: str | Path) -> list[str]:
    path = Path(base_dir) / "corpus_names.txt"
    return path.read_text().split() if path.is_file() else []

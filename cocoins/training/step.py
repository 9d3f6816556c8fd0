"""One optimisation step of the mapper: the batched forward passes behind Eqs. 5-9.

A CoCoIns step needs five denoiser passes per sample. The three that carry pseudo-words (anchor,
positive, negative) need gradients to reach f and run as ONE UNet call on a 3B batch; the two
references without pseudo-word (x̂1, x̂2 of Eq. 8) run as one call on a 2B batch under no_grad.

Text encoders run once per distinct prompt. For the references a prompt is its caption, and the batch's
captions are deduplicated. For the gradient pass a prompt is a (caption, code) pair: anchor (P1, z1),
positive (P2, z1), negative (P1, z2). Equal captions carry different pseudo-words, so the three rows of a
sample differ and cannot share an encoder pass; they coincide only when P1 = P2 (`triplet.same_prompt`, or
a captioner that wrote the same caption twice), and then anchor and positive share one row.

Randomness (codes z1, z2, noises ε1, ε2, timestep t) is drawn per sample from a generator keyed by the
sample's position in the training stream (`sample_generator`), never per batch: a sample gets the same
draws whatever the batch it lands in, so 1 process x batch 8, 2 processes x 4, or 2 micro-batches of 4
with gradient accumulation compute the same step (up to float rounding of batched kernels).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from cocoins.data.tags import parse_tagged
from cocoins.method.losses import LossConfig, LossTerms, cocoins_loss, ddim_x0
from cocoins.method.mapper import sample_codes
from cocoins.method.triplets import (TripletConfig, add_noise, triplet_latents, triplet_prompts,
                                     triplet_pseudo_words)


def subject_count(tagged_prompts: Sequence[str]) -> int:
    """S, the largest <subjN> index in the prompts: how many codes each sample needs."""
    count = max((span.index for text in tagged_prompts for span in parse_tagged(text).spans), default=0)
    if count == 0:
        raise ValueError("no <subjN> tag in the batch's captions; the tag stage should have dropped these")
    return count


def sample_generator(seed: int, position: int) -> torch.Generator:
    """The random source of the training sample at stream position `position` (step k, slot i of the
    global batch: k * batch_size + i). A hash keeps it apart from the data-order permutations' seeds."""
    key = hashlib.blake2b(f"cocoins-sample:{seed}:{position}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1)


def draw_codes(generator: torch.Generator, subjects: int, total: int, code_dim: int) -> torch.Tensor:
    """z ~ N(0, I) (Eq. 3) for one sample's `subjects` subjects, zero-padded to `total` rows ([total, c]).

    Only the sample's own subjects are drawn, so its draws do not depend on the other samples in the batch;
    the padding rows map to pseudo-words that no slot uses (zero gradient).
    """
    z = torch.zeros(total, code_dim)
    z[:subjects] = torch.randn(subjects, code_dim, generator=generator)
    return z


def distinct_rows(keys: Sequence) -> tuple[list[int], list[int]]:
    """(first occurrence of each distinct key, index of each key's distinct row): run once, gather back."""
    first: dict = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    order = {key: j for j, key in enumerate(first)}
    return list(first.values()), [order[key] for key in keys]


@dataclass
class Batch:
    """A training batch read from the latent shards."""
    latents: torch.Tensor        # x, [B, 4, h, w], already scaled by the VAE scaling factor
    masks: torch.Tensor          # m, [B, 1, h, w] in {0, 1}
    time_ids: torch.Tensor       # SDXL micro-conditioning, [B, 6]
    captions1: list[str]         # P1, tagged
    captions2: list[str]         # P2, tagged
    identities: torch.Tensor     # [B] int64, -1 when unknown (only the supervised baseline needs them)

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.latents.to(device), self.masks.to(device), self.time_ids.to(device),
                     self.captions1, self.captions2, self.identities.to(device))


@dataclass(frozen=True)
class DenoiserSpec:
    """What the step needs to know about the frozen model's noise schedule."""
    alphas_cumprod: torch.Tensor   # ᾱ_1..ᾱ_T, [T]
    prediction_type: str           # epsilon | v_prediction


def denoise(unet, x_t: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor,
            time_ids: torch.Tensor) -> torch.Tensor:
    """ε_θ(x_t, e, t) (or v̂), with x_t cast once to the towers' dtype.

    The step keeps x_t in fp32 (Eq. 6 and the DDIM estimate are computed there, see `ddim_x0`) and the frozen
    UNet may be stored in bf16 / fp16 and run without autocast: the one cast is here. fp32 towers: a no-op.
    time_ids stay fp32: the UNet embeds them sinusoidally in fp32 and casts the embedding to its own dtype
    (a 1023 px original size is not a bf16 number).
    """
    return unet(x_t.to(getattr(unet, "dtype", x_t.dtype)), t, encoder_hidden_states=embeds,
                added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """What the step computes outside the towers (x_t, the x0 estimates, the loss) in fp32 when the batch or the
    towers are bf16 / fp16 (L_dis is a squared difference of two x0 estimates, ~1e-9 on a fresh mapper), and in
    the batch's own precision above that: a float64 run (the layout tests) must not be rounded to fp32 here, or
    its comparisons measure fp32 rounding instead of the plumbing. No cast (the same tensor) otherwise."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class CocoinsStep:
    """Computes the loss of Eq. 9 for one batch; only the mapper's parameters receive gradients."""

    def __init__(self, unet, encoder, spec: DenoiserSpec, code_dim: int, loss_config: LossConfig,
                 triplet_config: TripletConfig):
        self.unet, self.encoder, self.spec, self.code_dim = unet, encoder, spec, code_dim
        self.loss_config, self.triplet_config = loss_config, triplet_config

    def _unet(self, x_t, t, embeds, pooled, time_ids):
        return denoise(self.unet, x_t, t, embeds, pooled, time_ids)

    def _references(self, captions1: Sequence[str], captions2: Sequence[str], x1_t, x2_t, t, time_ids):
        """x̂1 = DDIM(ε_θ(x_t*, e1, t)), x̂2 = DDIM(ε_θ(x_t+, e2, t)), without gradients (Eq. 8)."""
        first, inverse = distinct_rows(list(captions1) + list(captions2))
        distinct = [(list(captions1) + list(captions2))[i] for i in first]
        with torch.no_grad():
            plain = self.encoder.encode(self.encoder.tokenize(distinct, insert=False), None)
            index = torch.tensor(inverse, device=t.device)
            embeds, pooled = plain.prompt_embeds[index], plain.pooled_prompt_embeds[index]
            x_t = torch.cat([x1_t, x2_t])
            t2 = torch.cat([t, t])
            out = self._unet(x_t, t2, embeds, pooled, torch.cat([time_ids, time_ids]))
            alpha = self.spec.alphas_cumprod[t2]
            x_ref = ddim_x0(out, x_t, alpha, self.spec.prediction_type)
        return x_ref.chunk(2)

    def draw(self, batch: Batch, generators: Sequence[torch.Generator]):
        """Per sample b, from generators[b] on the CPU (so CPU and GPU runs see the same numbers):
        codes z1, z2 [S, c] (Eq. 5), noises ε1, ε2 (Eq. 6) and a timestep t uniform over the T steps
        (over [min_timestep, T) when the triplet config sets a floor)."""
        if len(generators) != batch.latents.shape[0]:
            raise ValueError(f"need one generator per sample: got {len(generators)} for "
                             f"{batch.latents.shape[0]} samples")
        total = subject_count(batch.captions1 + batch.captions2)
        steps = len(self.spec.alphas_cumprod)
        if self.triplet_config.min_timestep >= steps:
            raise ValueError(f"triplet min_timestep {self.triplet_config.min_timestep} leaves no timestep: the "
                             f"scheduler has {steps}; set triplet.min_timestep below {steps}")
        z1, z2, eps1, eps2, t = [], [], [], [], []
        for g, c1, c2 in zip(generators, batch.captions1, batch.captions2):
            own = subject_count([c1, c2])
            z1.append(draw_codes(g, own, total, self.code_dim))
            z2.append(draw_codes(g, own, total, self.code_dim))
            eps1.append(torch.randn(batch.latents.shape[1:], generator=g))
            eps2.append(torch.randn(batch.latents.shape[1:], generator=g))
            t.append(torch.randint(self.triplet_config.min_timestep, steps, (), generator=g))
        device, dtype = batch.latents.device, batch.latents.dtype
        # The codes feed f, which trains in fp32 (or wider): a bf16 batch must not round z (nor, without
        # autocast, hand f a bf16 input). The noises share the latents' dtype.
        code_dtype = torch.promote_types(dtype, torch.float32)
        codes = tuple(torch.stack(v).to(device, code_dtype) for v in (z1, z2))
        noises = tuple(torch.stack(v).to(device, dtype) for v in (eps1, eps2))
        return (*codes, *noises, torch.stack(t).to(device))

    def _encode_triplets(self, mapper: torch.nn.Module, batch: Batch, z1: torch.Tensor, z2: torch.Tensor):
        """Eqs. 3-5: w = f(z), then ê*, ê+, ê- through the text encoders, once per distinct (caption, code)."""
        bsz = z1.shape[0]
        w1, w2 = mapper(torch.cat([z1, z2])).chunk(2)                      # Eq. 3
        anchor, positive, negative = triplet_prompts(batch.captions1, batch.captions2, self.triplet_config)
        prompts = anchor + positive + negative
        words = triplet_pseudo_words(w1, w2)                               # Eq. 5: [w1; w1; w2]
        codes = [("z1", b) for b in range(bsz)] * 2 + [("z2", b) for b in range(bsz)]
        first, inverse = distinct_rows(list(zip(prompts, codes)))
        if len(first) == len(prompts):  # the usual case: every row distinct
            cond = self.encoder.encode(self.encoder.tokenize(prompts, insert=True), words)   # Eq. 4
            return anchor, positive, cond.prompt_embeds, cond.pooled_prompt_embeds
        tokens = self.encoder.tokenize([prompts[i] for i in first], insert=True)
        cond = self.encoder.encode(tokens, words[first])                   # Eq. 4
        index = torch.tensor(inverse, device=cond.prompt_embeds.device)
        return anchor, positive, cond.prompt_embeds[index], cond.pooled_prompt_embeds[index]

    def __call__(self, mapper: torch.nn.Module, batch: Batch, step: int, total_steps: int,
                 generators: Sequence[torch.Generator]) -> LossTerms:
        # record_function labels name the phases in a torch.profiler trace (benchmarks/train_step.py).
        with record_function("cocoins/draw"):
            z1, z2, eps1, eps2, t = self.draw(batch, generators)
        with record_function("cocoins/text_encoders_3B_grad"):
            anchor, positive, embeds, pooled = self._encode_triplets(mapper, batch, z1, z2)
        alpha = self.spec.alphas_cumprod[t]
        # x_t in fp32 (or wider) whatever the towers' dtype: the UNet gets it cast once (`denoise`) and the DDIM
        # estimates below, computed from this x_t and the towers' output, come out in fp32 by type promotion.
        latents = at_least_fp32(batch.latents)
        x_star, x_plus, x_minus = triplet_latents(latents, eps1, eps2, alpha, self.triplet_config)  # Eq. 6
        t3, alpha3 = t.repeat(3), alpha.repeat(3)
        x_t = torch.cat([x_star, x_plus, x_minus])
        with record_function("cocoins/unet_3B_grad"):
            out = self._unet(x_t, t3, embeds, pooled, batch.time_ids.repeat(3, 1))
        x_anchor, x_positive, x_negative = ddim_x0(out, x_t, alpha3, self.spec.prediction_type).chunk(3)

        x_ref1 = x_ref2 = None
        if self.loss_config.background:
            with record_function("cocoins/references_2B_no_grad"):
                x_ref1, x_ref2 = self._references(anchor, positive, x_star, x_plus, t, batch.time_ids)
        with record_function("cocoins/loss"):
            return cocoins_loss(x_anchor, x_positive, x_negative, x_ref1, x_ref2, batch.masks.to(x_anchor.dtype),
                                step, total_steps, self.loss_config)


class NoisePredictionStep:
    """Supervised baseline (Section 3.3, Fig. 5): one fixed code per identity, plain denoising loss."""

    def __init__(self, unet, encoder, spec: DenoiserSpec, code_dim: int, code_seed: int):
        self.unet, self.encoder, self.spec = unet, encoder, spec
        self.code_dim, self.code_seed = code_dim, code_seed

    def identity_codes(self, identities: torch.Tensor, subjects: int, code_dim: int) -> torch.Tensor:
        """z_id, a fixed N(0, I) draw per identity, reproducible from (code_seed, identity)."""
        codes = []
        for identity in identities.tolist():
            if identity < 0:
                raise ValueError("the noise_prediction objective needs identity labels; this sample has none")
            g = torch.Generator().manual_seed(self.code_seed * 1_000_003 + int(identity))
            codes.append(sample_codes(g, 1, subjects, code_dim)[0])
        return torch.stack(codes)

    def __call__(self, mapper: torch.nn.Module, batch: Batch, step: int, total_steps: int,
                 generators: Sequence[torch.Generator]) -> LossTerms:
        device = batch.latents.device
        subjects = subject_count(batch.captions1)
        z = self.identity_codes(batch.identities.cpu(), subjects, self.code_dim).to(device)
        eps = torch.stack([torch.randn(batch.latents.shape[1:], generator=g) for g in generators]).to(device)
        t = torch.stack([torch.randint(0, len(self.spec.alphas_cumprod), (), generator=g)
                         for g in generators]).to(device)
        alpha = self.spec.alphas_cumprod[t]
        cond = self.encoder.encode(self.encoder.tokenize(batch.captions1, insert=True), mapper(z))
        x_t = add_noise(batch.latents, eps, alpha)
        out = denoise(self.unet, x_t, t, cond.prompt_embeds, cond.pooled_prompt_embeds, batch.time_ids)
        if self.spec.prediction_type == "v_prediction":
            a = alpha.reshape(-1, 1, 1, 1)
            target = a.sqrt() * eps - (1 - a).sqrt() * batch.latents
        else:
            target = eps
        loss = F.mse_loss(at_least_fp32(out), at_least_fp32(target))
        zero = loss.detach() * 0
        return LossTerms(loss, loss, None, zero, zero, 0.0)

"""How far the trained pseudo-word moves the denoiser's x0 estimate, beside how far words and noise move it.

    python -m cocoins.tools.lever [--samples 64] [--seed 0]

Reads models/base, models/mapper and the training shards (data/train.parquet, data/latents) of the last
`dvc repro`. For training images x and timesteps t drawn as the train step draws them (uniform over the
T steps), it prints the subject-masked L_dis^m between two DDIM x0 estimates (Section 3.3), per quarter
of the timestep range, for pairs that differ in one thing only:

    noise       same caption and code, noises ε1 vs ε2: the spread the positive term of Eq. 7 must remove
    code        same caption and noise, codes z1 vs z2 through the trained f: Eq. 7's d_neg
    code, f0    the same with an untrained f (the mapper's initial lever)
    pseudo-word same caption and noise, with the trained pseudo-word vs the plain caption
    words       same noise, no pseudo-word: this image's caption vs another identity's caption of the same
                class (the lever the base model gives to words that describe the person)

If "code" is far below "words", the mapper has not found the lever that words have; if it is far below
"noise", the noise decides more of the person than the code does.
"""

from __future__ import annotations

import argparse

import torch

from cocoins.data.shards import ShardReader
from cocoins.data.tags import parse_tagged
from cocoins.method.losses import ddim_x0, masked_distance
from cocoins.method.mapper import Mapper
from cocoins.method.triplets import add_noise
from cocoins.sdxl.encode import PromptEncoder
from cocoins.sdxl.load import load_pipeline

PAIRS = ("noise", "code", "code, f0", "pseudo-word", "words")


def _other_identity_captions(rows: dict) -> list[str]:
    """For each sample, the caption of the next sample with the same class word and another identity."""
    nouns = [parse_tagged(c).spans[0].text for c in rows["captions1"]]
    ids = rows["identities"].tolist()
    out = []
    for i in range(len(ids)):
        for step in range(1, len(ids)):
            j = (i + step) % len(ids)
            if nouns[j] == nouns[i] and ids[j] != ids[i]:
                out.append(rows["captions1"][j])
                break
        else:
            raise ValueError("need at least two identities per class word; raise --samples")
    return out


@torch.no_grad()
def measure(pipe, mapper: Mapper, untrained: Mapper, reader: ShardReader, samples: int, seed: int
            ) -> dict[str, list[float]]:
    """Mean masked distance per pair kind and per timestep quarter ([4] each)."""
    encoder = PromptEncoder.from_pipeline(pipe)
    g = torch.Generator().manual_seed(seed)
    positions = torch.randperm(len(reader), generator=g)[:samples].tolist()
    rows = reader.rows(positions)
    x, masks, time_ids = rows["latents"], rows["masks"].float(), rows["time_ids"]
    captions, others = rows["captions1"], _other_identity_captions(rows)
    n, steps = len(positions), len(pipe.scheduler.alphas_cumprod)
    alphas = pipe.scheduler.alphas_cumprod.float()
    t = torch.randint(0, steps, (n,), generator=g)
    eps1, eps2 = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    z1, z2 = (torch.randn(n, 1, mapper.config.code_dim, generator=g) for _ in range(2))

    def estimate(prompts, words, noise):
        tokens = encoder.tokenize(prompts, insert=words is not None)
        cond = encoder.encode(tokens, words)
        x_t = add_noise(x, noise, alphas[t])
        out = pipe.unet(x_t, t, encoder_hidden_states=cond.prompt_embeds,
                        added_cond_kwargs={"text_embeds": cond.pooled_prompt_embeds, "time_ids": time_ids}).sample
        return ddim_x0(out, x_t, alphas[t], pipe.scheduler.config.prediction_type)

    anchor, plain = estimate(captions, mapper(z1), eps1), estimate(captions, None, eps1)
    pairs = {
        "noise": (anchor, estimate(captions, mapper(z1), eps2)),
        "code": (anchor, estimate(captions, mapper(z2), eps1)),
        "code, f0": (estimate(captions, untrained(z1), eps1), estimate(captions, untrained(z2), eps1)),
        "pseudo-word": (anchor, plain),
        "words": (plain, estimate(others, None, eps1)),
    }
    quarter = (t * 4 // steps).clamp(max=3)
    table = {}
    for name, (a, b) in pairs.items():
        d = masked_distance(a, b, masks)
        table[name] = [float(d[quarter == q].mean()) if (quarter == q).any() else float("nan") for q in range(4)]
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    pipe = load_pipeline("models/base", device="cpu", dtype=torch.float32)
    mapper = Mapper.load("models/mapper").eval()
    torch.manual_seed(args.seed)
    untrained = Mapper(mapper.spec).eval()
    reader = ShardReader("data/train.parquet", "data/latents")
    table = measure(pipe, mapper, untrained, reader, args.samples, args.seed)
    steps = len(pipe.scheduler.alphas_cumprod)
    edges = [f"t {q * steps // 4}-{(q + 1) * steps // 4 - 1}" for q in range(4)]
    print(f"masked L_dis of x0 estimates, {args.samples} training images, seed {args.seed}")
    print(f"{'pair differs in':<14}" + "".join(f"{e:>13}" for e in edges))
    for name, values in table.items():
        print(f"{name:<14}" + "".join(f"{v:>13.3g}" for v in values))


if __name__ == "__main__":
    main()

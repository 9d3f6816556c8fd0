"""Is the base model SDXL-like? Two checks of a base model of the synthetic world, read by the trait classifier.

1. Words: for every value of every drawn trait, prompt "a photo of a man with wavy hair" (the value's phrase in
   the captions' words) and measure how often the classifier reads that value. SDXL follows such words; a
   base model that does not gives a pseudo-word no lever on the person (issue 6's lesson).
2. Class only: prompt "a photo of a man" with many noises and measure the identity Div of the images, each
   its own identity: SDXL draws a different person for every noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cocoins.sdxl.encode import PromptEncoder
from cocoins.sdxl.generate import generate
from cocoins.simdiv import sim_div
from cocoins.world.people import EYES, HAIR, HAIR_STYLES, SKIN
from cocoins.world.traits import TraitClassifier

STYLE_WORDS = {"bald": "a bald head", "short": "short hair", "long": "long straight hair", "wavy": "wavy hair",
               "bangs": "bangs"}
# (trait, value) -> (noun, phrase after "with"); a None phrase means the noun alone says it.
PROMPTED_VALUES: dict[tuple[str, object], tuple[str, str | None]] = {
    **{("skin", v): ("person", f"{v} skin") for v in SKIN},
    **{("hair_color", v): ("person", f"{v} hair") for v in HAIR},
    **{("hair_style", v): ("person", STYLE_WORDS[v]) for v in HAIR_STYLES},
    **{("eye_color", v): ("person", f"{v} eyes") for v in EYES},
    ("eyeglasses", True): ("person", "glasses"), ("beard", True): ("man", "a beard"),
    ("mustache", True): ("man", "a mustache"), ("smiling", True): ("person", "a smile"),
    ("smiling", False): ("person", "a neutral expression"), ("lipstick", True): ("woman", "red lipstick"),
    ("male", True): ("man", None), ("male", False): ("woman", None),
    ("young", True): ("young person", None), ("young", False): ("older person", None),
}


@dataclass
class BaseCheck:
    word_following: dict[str, float]   # trait -> mean over its prompted values of P(classifier reads the value)
    word_following_mean: float
    class_only_div: float | None       # identity Div of "a photo of a man / woman" images, each its own identity
    class_only_images: int


def _prompt(noun: str, phrase: str | None) -> str:
    article = "an" if noun[0] in "aeiou" else "a"
    return f"a photo of {article} {noun}" + (f" with {phrase}" if phrase else "")


@torch.no_grad()
def check_base(pipe, classifier: TraitClassifier, seed: int = 0, images_per_value: int = 8,
               class_only_images: int = 32, steps: int = 20, guidance: float = 5.0, resolution: int = 32,
               batch_size: int = 32) -> BaseCheck:
    """Run both checks; seeds are fixed, so the result is a function of the models and arguments."""
    encoder = PromptEncoder.from_pipeline(pipe)

    def render(prompts: list[str], first_seed: int) -> list:
        images = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            seeds = [first_seed + start + k for k in range(len(chunk))]
            images += generate(pipe, encoder, chunk, None, seeds, steps, guidance, resolution, resolution).images
        return images

    jobs = [(key, _prompt(*words)) for key, words in PROMPTED_VALUES.items() for _ in range(images_per_value)]
    predicted = classifier.predict(render([p for _, p in jobs], seed))
    hits: dict[str, list[float]] = {}
    for row, ((trait, value), _) in enumerate(jobs):
        hits.setdefault(trait, []).append(float(predicted[trait][row] == value))
    following = {trait: float(np.mean(v)) for trait, v in hits.items()}
    plain = [_prompt(noun, None) for noun in ("man", "woman") for _ in range(class_only_images // 2)]
    embeddings = classifier.embed(render(plain, seed + 100_000))
    div = sim_div(embeddings, [str(i) for i in range(len(plain))]).div
    return BaseCheck(following, float(np.mean(list(following.values()))), div, len(plain))

"""`character from-image`: a library character whose code was fitted to a photo (cocoins.method.code_inversion).

The record is an ordinary character's (code, mapper fingerprint) plus where the code came from: the photo's
sha256, the prompt and the fit's settings and seed, so the same photo and settings give the same code again.
"""

from __future__ import annotations

import dataclasses
import os

from cocoins.characters.photo import PeopleCounter, read_photo
from cocoins.characters.library import Character
from cocoins.characters.prompts import check_name
from cocoins.method.code_inversion import CodeInversionConfig, CodeInverter


def character_from_photo(pipe, name: str, photo: str | os.PathLike | bytes, counter: PeopleCounter,
                         noun: str = "person", mask: str | os.PathLike | bytes | None = None,
                         cfg: CodeInversionConfig = CodeInversionConfig(), seed: int = 0,
                         progress: bool = True) -> Character:
    """Fit a code to the one person in `photo` with `pipe` (a CoCoInsPipeline with a mapper)."""
    check_name(name)
    checked = read_photo(photo, pipe.default_size, counter, mask=mask)
    prompt = f"A <subj1>{noun}</subj1> is looking at the camera."
    fit = CodeInverter(pipe.sdxl, pipe.encoder, pipe.mapper).fit(checked.pixels, checked.mask, prompt, cfg,
                                                                 seed=seed, progress=progress)
    source = {"photo_sha256": checked.sha256, "prompt": prompt, "fit_seed": int(seed),
              "fit": dataclasses.asdict(cfg), "people_counter": counter.name, "final_loss": fit.losses[-1]}
    return Character(name, fit.z, pipe.mapper_sha256, source)

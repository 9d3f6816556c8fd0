"""`character from-image`: a library character whose code was fitted to a photo (cocoins.method.code_inversion).

The record is an ordinary character's (code, mapper fingerprint) plus where the code came from: the photo's
sha256 (and its mask's), the prompt and the fit's settings and seed, so the same photo and settings give the
same code again. Story files that name a photo fit it once: `cached_character_from_photo` keeps the code in
the library's `.photos/` folder under the photo's sha256 and the mapper's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from cocoins.characters.library import Character, CharacterLibrary
from cocoins.characters.photo import PeopleCounter, read_photo
from cocoins.characters.prompts import check_name
from cocoins.method.code_inversion import CodeInversionConfig, CodeInverter
from cocoins.runtime import UserError

PHOTO_CACHE = ".photos"


def _sha256(data: str | os.PathLike | bytes | None) -> str | None:
    if data is None:
        return None
    return hashlib.sha256(data if isinstance(data, bytes) else Path(data).read_bytes()).hexdigest()


def fit_prompt(noun: str) -> str:
    """The prompt the code is fitted under: the photo's person as the pseudo-word's noun, facing the camera."""
    if not isinstance(noun, str) or not noun.strip() or "<" in noun or ">" in noun:
        raise UserError(f"noun {noun!r}: give one plain word for the person, e.g. person, woman or man")
    return f"A <subj1>{noun.strip()}</subj1> is looking at the camera."


def character_from_photo(pipe, name: str, photo: str | os.PathLike | bytes, counter: PeopleCounter,
                         noun: str = "person", mask: str | os.PathLike | bytes | None = None,
                         cfg: CodeInversionConfig = CodeInversionConfig(), seed: int = 0,
                         progress: bool = True, what: str = "PHOTO") -> Character:
    """Fit a code to the one person in `photo` with `pipe` (a CoCoInsPipeline with a mapper); `what` names the
    photo in errors."""
    check_name(name)
    prompt = fit_prompt(noun)
    checked = read_photo(photo, pipe.default_size, counter, mask=mask, name=what)
    fit = CodeInverter(pipe.sdxl, pipe.encoder, pipe.mapper).fit(checked.pixels, checked.mask, prompt, cfg,
                                                                 seed=seed, progress=progress)
    source = {"photo_sha256": checked.sha256, "mask_sha256": _sha256(mask), "prompt": prompt, "fit_seed": int(seed),
              "fit": dataclasses.asdict(cfg), "people_counter": counter.name, "final_loss": fit.losses[-1]}
    return Character(name, fit.z, pipe.mapper_sha256, source)


def cached_character_from_photo(pipe, name: str, photo: str | os.PathLike, counter: PeopleCounter,
                                cache: CharacterLibrary | None, noun: str = "person",
                                mask: str | os.PathLike | None = None,
                                cfg: CodeInversionConfig = CodeInversionConfig(), seed: int = 0) -> Character:
    """`character_from_photo` fitted once per (photo, mapper): the code is kept in `cache` under
    photo-<photo sha256>-<mapper sha256> and reused while the mask, noun and fit settings are the same."""
    if not Path(photo).is_file():
        raise UserError(f"photo {photo} not found; give a PNG or JPEG path relative to the story file")
    key = f"photo-{_sha256(photo)[:24]}-{pipe.mapper_sha256[:8]}"
    want = {"mask_sha256": _sha256(mask), "prompt": fit_prompt(noun),
            "fit_seed": int(seed), "fit": dataclasses.asdict(cfg)}
    if cache is not None and key in cache:
        kept = cache.get(key)
        if all(kept.source.get(k) == v for k, v in want.items()) and kept.mapper_sha256 == pipe.mapper_sha256:
            return Character(name, kept.z, kept.mapper_sha256, kept.source)
    fitted = character_from_photo(pipe, key, photo, counter, noun=noun, mask=mask, cfg=cfg, seed=seed)
    if cache is not None:
        cache.add(fitted, overwrite=True)
    return Character(name, fitted.z, fitted.mapper_sha256, fitted.source)

"""Casting: a new character whose renders look like no one already in the library.

A character's look is the mean identity embedding of a few portraits rendered from its code (fixed prompt,
fixed noises), by the identity metric the evaluation uses: the trait classifier's embedding in the
mini-world (`TraitClassifier.embed`), ArcFace at full scale (`ArcFaceEmbedder`). The distance between two
characters is 1 - cosine of their looks (0: the same face, larger: more different).

`cast_distinct` draws candidate codes from consecutive seeds and keeps the first whose nearest cast member
is at least `min_distance` away; if none of `max_tries` is, it keeps the farthest one and says so. A candidate
whose look cannot be read (ArcFace found no face in any of its portraits) is passed over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from cocoins.runtime import UserError

# Looks: code [c] -> unit embedding [D] (render portraits, embed, average, normalise), None when unreadable.
LookFn = Callable[[torch.Tensor], "np.ndarray | None"]


def look_from_embeddings(embeddings: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """The unit mean of a character's per-image embeddings (images where no face was found left out)."""
    found = [np.asarray(e, dtype=np.float64) for e in embeddings if e is not None]
    if not found:
        return None
    mean = np.mean(found, axis=0)
    return mean / max(np.linalg.norm(mean), 1e-12)


def look_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cos(a, b) of two unit looks."""
    return float(1.0 - np.clip(np.dot(a, b), -1.0, 1.0))


def nearest(look: np.ndarray, cast: dict[str, np.ndarray]) -> tuple[str | None, float | None]:
    """The cast member nearest to `look` and its distance; (None, None) for an empty cast."""
    if not cast:
        return None, None
    name = min(cast, key=lambda n: look_distance(look, cast[n]))
    return name, look_distance(look, cast[name])


def nearest_pairs(cast: dict[str, np.ndarray]) -> dict[str, tuple[str | None, float | None]]:
    """For each member, its nearest other member and their distance (what `cocoins character list` shows)."""
    return {name: nearest(look, {n: v for n, v in cast.items() if n != name}) for name, look in cast.items()}


def min_pairwise_distance(looks: Sequence[np.ndarray]) -> float:
    """The smallest distance between two members: how alike the cast's two closest look-alikes are."""
    return min(look_distance(looks[i], looks[j]) for i in range(len(looks)) for j in range(i + 1, len(looks)))


class NoReadableLook(UserError):
    def __init__(self, tries: int):
        super().__init__(f"none of {tries} candidate codes gave a portrait the identity metric could read (no face "
                         "found); check the model draws faces at these settings (more --steps), or give --max-tries")


@dataclass(frozen=True)
class CastingResult:
    seed: int                   # the code seed kept
    z: torch.Tensor             # [c]
    look: np.ndarray
    nearest_name: str | None
    nearest_distance: float | None
    tries: int
    reached: bool               # False: no candidate reached min_distance; the farthest one was kept


def cast_distinct(code_for_seed: Callable[[int], torch.Tensor], look_of: LookFn, cast: dict[str, np.ndarray],
                  first_seed: int, min_distance: float, max_tries: int) -> CastingResult:
    """The first code (seeds first_seed, first_seed + 1, ...) whose look is >= min_distance from every member
    of `cast`; the farthest of `max_tries` when none is."""
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    best = None
    for k in range(max_tries):
        seed = first_seed + k
        z = code_for_seed(seed)
        look = look_of(z)
        if look is None:
            continue
        name, distance = nearest(look, cast)
        if distance is None or distance >= min_distance:
            return CastingResult(seed, z, look, name, distance, k + 1, True)
        if best is None or distance > best.nearest_distance:
            best = CastingResult(seed, z, look, name, distance, k + 1, False)
    if best is None:
        raise NoReadableLook(max_tries)
    return CastingResult(best.seed, best.z, best.look, best.nearest_name, best.nearest_distance, max_tries, False)

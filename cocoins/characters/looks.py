"""A character's look, as the evaluation's identity metric reads it: its sheet (cocoins.front.sheet's prompt at
the sheet's noise seeds) embedded and averaged (cocoins.characters.casting.look_from_embeddings).

The metric is the one `evaluate` measures identity with: the trait classifier of the identity stage in the
mini-world (`models/identity`, where no face detector reads 32 px drawn faces), ArcFace at full scale (a local
insightface model folder). `load_identity_metric` tells them apart by the folder's files.

Looks are cached in the library folder (`.looks.json`), keyed by everything that makes them: the code, the
mapper, the metric's weights and the render settings; `cocoins character list` then renders only new characters.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from cocoins.characters.casting import look_from_embeddings
from cocoins.characters.codes import file_sha256
from cocoins.runtime import UserError

LOOK_SEEDS = (0, 1, 2, 3)           # also the sheet's noises (cocoins.front.sheet): a user sees what is measured
# The CLI's and the app's look settings (one shared cache); the thresholds below were measured at them.
LOOK_STEPS, LOOK_GUIDANCE, LOOK_NOUN = 20, 5.0, "person"
CACHE_FILE = ".looks.json"


@dataclass(frozen=True)
class IdentityMetric:
    name: str                                           # "traits" (mini-world) or "arcface" (full scale)
    fingerprint: str                                    # sha256 over the metric's weight files
    embed: Callable[[list], list[np.ndarray | None]]    # images -> unit embedding per image (None: no face)
    lookalike: float        # two looks closer than this are flagged as look-alikes by `character list`
    distinct: float         # `character new --distinct`'s default minimum distance to every cast member


# Thresholds in 1 - cos of looks. Traits, measured on the mini-world's models by benchmarks/look_spread.py:
# one code's look at two disjoint sets of 4 noises lies 0.048 apart at the median, 0.106 at the 95th percentile
# (0.12 at most); two codes' looks 0.26 at the median, 0.04 at the 5th percentile. A pair closer than one code's
# own spread is a look-alike; --distinct asks for more than the largest own spread seen. ArcFace: not measured
# in this project yet; set from the usual verification range (one person above cos 0.5, two people below 0.3).
TRAIT_LOOKALIKE, TRAIT_DISTINCT = 0.1, 0.15
ARCFACE_LOOKALIKE, ARCFACE_DISTINCT = 0.5, 0.7


def _fingerprint(files: Sequence[Path]) -> str:
    return hashlib.sha256("".join(file_sha256(f) for f in sorted(files)).encode()).hexdigest()


def load_identity_metric(directory: str | os.PathLike, device: str = "cpu") -> IdentityMetric:
    """The evaluation's identity metric from `directory`: a trait classifier (traits.json) or ArcFace (.onnx)."""
    folder = Path(directory).expanduser()
    if (folder / "traits.json").is_file():
        from cocoins.world.traits import TraitClassifier

        try:
            classifier = TraitClassifier.load(folder)
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"--identity {folder}: {err}") from None
        return IdentityMetric("traits", _fingerprint(list(folder.glob("traits.*"))),
                              lambda images: list(classifier.embed(images).double().numpy()),
                              TRAIT_LOOKALIKE, TRAIT_DISTINCT)
    if folder.is_dir() and list(folder.glob("*.onnx")):
        from cocoins.eval.metrics.faces import ArcFaceEmbedder

        arcface = ArcFaceEmbedder(str(folder), device=device)
        ok, reason = arcface.available()
        if not ok:
            raise UserError(f"--identity {folder}: {reason}")
        return IdentityMetric("arcface", _fingerprint(list(folder.glob("*.onnx"))), arcface.embed,
                              ARCFACE_LOOKALIKE, ARCFACE_DISTINCT)
    raise UserError(f"--identity {folder} is neither a trait classifier folder (models/identity, with traits.json, "
                    "after `dvc repro identity`) nor an insightface model folder with .onnx files (ArcFace, e.g. "
                    "~/.insightface/models/antelopev2)")


@dataclass(frozen=True)
class LookSettings:
    steps: int
    guidance: float
    size: int
    noun: str = LOOK_NOUN
    seeds: tuple[int, ...] = LOOK_SEEDS

    @property
    def prompt(self) -> str:
        return f"a portrait of a <subj1>{self.noun}</subj1>"


def render_looks(pipe, codes: torch.Tensor, metric: IdentityMetric, settings: LookSettings,
                 batch_size: int = 16) -> list[np.ndarray | None]:
    """The look of each code [N, c]: its portraits at settings.seeds, embedded and averaged (None: no face
    found in any of them)."""
    k = len(settings.seeds)
    stacked = codes.repeat_interleave(k, dim=0)[:, None, :]                   # [N·k, 1, c]
    images = pipe.render([settings.prompt] * len(stacked), stacked, list(settings.seeds) * len(codes),
                         settings.steps, settings.guidance, settings.size, settings.size, batch_size=batch_size)
    embeddings = metric.embed(images)
    return [look_from_embeddings(embeddings[i * k:(i + 1) * k]) for i in range(len(codes))]


class LookCache:
    """Looks kept in `<library>/.looks.json` under a key of code, mapper, metric and settings."""

    def __init__(self, library_root: str | os.PathLike):
        self.path = Path(library_root) / CACHE_FILE
        try:
            self.entries = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except ValueError:
            self.entries = {}          # a damaged cache is only lost time: the looks are rendered again
        if not isinstance(self.entries, dict):
            self.entries = {}

    @staticmethod
    def key(z: torch.Tensor, mapper_sha256: str, metric: IdentityMetric, settings: LookSettings) -> str:
        h = hashlib.sha256(z.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        h.update(json.dumps([mapper_sha256, metric.name, metric.fingerprint, settings.steps, settings.guidance,
                             settings.size, settings.noun, list(settings.seeds)]).encode())
        return h.hexdigest()

    def looks(self, pipe, codes: dict[str, torch.Tensor], metric: IdentityMetric, settings: LookSettings,
              batch_size: int = 16) -> dict[str, np.ndarray | None]:
        """The look of every named code, rendering only those not cached; the cache is saved after."""
        keys = {name: self.key(z, pipe.mapper_sha256, metric, settings) for name, z in codes.items()}
        missing = [name for name in codes if keys[name] not in self.entries]
        if missing:
            fresh = render_looks(pipe, torch.stack([codes[n] for n in missing]), metric, settings, batch_size)
            for name, look in zip(missing, fresh):
                self.entries[keys[name]] = None if look is None else [float(v) for v in look]
            self.save()
        return {name: None if self.entries[keys[name]] is None else np.asarray(self.entries[keys[name]])
                for name in codes}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries) + "\n")
        os.replace(tmp, self.path)


def cast_looks(pipe, library, metric: IdentityMetric, settings: LookSettings,
               batch_size: int = 16) -> tuple[dict[str, np.ndarray], list[str]]:
    """The looks of the library's characters made for this pipeline's mapper (cached), and the names left out
    (made for another mapper, whose codes would draw someone else here, or no face found)."""
    characters = [library.get(name) for name in library.names()]
    mine = {c.name: c.z for c in characters if c.mapper_sha256 == pipe.mapper_sha256 and c.code_dim == pipe.code_dim}
    looks = LookCache(library.root).looks(pipe, mine, metric, settings, batch_size) if mine else {}
    left_out = [c.name for c in characters if looks.get(c.name) is None]
    return {name: look for name, look in looks.items() if look is not None}, left_out


def distinct_character(pipe, library, name: str, metric: IdentityMetric, settings: LookSettings, first_seed: int,
                       min_distance: float | None = None, max_tries: int = 32, batch_size: int = 16):
    """A new character (not yet added) whose look is at least `min_distance` (default: the metric's) from every
    cast member of the library: `cast_distinct` over code seeds first_seed, first_seed + 1, ...; returns the
    character and the CastingResult. The kept look is cached for the next `character list`."""
    from cocoins.characters.casting import cast_distinct
    from cocoins.characters.codes import code_from_seed
    from cocoins.characters.library import Character

    min_distance = metric.distinct if min_distance is None else float(min_distance)
    cast, _ = cast_looks(pipe, library, metric, settings, batch_size)
    result = cast_distinct(lambda seed: code_from_seed(seed, pipe.code_dim),
                           lambda z: render_looks(pipe, z[None], metric, settings, batch_size)[0],
                           cast, first_seed, min_distance, max_tries)
    cache = LookCache(library.root)
    cache.entries[cache.key(result.z, pipe.mapper_sha256, metric, settings)] = [float(v) for v in result.look]
    cache.save()
    casting = {"metric": metric.name, "nearest": result.nearest_name, "min_distance": min_distance,
               "distance": None if result.nearest_distance is None else round(result.nearest_distance, 4),
               "tries": result.tries, "reached": result.reached}
    return Character(name, result.z, pipe.mapper_sha256, {"code_seed": result.seed, "casting": casting}), result

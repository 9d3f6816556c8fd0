"""Score any table of images with the paper's metrics: this pipeline's renders and other methods' folders alike.

A table has one row per image with the manifest columns `path, method, identity, prompt, subject, set` (and
optionally `setting`). One pass over the images computes every available per-image quantity (face embedding,
CLIP score, DreamSim embedding, FID features); then each group is scored from those:
- per (set, method): face Sim / Div / detection rate, CLIP, DreamSim Sim, FID against `fid_reference`'s images
  of the same set, latent Sim / Div when latents are given, the trait classifier's identity Sim / Div and
  scene fidelity (the probability it reads the prompted scene, where the `setting` names one of its scenes);
- per (set, method, subject) and per (set, method, setting): the same without FID.
Every Sim, Div and scene fidelity comes with a bootstrap 95% interval (`<metric>_ci_low`, `<metric>_ci_high`;
`metrics/bootstrap.py`): resampling codes for a method; for the reference, images for Div and scene fidelity
(each its own person) and its job groups for Sim.
A metric whose model is absent is None with its reason in `Scores.unavailable`; a metric that cannot be formed
from the data (e.g. fewer than two faces found) is None with its reason in `Scores.reasons`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from cocoins.eval.feature_store import FeatureStore
from cocoins.eval.metrics.base import require
from cocoins.eval.metrics.clip import ClipScorer
from cocoins.eval.metrics.dreamsim import DreamSimEmbedder
from cocoins.eval.metrics.bootstrap import Bootstrap, mean_interval, sim_div_interval, unit_div
from cocoins.eval.metrics.faces import FaceEmbedder, make_face_embedder
from cocoins.eval.metrics.fid import fid_features, fid_stream, inception_available, load_inception
from cocoins.eval.metrics.latent import latent_vectors
from cocoins.simdiv import Batches, group_stats_stream, in_memory
from cocoins.world.traits import (SCENE, SCENE_CLASSES, TRAIT_CLASSES, TraitClassifier, identity_model_status,
                                  trait_agreement)

MANIFEST_COLUMNS = ("path", "method", "identity", "prompt", "subject", "set")
# identity_*: the synthetic world's exact identity metric (a trait classifier, `world/traits.py`): Sim / Div of
# its embeddings as Section 4.2 defines them, and the mean and per-trait agreement of same-identity pairs.
# scene_*: the same classifier's scene head on prompts that name a scene: mean probability of the prompted
# scene (fidelity) and how often it is the most probable one (accuracy).
AGREEMENT = tuple(f"agree_{name}" for name in TRAIT_CLASSES)
METRICS = ("face_sim", "face_div", "face_detection_rate", "clip", "dreamsim", "fid", "latent_sim", "latent_div",
           "identity_sim", "identity_div", "trait_agreement", *AGREEMENT, "scene_fidelity", "scene_accuracy")
# Metrics with a bootstrap interval, written as `<metric>_ci_low` / `<metric>_ci_high` beside them.
WITH_INTERVAL = ("face_sim", "face_div", "dreamsim", "latent_sim", "latent_div", "identity_sim", "identity_div",
                 "scene_fidelity")
INTERVALS = tuple(f"{m}_ci_{side}" for m in WITH_INTERVAL for side in ("low", "high"))


@dataclass(frozen=True)
class MetricConfig:
    """Which metric models to use; every path is local (nothing is downloaded)."""
    face_backend: str = "dlib"                              # dlib | arcface | none
    arcface_dir: Optional[str] = None
    clip_model: Optional[str] = "openai/clip-vit-large-patch14"
    dreamsim_cache: Optional[str] = None
    dreamsim_type: str = "ensemble"
    fid_weights: Optional[str] = None
    identity_model: Optional[str] = None                    # trait classifier dir (synthetic world only)
    fid_reference: str = "base"                             # the method whose images are FID's reference
    bootstrap_resamples: int = 1000                         # per interval; 0: no intervals
    bootstrap_seed: int = 0
    strict: bool = False
    batch_size: int = 16
    device: str = "cpu"


@dataclass
class Backends:
    faces: Optional[FaceEmbedder] = None
    clip: Optional[ClipScorer] = None
    dreamsim: Optional[DreamSimEmbedder] = None
    fid_feature: Optional[torch.nn.Module] = None
    fid_size: int = 299
    identity: Optional[TraitClassifier] = None
    unavailable: dict[str, str] = field(default_factory=dict)   # metric family -> why it is null

    @classmethod
    def load(cls, config: MetricConfig) -> "Backends":
        """Build each available backend; record why the others are not (or raise, if strict)."""
        b = cls()
        faces = make_face_embedder(config.face_backend, config.arcface_dir, config.device)
        status = faces.available() if faces else (False, "eval.face_backend: none")
        if require("face", status, config.strict and faces is not None):
            b.faces = faces
        else:
            b.unavailable["face"] = status[1]
        status = ClipScorer.available(config.clip_model)
        if require("clip", status, config.strict):
            b.clip = ClipScorer.load(config.clip_model, config.device, config.batch_size)
        else:
            b.unavailable["clip"] = status[1]
        ds = DreamSimEmbedder(config.dreamsim_cache, config.dreamsim_type, config.device, config.batch_size)
        status = ds.available()
        if require("dreamsim", status, config.strict):
            b.dreamsim = ds
        else:
            b.unavailable["dreamsim"] = status[1]
        status = identity_model_status(config.identity_model)
        if require("identity", status, config.strict and config.identity_model is not None):
            b.identity = TraitClassifier.load(config.identity_model)
        else:
            b.unavailable["identity"] = status[1]
        status = inception_available(config.fid_weights)
        if require("fid", status, config.strict):
            b.fid_feature = load_inception(config.fid_weights).to(config.device)
        else:
            b.unavailable["fid"] = status[1]
        return b


@dataclass
class PerImage:
    """Per-image quantities, aligned with the table's rows; None where the backend is unavailable."""
    faces: Optional[list] = None                 # unit face embedding or None (no face found)
    clip: Optional[np.ndarray] = None            # [N] CLIP score
    dreamsim: Optional[torch.Tensor | Batches] = None      # [N, d] (or read from a FeatureStore)
    fid: Optional[torch.Tensor | Batches] = None           # [N, d]
    identity: Optional[torch.Tensor | Batches] = None      # [N, d] trait-classifier embedding
    traits: Optional[dict] = None                # trait -> [N] predicted labels
    scene: Optional[torch.Tensor] = None         # [N, scenes] scene-head probabilities (SCENE_CLASSES order)

    found: Optional[np.ndarray] = None           # [N] face found (with faces on disk: `stored_faces`)
    stored_faces: Optional[Batches] = None       # the found faces' embeddings, read from a FeatureStore

    def has_faces(self) -> bool:
        return self.faces is not None or self.found is not None

    def face_found(self) -> np.ndarray:
        """[N] whether a face was found in each image."""
        if self.found is not None:
            return self.found
        return np.asarray([f is not None for f in self.faces], dtype=bool)

    def face_batches(self) -> Batches:
        """The found faces' embeddings as `Batches` over their table rows."""
        if self.found is not None:
            return self.stored_faces or (lambda: iter(()))
        rows = np.flatnonzero(self.face_found())
        if not len(rows):
            return lambda: iter(())
        stacked = torch.from_numpy(np.stack([np.asarray(self.faces[i], dtype=np.float32) for i in rows]))

        def batches():
            for pos, vectors in in_memory(stacked)():
                yield rows[pos], vectors
        return batches


def as_batches(vectors: torch.Tensor | Batches) -> Batches:
    return in_memory(vectors) if torch.is_tensor(vectors) else vectors


def latent_batches(latents: torch.Tensor | Batches) -> Batches:
    """`Batches` of the latent metric's vectors (`latent_vectors`, one batch at a time) from final latents in
    memory [N, 4, h, w] or from `Batches` of them (the render cache, read batch by batch)."""
    source = in_memory(latents) if torch.is_tensor(latents) else latents

    def batches():
        for rows, batch in source():
            yield rows, latent_vectors(batch)
    return batches


def load_rgb(path: str) -> Image.Image:
    """An image file as RGB, its file closed."""
    with Image.open(path) as img:
        return img.convert("RGB")


def check_manifest(table: pd.DataFrame, source: str = "the manifest") -> pd.DataFrame:
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{source} lacks column(s) {', '.join(missing)}; it needs {', '.join(MANIFEST_COLUMNS)}")
    table = table.reset_index(drop=True).copy()
    if "setting" not in table.columns:
        table["setting"] = ""
    for col in (*MANIFEST_COLUMNS, "setting"):
        table[col] = table[col].fillna("").astype(str)
    return table


def extract(table: pd.DataFrame, load_image: Callable[[int], Image.Image], backends: Backends,
            batch_size: int = 16, desc: str = "scoring", store: Optional[str | Path] = None) -> PerImage:
    """One pass over the images (in batches, each loaded once) computing every available quantity. With
    `store` (a scratch folder) the embeddings go to disk shard by shard and are read back a batch at a time
    (`FeatureStore`); without it they stay in memory (small tables, tests)."""
    shards = FeatureStore(store) if store is not None else None
    per = PerImage(faces=[] if backends.faces and shards is None else None)
    found, clip, vectors, scene = [], [], {}, []
    if backends.identity is not None:
        per.traits = {name: [] for name in TRAIT_CLASSES}
    for start in tqdm(range(0, len(table), batch_size), desc=desc, unit="batch"):
        rows = range(start, min(start + batch_size, len(table)))
        images = [load_image(i) for i in rows]
        batch = {}
        if backends.faces:
            faces = backends.faces.embed(images)
            found += [f is not None for f in faces]
            if shards is None:
                per.faces.extend(faces)
            else:
                width = next((len(f) for f in faces if f is not None), 1)
                batch["face"] = torch.from_numpy(np.stack([np.zeros(width, np.float32) if f is None else
                                                           np.asarray(f, np.float32) for f in faces]))
        if backends.clip:
            clip.append(backends.clip.scores(images, [table.at[i, "prompt"] for i in rows]))
        if backends.dreamsim:
            batch["dreamsim"] = backends.dreamsim.embed(images)
        if backends.fid_feature is not None:
            batch["fid"] = fid_features(backends.fid_feature, images, backends.fid_size, batch_size)
        if backends.identity is not None:
            probs = backends.identity.probabilities(images)
            batch["identity"] = backends.identity.embed_probabilities(probs)
            scene.append(probs[SCENE])
            for name in TRAIT_CLASSES:
                per.traits[name] += probs[name].argmax(dim=1).tolist()
        if shards is not None and batch:
            shards.add(len(rows), batch)
        else:
            for name, v in batch.items():
                vectors.setdefault(name, []).append(v)
    per.clip = torch.cat(clip).numpy() if clip else None
    per.scene = torch.cat(scene) if scene else None
    for name in ("dreamsim", "fid", "identity"):
        if shards is not None and shards.sizes and backends_has(backends, name):
            setattr(per, name, shards.batches(name))
        elif name in vectors:
            setattr(per, name, torch.cat(vectors[name]))
    if backends.faces and shards is not None:
        per.found = np.asarray(found, dtype=bool)
        per.stored_faces = shards.batches("face", per.found) if shards.sizes else None
    return per


def backends_has(backends: Backends, family: str) -> bool:
    models = {"dreamsim": backends.dreamsim, "fid": backends.fid_feature, "identity": backends.identity}
    return models[family] is not None


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def image_keys(table: pd.DataFrame) -> np.ndarray:
    """One key per distinct image: (prompt, noise seed) where the table records seeds, else the path."""
    if "noise_seed" in table.columns:
        return (table["prompt"].astype(str) + "|" + table["noise_seed"].astype(str)).to_numpy()
    return table["path"].astype(str).to_numpy()


def sim_div_scores(sim_key: str, div_key: Optional[str], batches: Batches, rows: np.ndarray, identities: list,
                   div_units: Optional[list], boot: Bootstrap) -> tuple[dict, str]:
    """Sim grouped by `identities` and Div grouped by `div_units` (None: the identities; or one unit per image
    for a model without identity input), each with its bootstrap interval over the same grouping; and why a null.
    `rows` are the table rows (ascending) whose vectors `batches` reads, the labels one per row."""
    stats = group_stats_stream(batches, rows, identities)
    out = {sim_key: stats.sim()}
    ci = sim_div_interval(stats, boot)
    out[f"{sim_key}_ci_low"], out[f"{sim_key}_ci_high"] = ci["sim_ci_low"], ci["sim_ci_high"]
    reasons = [] if stats.sim() is not None else [
        f"no identity has two embeddings ({stats.vectors} over {len(stats.names)} identities)"]
    if div_key is not None:
        if div_units is not None:
            per_unit = unit_div(batches, rows, div_units, boot)
            div, low, high, count = per_unit.div, per_unit.ci_low, per_unit.ci_high, per_unit.units
        else:
            div, low, high, count = stats.div(), ci["div_ci_low"], ci["div_ci_high"], len(stats.names)
        out[div_key], out[f"{div_key}_ci_low"], out[f"{div_key}_ci_high"] = div, low, high
        if div is None:
            reasons.append(f"Div needs two identities with an embedding, got {count}")
    return out, "; ".join(reasons)


def scene_scores(probs: torch.Tensor, settings: list, units: list, boot: Bootstrap) -> tuple[dict, str]:
    """Scene fidelity (mean probability of the prompted scene) and accuracy of the images whose `setting` names
    one of the classifier's scenes, the fidelity with its interval over `units`; and why a null."""
    keys = ("scene_fidelity", "scene_fidelity_ci_low", "scene_fidelity_ci_high", "scene_accuracy")
    rows = [i for i, s in enumerate(settings) if s in SCENE_CLASSES]
    if not rows:
        return dict.fromkeys(keys), "no prompt of this group names one of the world's scenes"
    target = torch.tensor([SCENE_CLASSES.index(settings[i]) for i in rows])
    p = probs[torch.tensor(rows)]
    prompted = p[torch.arange(len(rows)), target].double().numpy()
    low, high = mean_interval(prompted, [units[i] for i in rows], boot)
    hits = (p.argmax(dim=1) == target).double().mean()
    return dict(zip(keys, (float(prompted.mean()), low, high, float(hits)))), ""


def group_metrics(table: pd.DataFrame, per: PerImage, rows: np.ndarray, backends: Backends,
                  latents: Optional[torch.Tensor | Batches] = None, reference: Optional[np.ndarray] = None,
                  every_image_its_own_identity: bool = False, boot: Bootstrap = Bootstrap()) -> tuple[dict, dict]:
    """Metrics of the rows selected by the boolean mask `rows`, and {metric: reason} for data-caused nulls.
    `reference` (a boolean mask) selects the images FID compares against; None skips FID.

    `every_image_its_own_identity`: Div treats each distinct image as its own identity, and every interval
    resamples images. That is the right reading for a model with no identity input (the base model with no
    pseudo-word draws a new person for every noise): grouping its images by a code it never saw would average
    random people together and shrink Div. Sim still pairs the images of each group (same jobs as the
    method's), which is the baseline Sim must beat."""
    idx = np.flatnonzero(rows)
    identities = table["identity"].to_numpy()[idx].tolist()
    units = image_keys(table)[idx].tolist() if every_image_its_own_identity else None
    out: dict = {m: None for m in (*METRICS, *INTERVALS)}
    reasons: dict = {}
    out["images"] = int(len(idx))

    def add(scores: dict, why: str) -> None:
        out.update(scores)
        if why:
            reasons.update({k: why for k, v in scores.items() if v is None and not k.endswith(("_low", "_high"))})

    def sim_div_of(sim_key: str, div_key: Optional[str], batches: Batches, keep: Optional[np.ndarray] = None):
        """sim_div_scores of this group's rows (those where `keep`, e.g. a face was found)."""
        keep = np.ones(len(idx), dtype=bool) if keep is None else keep
        return sim_div_scores(sim_key, div_key, batches, idx[keep], [i for i, k in zip(identities, keep) if k],
                              None if units is None else [u for u, k in zip(units, keep) if k], boot)

    if per.has_faces():
        found = per.face_found()[idx]
        out.update(face_detection_rate=float(found.mean()) if len(idx) else None, faces=int(found.sum()))
        scores, why = sim_div_of("face_sim", "face_div", per.face_batches(), found)
        add(scores, f"a face was found in {int(found.sum())}/{len(idx)} images; {why}" if why else "")
    if per.clip is not None and len(idx):
        out["clip"] = float(per.clip[idx].mean())
    if per.dreamsim is not None:
        add(*sim_div_of("dreamsim", None, as_batches(per.dreamsim)))
    if per.fid is not None and reference is not None:
        ref = np.flatnonzero(reference)
        if len(ref) >= 2 and len(idx) >= 2:
            out["fid"] = fid_stream(as_batches(per.fid), ref, as_batches(per.fid), idx)
            out["fid_images"] = int(min(len(ref), len(idx)))
        else:
            reasons["fid"] = f"FID needs two images on each side; {len(ref)} reference, {len(idx)} generated"
    if per.identity is not None:
        add(*sim_div_of("identity_sim", "identity_div", as_batches(per.identity)))
        agree = trait_agreement({name: [labels[i] for i in idx] for name, labels in per.traits.items()},
                                identities)
        out.update({f"agree_{name}": v for name, v in agree.items()})
        out["trait_agreement"] = _mean(agree[name] for name in backends.identity.identity_traits)
    if per.scene is not None and len(idx):
        add(*scene_scores(per.scene[torch.from_numpy(idx)], table["setting"].to_numpy()[idx].tolist(),
                          identities if units is None else units, boot))
    if latents is not None:
        add(*sim_div_of("latent_sim", "latent_div", latent_batches(latents)))
    return out, reasons


@dataclass
class Scores:
    sets: dict          # set -> method -> metrics
    overall: dict       # method -> mean over sets of each metric
    subjects: list      # rows: set, subject, method, label, metrics
    settings: list      # rows: set, setting, method, label, metrics (sets with settings only)
    reasons: dict       # "set.method.metric" -> why it is null (data)
    unavailable: dict   # metric family -> why it is null (model absent)


def score_table(table: pd.DataFrame, per: PerImage, backends: Backends, fid_reference: str = "base",
                latents: Optional[torch.Tensor | Batches] = None, boot: Bootstrap = Bootstrap()) -> Scores:
    """Score every (set, method) group, and every subject and setting within it. `fid_reference`'s images
    are also the no-identity-input reference (Div and intervals per image)."""
    sets, subjects, settings, reasons = {}, [], [], {}
    for set_name in table["set"].unique():
        in_set = (table["set"] == set_name).to_numpy()
        reference = in_set & (table["method"] == fid_reference).to_numpy()
        sets[set_name] = {}
        for method in table.loc[in_set, "method"].unique():
            rows = in_set & (table["method"] == method).to_numpy()
            ref = reference if reference.any() and method != fid_reference else None
            own = method == fid_reference
            metrics, why = group_metrics(table, per, rows, backends, latents, ref, own, boot)
            if ref is None and per.fid is not None:
                why["fid"] = (f"{method} is the FID reference" if method == fid_reference else
                              f"no images of the reference method {fid_reference!r} in set {set_name!r}")
            sets[set_name][method] = metrics
            reasons.update({f"{set_name}.{method}.{k}": v for k, v in why.items()})
            for column, out in (("subject", subjects), ("setting", settings)):
                for value in table.loc[rows, column].unique():
                    if not value:
                        continue
                    part, _ = group_metrics(table, per, rows & (table[column] == value).to_numpy(), backends,
                                            latents, None, own, boot)
                    part.pop("fid")
                    out.append({"set": set_name, column: value, "method": method, "label": f"{value} / {method}",
                                **part})
    methods = list(dict.fromkeys(m for s in sets.values() for m in s))
    overall = {m: {k: _mean(s[m].get(k) for s in sets.values() if m in s) for k in METRICS} for m in methods}
    return Scores(sets, overall, subjects, settings, reasons, dict(backends.unavailable))

"""An exact identity metric for the synthetic world: a small CNN that reads the renderer's drawn traits.

Why: in the synthetic world (`cocoins.world.people`) an identity *is* its set of categorical traits, so a
classifier of those traits is the mini-world's ArcFace (issue 6). It is trained from scratch on freshly
rendered portraits whose traits are known (random identities, scenes and poses, all from a seed), with
augmentation (Gaussian blur, downsample-upsample, additive noise, small shifts) so it also reads blurry
generations. `embed` concatenates the per-trait softmax vectors and L2-normalises them, so Section 4.2's
Sim / Div come from `cocoins.simdiv.sim_div` unchanged; `trait_agreement` is the per-trait fraction of
same-identity image pairs whose predicted labels agree.

A `scene` head reads the background the renderer drew (one of `SCENES`): the mini-world's prompt-fidelity
metric (evaluate's `scene_fidelity`, standing in for CLIP: Table 4's main effect is prompt fidelity). It is
trained on the same renders, whose scene is known, and is never part of the identity embedding.

The continuous face-shape factors (face_width, face_length, eye_spacing) are not classified: they are small
geometric jitters, not categorical traits. Note that a bald identity's hair colour shows only in its
eyebrows (and beard / mustache), so hair_color is the hardest head on bald portraits.
Saved as safetensors (weights) plus JSON (config); no pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from cocoins.world.people import (EYES, HAIR, HAIR_STYLES, SCENES, SKIN, ImageSpec, Traits, WorldConfig,
                                  draw_traits, render)

# Every categorical trait the renderer draws, with its classes in a fixed order (the softmax index).
TRAIT_CLASSES: dict[str, tuple] = {
    "male": (False, True), "young": (False, True), "skin": tuple(SKIN), "hair_color": tuple(HAIR),
    "hair_style": tuple(HAIR_STYLES), "eye_color": tuple(EYES), "eyeglasses": (False, True),
    "beard": (False, True), "mustache": (False, True), "smiling": (False, True), "lipstick": (False, True),
}
SCENE = "scene"
SCENE_CLASSES: tuple[str, ...] = tuple(SCENES)
# Every head of the network: the traits, then the scene.
HEADS: dict[str, tuple] = {**TRAIT_CLASSES, SCENE: SCENE_CLASSES}
WEIGHTS_FILE, CONFIG_FILE = "traits.safetensors", "traits.json"


@dataclass(frozen=True)
class TraitConfig:
    """Architecture and provenance of a trait classifier (what `load` needs to rebuild it)."""
    image_size: int = 64
    width: int = 16
    seed: int = 0
    steps: int = 0
    train_images: int = 0
    # Traits the identity embedding uses: those the classifier reads reliably (the identity stage keeps the
    # ones above identity.min_accuracy on held-out VAE reconstructions). Empty: all traits.
    identity_traits: tuple[str, ...] = ()


def trait_labels(t: Traits) -> dict[str, int]:
    """Class index of every categorical trait of one identity."""
    return {name: classes.index(getattr(t, name)) for name, classes in TRAIT_CLASSES.items()}


def render_portraits(seed: int, identities: Sequence[int], image_size: int = 64,
                     first_index: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one single-person portrait per entry of `identities` (an identity may repeat: then its images
    differ in scene and pose only) with the renderer's own functions. Returns (uint8 [N, H, W, 3], labels
    {head: int64 [N]}, every trait and `scene`); image k uses per-image RNG row `first_index + k`, so the
    result is a pure function of the arguments."""
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    cfg = WorldConfig(seed=seed, image_size=image_size)
    scenes = list(SCENES)
    scene_rng = np.random.default_rng([seed, 7, first_index])
    traits: dict[int, Traits] = {}
    images, labels = [], {name: [] for name in HEADS}
    for k, ident in enumerate(identities):
        if ident not in traits:
            traits[ident] = draw_traits(seed, int(ident))
        scene = int(scene_rng.integers(len(scenes)))
        spec = ImageSpec(f"{k:06d}", (int(ident),), scenes[scene], first_index + k)
        images.append(np.asarray(render(spec, traits, cfg)[0].convert("RGB"), dtype=np.uint8))
        for name, idx in trait_labels(traits[ident]).items():
            labels[name].append(idx)
        labels[SCENE].append(scene)
    return np.stack(images), {name: np.asarray(v, dtype=np.int64) for name, v in labels.items()}


def to_tensor(images, image_size: int) -> torch.Tensor:
    """float32 [N, 3, S, S] in [0, 1] from uint8 [N, H, W, 3] arrays, float tensors [N, 3, H, W] in [0, 1],
    or a list of PIL images; other sizes are resized (bilinear, antialiased)."""
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], Image.Image):
        images = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 [N, H, W, 3] images, got {images.dtype} {images.shape}")
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    elif torch.is_tensor(images):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a float [N, 3, H, W] tensor, got {tuple(images.shape)}")
        x = images.float()
    else:
        raise TypeError(f"unsupported image container: {type(images).__name__}")
    if len(x) == 0:
        raise ValueError("no images given")
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous()


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Degrade a batch [N, 3, S, S] the way generations are degraded, per sample: shift by up to 2 px,
    Gaussian blur (sigma up to 1.5 px), downsample-upsample (2x or 4x), brightness and contrast jitter,
    additive Gaussian noise. Deterministic given `gen`."""
    n, _, s, _ = x.shape
    shifts = torch.randint(-2, 3, (n, 2), generator=gen)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    x = torch.stack([padded[i, :, 2 + dy:2 + dy + s, 2 + dx:2 + dx + s]
                     for i, (dy, dx) in enumerate(shifts.tolist())])
    sigma = torch.rand(n, generator=gen) * 1.5 * (torch.rand(n, generator=gen) < 0.5)
    r = torch.arange(-3, 4, dtype=torch.float32)
    k1 = torch.exp(-r[None] ** 2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    k1 = k1 / k1.sum(dim=1, keepdim=True)
    k2 = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(3, dim=0)[:, None]     # [3N, 1, 7, 7]
    x = F.conv2d(F.pad(x.reshape(1, 3 * n, s, s), (3, 3, 3, 3), mode="replicate"), k2, groups=3 * n)
    x = x.reshape(n, 3, s, s)
    factor = torch.tensor([1, 2, 4])[torch.multinomial(torch.tensor([0.6, 0.25, 0.15]), n, True, generator=gen)]
    for f in (2, 4):
        pick = factor == f
        if pick.any():
            small = F.interpolate(x[pick], scale_factor=1 / f, mode="bilinear", antialias=True)
            x[pick] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.2
    bright = (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.1
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + bright
    noise_std = torch.rand(n, 1, 1, 1, generator=gen) * 0.08
    return (x + noise_std * torch.randn(x.shape, generator=gen)).clamp(0, 1)


class TraitNet(nn.Module):
    """Conv-BN-ReLU-pool blocks from S down to 4x4 (channels width, 2 width, ...), a shared 256-d layer,
    then one linear softmax head per trait and one for the scene."""

    def __init__(self, cfg: TraitConfig):
        super().__init__()
        if cfg.image_size < 8 or cfg.image_size & (cfg.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {cfg.image_size}")
        layers: list[nn.Module] = []
        cin, side, cout = 3, cfg.image_size, cfg.width
        while side > 4:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
            cin, side, cout = cout, side // 2, cout * 2
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * 16, 256), nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Linear(256, len(c)) for name, c in HEADS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body((x - 0.5) / 0.25)
        return {name: head(h) for name, head in self.heads.items()}


class TraitClassifier:
    """A trained `TraitNet` plus its config: predict, embed, save and load."""

    def __init__(self, net: TraitNet, cfg: TraitConfig):
        self.net, self.cfg = net.eval(), cfg

    @torch.no_grad()
    def probabilities(self, images, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Per-head softmax [N, classes] of `images` (any container `to_tensor` accepts): every trait and
        `scene`."""
        x = to_tensor(images, self.cfg.image_size)
        outs = [self.net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return {name: torch.cat([o[name] for o in outs]).softmax(dim=1) for name in HEADS}

    def predict(self, images) -> dict[str, list]:
        """Predicted class value per head and image, e.g. {"skin": ["tan", ...], "scene": ["sky blue", ...]}."""
        return {name: [HEADS[name][i] for i in p.argmax(dim=1).tolist()]
                for name, p in self.probabilities(images).items()}

    def embed(self, images) -> torch.Tensor:
        """Identity embedding [N, D]: the per-trait probability vectors concatenated, L2-normalised
        (D = total number of classes); feed it to `cocoins.simdiv.sim_div` for Section 4.2's
        Sim / Div."""
        return self.embed_probabilities(self.probabilities(images))

    @property
    def identity_traits(self) -> tuple[str, ...]:
        return self.cfg.identity_traits or tuple(TRAIT_CLASSES)

    def embed_probabilities(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """`embed` from already computed `probabilities`: the `identity_traits` blocks only. A trait the
        classifier cannot read (e.g. eye colour at 32 px) gives the same flat vector for every image, and would
        only pull every Sim up and every Div down."""
        return F.normalize(torch.cat([probs[name] for name in self.identity_traits], dim=1), dim=1)

    def with_identity_traits(self, names: Sequence[str]) -> "TraitClassifier":
        unknown = sorted(set(names) - set(TRAIT_CLASSES))
        if unknown or not names:
            raise ValueError(f"identity traits must be a non-empty subset of {list(TRAIT_CLASSES)}, got {list(names)}")
        return TraitClassifier(self.net, replace(self.cfg, identity_traits=tuple(n for n in TRAIT_CLASSES if n in names)))

    def accuracy(self, images, labels: dict[str, np.ndarray]) -> dict[str, float]:
        """Per-head accuracy against class indices {head: int [N]} (as `render_portraits` returns)."""
        probs = self.probabilities(images)
        return {name: float((p.argmax(dim=1).numpy() == labels[name]).mean()) for name, p in probs.items()}

    def save(self, out_dir: str | Path) -> Path:
        """Write traits.safetensors and traits.json into `out_dir`; return the directory."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(out / WEIGHTS_FILE))
        classes = {name: [c if isinstance(c, str) else bool(c) for c in cs] for name, cs in TRAIT_CLASSES.items()}
        (out / CONFIG_FILE).write_text(json.dumps({"config": asdict(self.cfg), "traits": classes,
                                                   "scenes": list(SCENE_CLASSES)}, indent=2, sort_keys=True) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "TraitClassifier":
        """Rebuild a classifier written by `save`; errors if files are missing or the traits differ."""
        d = Path(directory)
        missing = [n for n in (WEIGHTS_FILE, CONFIG_FILE) if not (d / n).exists()]
        if missing:
            raise FileNotFoundError(f"trait classifier in {d} lacks {', '.join(missing)}")
        meta = json.loads((d / CONFIG_FILE).read_text())
        expected = {name: list(cs) for name, cs in TRAIT_CLASSES.items()}
        if meta.get("traits") != expected:
            raise ValueError(f"{d / CONFIG_FILE} was saved for other traits than this renderer draws")
        if meta.get("scenes") != list(SCENE_CLASSES):
            raise ValueError(f"{d / CONFIG_FILE} was saved without this renderer's scene head; retrain it "
                             "(`dvc repro identity`)")
        known = {f.name for f in fields(TraitConfig)}
        values = {k: v for k, v in meta["config"].items() if k in known}
        values["identity_traits"] = tuple(values.get("identity_traits", ()))
        cfg = TraitConfig(**values)
        net = TraitNet(cfg)
        net.load_state_dict(load_file(str(d / WEIGHTS_FILE)), strict=True)
        return cls(net, cfg)


def identity_model_status(directory: Optional[str]) -> tuple[bool, str]:
    """(available, why not) for a trait classifier directory, in the form `metrics.base.require` takes."""
    if directory is None:
        return False, ("no identity model: the exact identity metric exists for the synthetic world only "
                       "(identity.backend: traits)")
    d = Path(directory)
    missing = [n for n in (WEIGHTS_FILE, CONFIG_FILE) if not (d / n).is_file()]
    if missing:
        note = d / "none.json"
        why = json.loads(note.read_text()).get("reason", "") if note.is_file() else ""
        return False, why or f"{d} lacks {', '.join(missing)}; run `dvc repro identity`"
    return True, ""


def vae_round_trip(vae) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images [N, 3, S, S] in [0, 1] -> what `vae` (a diffusers AutoencoderKL) makes of them: encoded and decoded
    (posterior mean) at the VAE's own resolution, resized back to S. `train_trait_classifier`'s `reconstruct`."""

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        size = vae.config.sample_size
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        y = vae.decode(vae.encode(y * 2 - 1).latent_dist.mean).sample
        return F.interpolate((y + 1) / 2, size=x.shape[-2:], mode="bilinear")

    return reconstruct


def train_trait_classifier(seed: int = 0, steps: int = 800, train_images: int = 1500, batch_size: int = 64,
                           image_size: int = 64, width: int = 16, lr: float = 3e-3, progress: bool = True,
                           reconstruct: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                           reconstruct_share: float = 0.5) -> TraitClassifier:
    """Train a trait classifier from scratch on `train_images` fresh renders of as many random identities
    (world seed `seed`, identities 1..train_images), with `augment` on every batch. Same arguments (and
    thread count) give identical weights.

    `reconstruct` maps images [N, 3, S, S] in [0, 1] to what a generator's decoder makes of them (e.g. the base
    model's VAE encode-decode); then a `reconstruct_share` of every batch is shown as reconstructions, so the
    classifier reads the decoder's rendering of a trait the way it reads a clean one."""
    if steps < 1 or train_images < batch_size or batch_size < 2:
        raise ValueError(f"need steps >= 1 and train_images >= batch_size >= 2, got steps={steps}, "
                         f"train_images={train_images}, batch_size={batch_size}")
    if not 0.0 <= reconstruct_share <= 1.0:
        raise ValueError(f"reconstruct_share must be in [0, 1], got {reconstruct_share}")
    images, labels = render_portraits(seed, range(1, train_images + 1), image_size)
    x_all = to_tensor(images, image_size)
    x_rec = None
    if reconstruct is not None:
        with torch.no_grad():
            x_rec = torch.cat([reconstruct(x_all[i:i + 256]).clamp(0, 1) for i in range(0, len(x_all), 256)])
        if x_rec.shape != x_all.shape:
            raise ValueError(f"reconstruct returned {tuple(x_rec.shape)} for images {tuple(x_all.shape)}")
    y_all = {name: torch.from_numpy(v) for name, v in labels.items()}
    cfg = TraitConfig(image_size=image_size, width=width, seed=seed, steps=steps, train_images=train_images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = TraitNet(cfg)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    net.train()
    for _ in tqdm(range(steps), desc="trait classifier", unit="step", disable=not progress):
        idx = torch.randint(len(x_all), (batch_size,), generator=gen)
        batch = x_all[idx]
        if x_rec is not None:
            pick = torch.rand(batch_size, generator=gen) < reconstruct_share
            batch = torch.where(pick[:, None, None, None], x_rec[idx], batch)
        logits = net(augment(batch, gen))
        loss = sum(F.cross_entropy(logits[name], y_all[name][idx]) for name in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return TraitClassifier(net, cfg)


def trait_agreement(predictions: dict[str, Sequence], identities: Sequence) -> dict[str, float | None]:
    """Per trait, the fraction of unordered pairs of images with the same identity whose labels agree;
    None for every trait when no identity has two images."""
    n = len(identities)
    for name, labels in predictions.items():
        if len(labels) != n:
            raise ValueError(f"trait {name!r} has {len(labels)} labels for {n} identities")
    groups: dict[str, list[int]] = {}
    for i, ident in enumerate(identities):
        groups.setdefault(str(ident), []).append(i)
    pairs = [(a, b) for rows in groups.values() for k, a in enumerate(rows) for b in rows[k + 1:]]
    return {name: (sum(labels[a] == labels[b] for a, b in pairs) / len(pairs) if pairs else None)
            for name, labels in predictions.items()}

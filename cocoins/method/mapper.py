"""The mapping network f: R^c -> R^d of Eq. 3, turning a latent code z into a pseudo-word w.

SDXL has two text encoders, so the pseudo-word is the concatenation of one token embedding per encoder:
d = d1 + d2 = 768 (CLIP ViT-L) + 1280 (OpenCLIP bigG) = 2048. The first d1 values go to encoder 1.

`Mapper` is a diffusers `ModelMixin` + `ConfigMixin`: `save_pretrained` writes `config.json`, the weights as
`diffusion_pytorch_model.safetensors` and a model card `README.md`; `from_pretrained` reads them back
(safetensors only). Directories written before that (`mapper.safetensors` + a bare `config.json`) still load.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = SAFETENSORS_WEIGHTS_NAME          # "diffusion_pytorch_model.safetensors"
LEGACY_WEIGHTS_NAME = "mapper.safetensors"       # the hand-written format of earlier releases
MODEL_CARD_NAME = "README.md"


@dataclass(frozen=True)
class MapperConfig:
    code_dim: int = 256                    # c in Table 7
    layers: int = 8                        # n in Table 7: number of Linear layers
    hidden_dim: int = 256                  # the embedded default's (params mapper.hidden_dim); full scale: 1024
    out_dims: tuple[int, ...] = (768, 1280)  # token-embedding width of each text encoder
    output_gain: tuple[float, ...] | None = None  # fixed gain per encoder on the last layer's output (None: 1)
    output_norm: tuple[float, ...] | None = None  # each encoder's part of w rescaled to this norm (None: free)
    odd: bool = False                      # f(z) = (g(z) - g(-z)) / 2: E_z[f(z)] = 0 for z ~ N(0, I)

    @property
    def out_dim(self) -> int:
        return sum(self.out_dims)

    def __post_init__(self):
        if self.layers < 1 or self.code_dim < 1 or self.hidden_dim < 1 or not self.out_dims:
            raise ValueError(f"invalid MapperConfig {self}: sizes must be positive, layers >= 1")
        if self.output_gain is not None and (len(self.output_gain) != len(self.out_dims)
                                             or any(not g > 0 for g in self.output_gain)):
            raise ValueError(f"invalid MapperConfig {self}: output_gain needs one positive gain per text encoder")
        if self.output_norm is not None and (len(self.output_norm) != len(self.out_dims)
                                             or any(not r > 0 for r in self.output_norm)):
            raise ValueError(f"invalid MapperConfig {self}: output_norm needs one positive norm per text encoder")


class Mapper(ModelMixin, ConfigMixin):
    """Eq. 3: w = f(z), z ~ N(0, I). An n-layer MLP with SiLU between layers (StyleGAN's mapping net).

    Build it from a `MapperConfig` (`Mapper(MapperConfig(...))`) or from its fields as keywords (what
    `from_config` / `from_pretrained` do). `mapper.config` is diffusers' frozen config (`.code_dim`, ...).
    """

    config_name = CONFIG_NAME

    def __init__(self, code_dim: int | MapperConfig = 256, layers: int = 8, hidden_dim: int = 256,
                 out_dims: tuple[int, ...] | list[int] = (768, 1280),
                 output_gain: tuple[float, ...] | list[float] | None = None,
                 output_norm: tuple[float, ...] | list[float] | None = None, odd: bool = False):
        super().__init__()
        spec = code_dim if isinstance(code_dim, MapperConfig) else MapperConfig(
            int(code_dim), int(layers), int(hidden_dim), tuple(int(d) for d in out_dims),
            None if output_gain is None else tuple(float(g) for g in output_gain),
            None if output_norm is None else tuple(float(r) for r in output_norm), bool(odd))
        # Registered by hand (not @register_to_config) so that a MapperConfig argument is stored as its fields.
        self.register_to_config(code_dim=spec.code_dim, layers=spec.layers, hidden_dim=spec.hidden_dim,
                                out_dims=list(spec.out_dims),
                                output_gain=None if spec.output_gain is None else list(spec.output_gain),
                                output_norm=None if spec.output_norm is None else list(spec.output_norm),
                                odd=spec.odd)
        # StyleGAN's equalized learning rate, on the last layer: it works at unit scale and a fixed gain brings
        # its output to a word's size, so an Adam step moves a pseudo-word by a fixed share of its size
        # (without it a last layer scaled down to a word's size, 0.04 per entry, moves tens of percent a step).
        gain = torch.ones(spec.out_dim) if spec.output_gain is None else torch.cat(
            [torch.full((d,), g) for d, g in zip(spec.out_dims, spec.output_gain)])
        self.register_buffer("gain", gain, persistent=False)
        widths = [spec.code_dim] + [spec.hidden_dim] * (spec.layers - 1) + [spec.out_dim]
        modules: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            modules.append(nn.Linear(fan_in, fan_out))
            if i < spec.layers - 1:
                modules.append(nn.SiLU())
        self.net = nn.Sequential(*modules)

    @property
    def spec(self) -> MapperConfig:
        """The architecture as a `MapperConfig` (diffusers' config also carries bookkeeping keys)."""
        c = self.config
        gain, norm = c.get("output_gain"), c.get("output_norm")
        return MapperConfig(c.code_dim, c.layers, c.hidden_dim, tuple(c.out_dims),
                            None if gain is None else tuple(gain), None if norm is None else tuple(norm),
                            bool(c.get("odd", False)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Eq. 3. z: [..., c] -> w: [..., d1 + d2]."""
        if z.shape[-1] != self.config.code_dim:
            raise ValueError(f"latent code has {z.shape[-1]} values, the mapper expects c = {self.config.code_dim}")
        h = self.net(z)
        if self.config.get("odd", False):
            # `mapper.odd`: the odd part of the MLP. z and -z are equally likely, so the pseudo-words of random
            # codes average to zero: no direction is shared by every code (the trained words of an unconstrained
            # f share one as large as their spread, where the corpus's one-token names share almost none).
            h = (h - self.net(-z)) / 2
        w = h * self.gain   # gain 1 (exact: x * 1.0 == x) unless output_gain is set
        norms = self.config.get("output_norm")
        if norms is None:
            return w
        # `mapper.fixed_norm`: the pseudo-word keeps a word's size in each encoder, so it can only choose a
        # direction (Appendix E: "the pseudo-word lies in the text embedding space"), not outshout the prompt.
        parts = w.split(list(self.config.out_dims), dim=-1)
        return torch.cat([r * nn.functional.normalize(part, dim=-1) for r, part in zip(norms, parts)], dim=-1)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """diffusers' `save_pretrained` (config.json + safetensors weights) plus a model card README.md."""
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)
        (Path(save_directory) / MODEL_CARD_NAME).write_text(model_card(self.spec))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "Mapper":
        """diffusers' `from_pretrained` (safetensors only); also reads a directory in the legacy format."""
        directory = Path(str(pretrained_model_name_or_path))
        local = directory.is_dir() or directory.is_absolute() or str(directory).startswith(".") \
            or len(directory.parts) != 2
        if local and not (directory / WEIGHTS_NAME).is_file():
            if (directory / LEGACY_WEIGHTS_NAME).is_file() and (directory / CONFIG_NAME).is_file():
                return _load_legacy(cls, directory, kwargs.get("torch_dtype"))
            raise FileNotFoundError(f"{directory} is not a mapper dir (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                                    "train one with `dvc repro train`")
        kwargs.setdefault("use_safetensors", True)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # Short names kept for the training loop, evaluation and scripts that used the hand-written format.
    def save(self, directory: str | os.PathLike) -> None:
        self.save_pretrained(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "Mapper":
        return cls.from_pretrained(directory).to(device)


def _load_legacy(cls, directory: Path, dtype: torch.dtype | None) -> Mapper:
    raw = json.loads((directory / CONFIG_NAME).read_text())
    fields = {k: raw[k] for k in ("code_dim", "layers", "hidden_dim", "out_dims") if k in raw}
    mapper = cls(**fields)
    mapper.load_state_dict(load_file(str(directory / LEGACY_WEIGHTS_NAME)))
    return mapper.to(dtype) if dtype is not None else mapper


def weights_path(directory: str | os.PathLike) -> Path:
    """The weights file of a mapper directory (current or legacy name)."""
    directory = Path(directory)
    current = directory / WEIGHTS_NAME
    return current if current.is_file() or not (directory / LEGACY_WEIGHTS_NAME).is_file() \
        else directory / LEGACY_WEIGHTS_NAME


def mapper_fingerprint(directory: str | os.PathLike) -> str:
    """sha256 of the mapper's weights: the identity sidecars and characters record and check."""
    return hashlib.sha256(weights_path(directory).read_bytes()).hexdigest()


def model_card(spec: MapperConfig) -> str:
    """The README.md written beside the weights: what the model is and how to use it."""
    return f"""---
library_name: diffusers
tags:
- cocoins
- text-to-image
- stable-diffusion-xl
---

# CoCoIns mapping network

The mapping network *f* of CoCoIns ("Consistent Subject Generation via Contrastive Instantiated Concepts"):
it turns a latent code z ~ N(0, I) of c = {spec.code_dim} values into a pseudo-word of {spec.out_dim} values
({' + '.join(str(d) for d in spec.out_dims)}, one token embedding per SDXL text encoder) that is inserted
after a tagged subject word. The same code draws the same subject across prompts and seeds.

Architecture: {spec.layers} Linear layers, hidden width {spec.hidden_dim}, SiLU between layers.

```python
from cocoins.pipeline import CoCoInsPipeline

pipe = CoCoInsPipeline.from_pretrained("models/base", mapper="models/mapper")
out = pipe("a <subj1>woman</subj1> reading in a cafe", subjects=[7], seed=1)
out.images[0].save("cafe.png")
```

Or from the command line: `cocoins generate --model models/base --mapper models/mapper --prompt "..." --code-seed 7`.
A pseudo-word only means something to the base model this mapper was trained with.
"""


# E[silu(h)^2] for h ~ N(0, 1), by numerical integration (0.35577552): the second moment a SiLU passes on,
# which a variance-preserving Linear after it divides out (Kaiming's argument, with SiLU in place of ReLU's 1/2).
SILU_SECOND_MOMENT = 0.35577552


@torch.no_grad()
def init_like_words(mapper: Mapper, generator: torch.Generator, probe_codes: int = 4096) -> None:
    """`mapper.init: words`: start f where the text encoders' words are, not at one point.

    Not in the paper, which does not say how f is initialised (a mini-world departure, README "The mini-world";
    `mapper.init: pytorch` keeps nn.Linear's default). With that default an 8-layer SiLU MLP shrinks the code's
    signal at every layer: at step 0 every code gives nearly the same pseudo-word (spread 0.001 against a
    common part of norm 0.39), and training grows only the one or two directions its first gradients find
    (measured on the mini-world: the trained words have effective rank 1.3, pairwise cosine 0.90, against the
    corpus names' 0.05). Here every Linear is orthogonal (Saxe et al., 2014) and preserves the second moment of
    its input (gain 1 / sqrt(m2), m2 = 1 for the code, SILU_SECOND_MOMENT after a SiLU; biases 0), and the last
    layer is then rescaled and shifted, per text encoder, so that over `probe_codes` codes its output has mean 0
    and unit variance per entry. The mapper's `output_gain` (`word_gains`) then gives the pseudo-words a word's
    size: different codes start as different words, as the names of a corpus are.
    """
    linears = [m for m in mapper.net if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        second_moment = 1.0 if i == 0 else SILU_SECOND_MOMENT
        # Orthogonal rows (columns where it widens) scaled to pass the second moment on: a Gaussian init of the
        # same variance lets the code's directions decay with depth (measured at c = 256, 8 layers: the words'
        # effective rank 24 of 64 against 33 of 64 orthogonal).
        nn.init.orthogonal_(layer.weight, generator=generator)
        layer.weight *= (max(1.0, layer.out_features / layer.in_features) / second_moment) ** 0.5
        layer.bias.zero_()
    device = linears[0].weight.device
    hidden = mapper.net[:-1](torch.randn(probe_codes, mapper.config.code_dim, generator=generator).to(device))
    out = linears[-1](hidden)
    last, start = linears[-1], 0
    for width in mapper.config.out_dims:
        part = slice(start, start + width)
        mean = out[:, part].mean(dim=0)
        scale = (out[:, part] - mean).pow(2).mean().rsqrt()
        last.weight[part] *= scale
        last.bias[part] = -mean * scale
        start += width


def word_gains(word_rms: tuple[float, ...], out_dims: tuple[int, ...]) -> tuple[float, ...]:
    """The `output_gain` that gives unit-variance outputs (`init_like_words`) the RMS norm `word_rms[k]`."""
    if len(word_rms) != len(out_dims) or any(not r > 0 for r in word_rms):
        raise ValueError(f"word_rms needs one positive norm per text encoder ({len(out_dims)}), got {word_rms}")
    return tuple(r / d ** 0.5 for r, d in zip(word_rms, out_dims))


@torch.no_grad()
def word_embedding_rms(tokenizers, text_encoders, words) -> tuple[float, ...]:
    """Per text encoder, the RMS norm of the token-table rows of `words` (every sub-token of each): the size
    of a word in each encoder's input space, what `init_like_words` gives the initial pseudo-words."""
    if isinstance(words, str) or not words:
        raise ValueError(f"word_embedding_rms needs a non-empty list of words, got {words!r}")
    out = []
    for tok, enc in zip(tokenizers, text_encoders):
        ids = [i for w in words for i in tok(w, add_special_tokens=False).input_ids]
        if not ids:
            raise ValueError(f"none of {list(words)} has a token in {type(tok).__name__}")
        table = enc.get_input_embeddings().weight
        out.append(float(table[torch.tensor(ids, device=table.device)].float().pow(2).sum(dim=1).mean().sqrt()))
    return tuple(out)


def sample_codes(generator: torch.Generator, n: int, subjects: int, code_dim: int) -> torch.Tensor:
    """z ~ N(0, I) of Eq. 3, one code per subject: [n, subjects, c], drawn on CPU for reproducibility."""
    return torch.randn(n, subjects, code_dim, generator=generator)


@torch.no_grad()
def pseudo_words_one_by_one(mapper: Mapper, codes: torch.Tensor) -> torch.Tensor:
    """w = f(z) (Eq. 3) for codes [..., c] -> [..., d], each code through the mapper alone.

    Why not one batched call: BLAS picks its matrix kernel by the number of rows (and by the CPU's instruction
    set), so f(z) computed among 6 codes and f(z) computed alone can differ in the last bits, and a diffusion
    sampler magnifies that into other pixels. A character saved as a code must render the same image whatever
    else is rendered with it, so every generating path (CLI, evaluation) uses this. The mapper is tiny next
    to the UNet: the loop costs nothing measurable.
    """
    device = next(mapper.parameters()).device
    flat = codes.reshape(-1, codes.shape[-1]).to(device)
    if len(flat) == 0:
        return flat.new_zeros(*codes.shape[:-1], sum(mapper.config.out_dims))
    words = [mapper(flat[i:i + 1]) for i in range(len(flat))]
    return torch.cat(words).reshape(*codes.shape[:-1], -1)

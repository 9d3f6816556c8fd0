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

    @property
    def out_dim(self) -> int:
        return sum(self.out_dims)

    def __post_init__(self):
        if self.layers < 1 or self.code_dim < 1 or self.hidden_dim < 1 or not self.out_dims:
            raise ValueError(f"invalid MapperConfig {self}: sizes must be positive, layers >= 1")


class Mapper(ModelMixin, ConfigMixin):
    """Eq. 3: w = f(z), z ~ N(0, I). An n-layer MLP with SiLU between layers (StyleGAN's mapping net).

    Build it from a `MapperConfig` (`Mapper(MapperConfig(...))`) or from its fields as keywords (what
    `from_config` / `from_pretrained` do). `mapper.config` is diffusers' frozen config (`.code_dim`, ...).
    """

    config_name = CONFIG_NAME

    def __init__(self, code_dim: int | MapperConfig = 256, layers: int = 8, hidden_dim: int = 256,
                 out_dims: tuple[int, ...] | list[int] = (768, 1280)):
        super().__init__()
        spec = code_dim if isinstance(code_dim, MapperConfig) else MapperConfig(
            int(code_dim), int(layers), int(hidden_dim), tuple(int(d) for d in out_dims))
        # Registered by hand (not @register_to_config) so that a MapperConfig argument is stored as its fields.
        self.register_to_config(code_dim=spec.code_dim, layers=spec.layers, hidden_dim=spec.hidden_dim,
                                out_dims=list(spec.out_dims))
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
        return MapperConfig(c.code_dim, c.layers, c.hidden_dim, tuple(c.out_dims))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Eq. 3. z: [..., c] -> w: [..., d1 + d2]."""
        if z.shape[-1] != self.config.code_dim:
            raise ValueError(f"latent code has {z.shape[-1]} values, the mapper expects c = {self.config.code_dim}")
        return self.net(z)

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

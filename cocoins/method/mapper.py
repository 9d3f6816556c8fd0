"""The mapping network f: R^c -> R^d of Eq. 3, turning a latent code z into a pseudo-word w.

SDXL has two text encoders, so the pseudo-word is the concatenation of one token embedding per encoder:
d = d1 + d2 = 768 (CLIP ViT-L) + 1280 (OpenCLIP bigG) = 2048. The first d1 values go to encoder 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "mapper.safetensors"


@dataclass(frozen=True)
class MapperConfig:
    code_dim: int = 256                    # c in Table 7
    layers: int = 8                        # n in Table 7: number of Linear layers
    hidden_dim: int = 1024
    out_dims: tuple[int, ...] = (768, 1280)  # token-embedding width of each text encoder

    @property
    def out_dim(self) -> int:
        return sum(self.out_dims)

    def __post_init__(self):
        if self.layers < 1 or self.code_dim < 1 or self.hidden_dim < 1 or not self.out_dims:
            raise ValueError(f"invalid MapperConfig {self}: sizes must be positive, layers >= 1")


class Mapper(nn.Module):
    """Eq. 3: w = f(z), z ~ N(0, I). An n-layer MLP with SiLU between layers (StyleGAN's mapping net)."""

    def __init__(self, config: MapperConfig):
        super().__init__()
        self.config = config
        widths = [config.code_dim] + [config.hidden_dim] * (config.layers - 1) + [config.out_dim]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < config.layers - 1:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Eq. 3. z: [..., c] -> w: [..., d1 + d2]."""
        if z.shape[-1] != self.config.code_dim:
            raise ValueError(f"latent code has {z.shape[-1]} values, the mapper expects c = {self.config.code_dim}")
        return self.net(z)

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME))
        (directory / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "Mapper":
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise FileNotFoundError(f"{directory} is not a mapper dir (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                                    "train one with `dvc repro train`")
        raw = json.loads(config_path.read_text())
        raw["out_dims"] = tuple(raw["out_dims"])
        mapper = cls(MapperConfig(**raw))
        mapper.load_state_dict(load_file(str(weights_path), device=str(device)))
        return mapper.to(device)


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
    words = [mapper(flat[i:i + 1]) for i in range(len(flat))]
    return torch.cat(words).reshape(*codes.shape[:-1], -1)

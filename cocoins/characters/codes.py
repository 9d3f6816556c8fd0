"""Latent codes z ~ N(0, I) (Eq. 3) as users hold them: a seed, a safetensors file, or values from a sidecar."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cocoins.runtime import UserError

CODE_KEY = "z"
MAX_CODE_FILE_BYTES = 1 << 20     # a code is c floats (1 KiB at c = 256); anything bigger is not a code file


def code_from_seed(seed: int, code_dim: int) -> torch.Tensor:
    """z ~ N(0, I) drawn from `seed`, [c]; the same draw as the evaluation protocol's code seeds."""
    from cocoins.method.mapper import sample_codes

    return sample_codes(torch.Generator().manual_seed(int(seed)), 1, 1, code_dim)[0, 0]


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_code_file(path: str | os.PathLike, code_dim: int, what: str = "code file") -> torch.Tensor:
    """The code `z` [c] saved in a safetensors file; UserError naming the file and the fix otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found; write one with `cocoins sample-code`")
    if path.stat().st_size > MAX_CODE_FILE_BYTES:
        raise UserError(f"{what} {path} is {path.stat().st_size} bytes, too big for a code of {code_dim} values; "
                        "give the .safetensors file `cocoins sample-code` or `cocoins character export` writes")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{what} {path} is not a safetensors file ({err}); give the .safetensors file "
                        "`cocoins sample-code` or `cocoins character export` writes") from None
    z = tensors.get(CODE_KEY)
    if z is None or z.shape != (code_dim,) or not z.is_floating_point():
        shape = "missing" if z is None else f"{z.dtype} {tuple(z.shape)}"
        raise UserError(f"{what} {path} must hold a float tensor '{CODE_KEY}' of shape ({code_dim},) for this "
                        f"mapper (found {shape}); sample one with `cocoins sample-code --dim {code_dim}`")
    z = z.float()
    if not torch.isfinite(z).all():
        raise UserError(f"{what} {path}: the code holds NaN or infinite values; sample a new one")
    return z


def write_code_file(path: str | os.PathLike, z: torch.Tensor, metadata: dict[str, str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({CODE_KEY: z.detach().to("cpu", torch.float32).contiguous()}, str(path), metadata=metadata)
    return path

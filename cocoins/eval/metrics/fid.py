"""FID between a method's images and its base model's images for the same prompts and noises (Appendix C.1,
Table 8), with torchmetrics' `FrechetInceptionDistance`.

Features are extracted once per image (so one pass over a folder serves every group), then each group's FID
is computed by torchmetrics from those features (an identity "feature" module). The Inception network is
torch-fidelity's FID Inception v3, loaded from local weights (`eval.fid_weights`: torch-fidelity's
`weights-inception-2015-12-05-6726825d.pth`, or the same state dict as .safetensors). Tests pass any small
`nn.Module` instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from cocoins.eval.metrics.base import OK, Availability, package_missing, rgb_uint8
from cocoins.simdiv import Batches, in_memory, select_rows

INSTALL = "pip install torchmetrics==1.9.0 torch-fidelity==0.4.0"
WEIGHTS_HINT = ("torch-fidelity's weights-inception-2015-12-05-6726825d.pth (github.com/toshas/torch-fidelity "
                "releases v0.2.0)")


def inception_available(weights: Optional[str]) -> Availability:
    for module in ("torchmetrics", "torch_fidelity"):
        if reason := package_missing(module, INSTALL):
            return False, reason
    if not weights:
        return False, f"eval.fid_weights (--fid-weights) is null; set it to a local copy of {WEIGHTS_HINT}"
    if not Path(weights).is_file():
        return False, f"eval.fid_weights = {weights} does not exist; copy {WEIGHTS_HINT} there"
    return OK


def _plain_state_dict(weights: str) -> dict:
    """The weights as a tensor dict, read without unpickling arbitrary objects (weights_only / safetensors)."""
    if weights.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(weights)
    return torch.load(weights, map_location="cpu", weights_only=True)


def load_inception(weights: str) -> nn.Module:
    """torchmetrics' NoTrainInceptionV3 (2048-d pool features) from local weights."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    state = _plain_state_dict(weights)
    # torch-fidelity reads the path itself with torch.load(weights_only=False); hand it a file we wrote from
    # the tensors we just loaded safely, so no pickle from outside is ever executed.
    with tempfile.TemporaryDirectory() as tmp:
        safe = Path(tmp) / "inception.pth"
        torch.save({k: v.contiguous() for k, v in state.items()}, safe)
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                  feature_extractor_weights_path=str(safe)).eval()


def images_to_uint8(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """[N, 3, size, size] uint8 (what FID's Inception takes; it resizes to 299 itself)."""
    arrays = [rgb_uint8(im if im.size == (size, size) else im.resize((size, size), Image.BICUBIC)) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def module_device(module: nn.Module) -> torch.device:
    """Where a module's weights are (its first parameter or buffer); CPU for a module with neither."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def fid_features(feature: nn.Module, images: Sequence[Image.Image], size: int = 299, batch_size: int = 32) -> torch.Tensor:
    """[N, d] CPU features of `images` from `feature` (uint8 [B, 3, size, size] in, [B, d] out), in the
    module's output precision (float32 for the Inception; no float64 copy).

    Each batch goes to the module's device first: torchmetrics' Inception casts its input's dtype but never
    moves it, so CPU batches into a CUDA Inception fail (after every render is done)."""
    device, out = module_device(feature), []
    for i in range(0, len(images), batch_size):
        batch = images_to_uint8(images[i:i + batch_size], size).to(device)
        features = feature(batch).reshape(len(batch), -1)
        out.append((features.float() if features.dtype in (torch.float16, torch.bfloat16) else features).cpu())
    return torch.cat(out)


class _Given(nn.Module):
    """Passes precomputed features through, so torchmetrics does the FID statistics and matrix square root."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid_from_features(reference: torch.Tensor, generated: torch.Tensor) -> float:
    """FID between two feature sets [N, d] (reference = the base model's images, as "real")."""
    return fid_stream(in_memory(reference), np.arange(len(reference)), in_memory(generated),
                      np.arange(len(generated)))


def fid_stream(reference: Batches, reference_rows: np.ndarray, generated: Batches,
               generated_rows: np.ndarray) -> float:
    """FID between the features of `reference_rows` and of `generated_rows` (table rows, ascending), fed to
    torchmetrics one batch at a time: it keeps only each side's feature sum and d x d product sum (float64), so
    memory does not grow with the number of images (the batch order changes only float sums, ~1e-12)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(reference_rows) < 2 or len(generated_rows) < 2:
        raise ValueError(f"FID needs two images on each side, got {len(reference_rows)} and {len(generated_rows)}")
    metric = None
    for batches, rows, real in ((reference, reference_rows, True), (generated, generated_rows, False)):
        for _, features in select_rows(batches, np.asarray(rows)):
            if metric is None:
                # Scoring runs on the main process alone, after the other ranks have finished and left: with
                # its default sync_on_compute, torchmetrics would gather the sums over the launcher's process
                # group and fail on the peers that are gone (found by the rehearsal under accelerate launch).
                metric = FrechetInceptionDistance(feature=_Given(features.shape[1]), sync_on_compute=False)
            metric.update(features.double(), real=real)
    return float(metric.compute())

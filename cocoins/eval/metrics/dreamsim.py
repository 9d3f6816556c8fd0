"""DreamSim (Fu et al. 2023) subject similarity for Scenes (Table 2, "DS"): the Sim of Section 4.2 computed on
DreamSim embeddings instead of face embeddings (mean cosine between images of the same identity).

The `dreamsim` package downloads its checkpoints into `cache_dir` on first use; here nothing may be
downloaded, so `available()` checks that every file the chosen model needs is already in `cache_dir` before
anything is built. The DINO-based types (ensemble, dino_*) also build their backbone through `torch.hub`,
which reads the hub repo from `cache_dir` (torch.hub's cache layout); without it they are unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from cocoins.eval.metrics.base import OK, Availability, missing_files, package_missing

INSTALL = "pip install dreamsim==0.2.1"
# dreamsim 0.2.1 model.download_weights: the files each type needs, and the torch.hub repo it loads.
REQUIRED = {
    "ensemble": ["dino_vitb16_pretrain.pth", "open_clip_vitb16_pretrain.pth.tar", "clip_vitb16_pretrain.pth.tar",
                 "ensemble_lora"],
    "dino_vitb16": ["dino_vitb16_pretrain.pth", "dino_vitb16_single_lora"],
    "dinov2_vitb14": ["dinov2_vitb14_pretrain.pth", "dinov2_vitb14_single_lora"],
    "open_clip_vitb32": ["open_clip_vitb32_pretrain.pth.tar", "open_clip_vitb32_single_lora"],
    "clip_vitb32": ["clip_vitb32_pretrain.pth.tar", "clip_vitb32_single_lora"],
}
HUB_REPO = {"ensemble": "facebookresearch_dino_main", "dino_vitb16": "facebookresearch_dino_main",
            "dinov2_vitb14": "facebookresearch_dinov2_main"}


@dataclass
class DreamSimEmbedder:
    cache_dir: Optional[str]
    dreamsim_type: str = "ensemble"
    device: str = "cpu"
    batch_size: int = 16
    _model: tuple = field(default=(), repr=False)

    def available(self) -> Availability:
        if self.dreamsim_type not in REQUIRED:
            return False, f"eval.dreamsim_type = {self.dreamsim_type!r}; use one of {', '.join(REQUIRED)}"
        if not self.cache_dir:
            return False, "eval.dreamsim_cache (--dreamsim-cache) is null; point it at a folder holding the DreamSim checkpoints"
        if reason := package_missing("dreamsim", INSTALL):
            return False, reason
        need = REQUIRED[self.dreamsim_type] + ([HUB_REPO[self.dreamsim_type]] if self.dreamsim_type in HUB_REPO else [])
        missing = missing_files(self.cache_dir, need)
        if missing:
            return False, (f"{self.cache_dir} lacks {', '.join(missing)} for DreamSim {self.dreamsim_type}; "
                           "unzip the released checkpoint there (nothing is downloaded here)")
        return OK

    def _load(self):
        if not self._model:
            from dreamsim import dreamsim
            self._model = dreamsim(pretrained=True, device=self.device, cache_dir=self.cache_dir,
                                   dreamsim_type=self.dreamsim_type)
        return self._model

    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Unit DreamSim embeddings [N, d]."""
        model, preprocess = self._load()
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = torch.cat([preprocess(img) for img in images[i:i + self.batch_size]]).to(self.device)
            out.append(model.embed(batch).float().cpu())
        return F.normalize(torch.cat(out), dim=-1)

"""CLIP score (Section 4.2, prompt fidelity): cosine similarity of the projected CLIP text and image embeddings.

Unlike torchmetrics' `CLIPScore` (100 * max(cos, 0)), the paper reports the plain cosine (0.19-0.30 in
Tables 1-5). The model comes from a local diffusers/transformers folder or a hub id that is already in the
local Hugging Face cache; nothing is downloaded (`local_files_only=True`, safetensors only, no remote code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from cocoins.eval.metrics.base import OK, Availability


def _features(output) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output is the projected embedding; 4.x a tensor."""
    return output if torch.is_tensor(output) else output.pooler_output


class ClipScorer:
    """Text-image cosine with a transformers `CLIPModel` (any size: tests use a tiny random one)."""

    def __init__(self, model, tokenizer, image_processor, device: str | torch.device = "cpu", batch_size: int = 32):
        self.model = model.eval().to(device)
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.device, self.batch_size = torch.device(device), batch_size

    @staticmethod
    def available(name_or_path: str | None) -> Availability:
        if not name_or_path:
            return False, "eval.clip_model (--clip-model) is null; set it to a CLIP hub id in the local cache or a local folder"
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            missing = [f for f in ("config.json", "preprocessor_config.json") if not (path / f).is_file()]
            if not list(path.glob("*.safetensors")):
                missing.append("*.safetensors")
            return (False, f"{path} is not a CLIP model folder (missing {', '.join(missing)})") if missing else OK
        if "/" in name_or_path and not name_or_path.startswith((".", "/")):
            from huggingface_hub import try_to_load_from_cache
            if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
                return OK
            return False, (f"{name_or_path} is not in the local Hugging Face cache and nothing is downloaded here; "
                           f"run `hf download {name_or_path}` where there is network, or set eval.clip_model "
                           "to a local folder")
        if name_or_path.startswith((".", "/", "~")):
            return False, f"eval.clip_model (--clip-model) = {name_or_path} does not exist; point it at a local CLIP folder"
        return False, f"eval.clip_model = {name_or_path!r} is neither a folder nor a hub id (owner/name)"

    @classmethod
    def load(cls, name_or_path: str, device: str | torch.device = "cpu", batch_size: int = 32) -> "ClipScorer":
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        kwargs = dict(local_files_only=True)
        model = CLIPModel.from_pretrained(name_or_path, use_safetensors=True, **kwargs)
        return cls(model, CLIPTokenizer.from_pretrained(name_or_path, **kwargs),
                   CLIPImageProcessor.from_pretrained(name_or_path, **kwargs), device, batch_size)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit projected text embeddings [N, p]; prompts longer than CLIP's window are truncated."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt").to(self.device)
            out.append(_features(self.model.get_text_features(input_ids=tok["input_ids"],
                                                              attention_mask=tok["attention_mask"])).float())
        return F.normalize(torch.cat(out), dim=-1).cpu()

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Unit projected image embeddings [N, p]."""
        out = []
        for i in range(0, len(images), self.batch_size):
            pixels = self.image_processor([im.convert("RGB") for im in images[i:i + self.batch_size]],
                                          return_tensors="pt")["pixel_values"].to(self.device)
            out.append(_features(self.model.get_image_features(pixel_values=pixels)).float())
        return F.normalize(torch.cat(out), dim=-1).cpu()

    def scores(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """CLIP score of each (image, text) pair: [N] cosines."""
        if len(images) != len(texts):
            raise ValueError(f"got {len(images)} images for {len(texts)} texts; pass one text per image")
        unique = sorted(set(texts))
        index = {t: i for i, t in enumerate(unique)}
        text = self.text_embeddings(unique)
        rows = torch.tensor([index[t] for t in texts])
        return (self.image_embeddings(images) * text[rows]).sum(dim=-1)

"""Grounding DINO from the original `groundingdino` package (groundingdino-py): the Grounded-SAM-2 checkpoints.

The default detector (`GroundingDino` in grounded_sam2.py) is transformers' port, which loads hub ids. People
who follow the Grounded-SAM-2 repository hold the original checkpoints (`groundingdino_swint_ogc.pth`,
`groundingdino_swinb_cogcoor.pth`) and their Python config files, which only the original package builds.
`OriginalGroundingDino` gives the mask stage the same `detect` as the default, so subject boxes and face
counts reach SAM 2 and the face filter the same way.

- Config: the package's own format (`GroundingDINO_SwinT_OGC.py`: `name = value` lines, read into its
  `SLConfig`). The file is parsed with `ast.literal_eval`, never run: the package's `SLConfig.fromfile`
  would import it as a module, i.e. execute it.
- Text encoder: the config names BERT by hub name (`bert-base-uncased`); `text_encoder`, a local directory
  with BERT's config, weights and vocab, replaces it, so nothing is fetched. The package loads those BERT
  weights while building; the checkpoint's `bert.*` weights then replace them.
- Checkpoint: `torch.load(weights_only=True)`, with `argparse.Namespace` allowed: DINO-family training
  scripts save their arguments next to the weights (`{"model": ..., "args": Namespace}`), a Namespace
  holds plain values, and everything else stays refused. A `.safetensors` file works too. Keys must fit
  the config exactly, save two kinds the released files carry and inference never uses: buffers the
  model rebuilds itself (BERT's `position_ids`, saved by older transformers) and the denoising-training
  label embedding `label_enc.weight` (the Swin-B release loads with exactly these two left over,
  GroundingDINO issue 271). Anything else missing or extra stops with the file named.
- BERT wrapper: the package wraps BERT in `BertModelWarper`, which calls BertModel internals that
  transformers 5 removed (`get_extended_attention_mask`, `get_head_mask`). While building, the plain
  BertModel stands in for it (same parameter names, so checkpoints load unchanged); the package's
  per-phrase attention mask [B, L, L] gets the head axis BertModel's masking expects. A block-diagonal
  mask gives each phrase what BERT gives it alone (checked in tests/test_groundingdino_original.py).
- Inference as the package's `load_image` / `predict`: short side resized to `min_size` (long side at most
  `max_size`), ImageNet normalisation; a box's score is its highest prompt-token probability, its label
  the prompt tokens over the text threshold (the package's `get_phrases_from_posmap`). Batched here: images
  are padded into one `NestedTensor` whose mask keeps the padding out, as transformers' port does.
"""

from __future__ import annotations

import argparse
import ast
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from cocoins.backends.detections import Detections
from cocoins.runtime import UserError

INSTALL = "install it with `make install` (groundingdino-py 0.4.0, installed --no-deps)"
TRAINING_ONLY_KEYS = frozenset({"label_enc.weight"})   # denoising queries of training (dn_number 0 here)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def read_config(path: str) -> dict:
    """The `name = literal` assignments of a Grounding DINO config .py, parsed without running it."""
    if not os.path.isfile(path):
        raise UserError(f"mask.groundingdino_config: {path} not found; use the config .py that belongs to the "
                        "checkpoint (e.g. GroundingDINO_SwinT_OGC.py)")
    try:
        tree = ast.parse(Path(path).read_text(), filename=path)
    except SyntaxError as err:
        raise UserError(f"mask.groundingdino_config: {path} line {err.lineno}: not valid Python ({err.msg})") from None
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue   # a docstring or stray constant
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        try:
            if not isinstance(target, ast.Name):
                raise ValueError
            values[target.id] = ast.literal_eval(node.value)
        except ValueError:
            raise UserError(f"mask.groundingdino_config: {path} line {node.lineno}: only `name = literal` lines are "
                            "read (the file is parsed, never run); write the value out") from None
    return values


def _plain_bert(bert_model):
    """Stands in for the package's BertModelWarper: the BertModel itself, given the head axis of the mask."""
    def add_head_axis(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 3:
            kwargs["attention_mask"] = mask[:, None]
        return args, kwargs

    bert_model.register_forward_pre_hook(add_head_axis, with_kwargs=True)
    return bert_model


def build_from_config(config: str, text_encoder: str) -> torch.nn.Module:
    """The package's GroundingDINO for `config` with random detector weights and BERT from `text_encoder`."""
    try:
        import groundingdino.models.GroundingDINO.groundingdino as package_model
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig
    except ImportError as err:
        raise UserError(f"mask.detector_impl: groundingdino needs the groundingdino package ({err}); "
                        f"{INSTALL}") from None
    if not (Path(text_encoder) / "config.json").is_file():
        raise UserError(f"mask.groundingdino_text_encoder: {text_encoder} is not a local BERT directory (config.json, "
                        "weights, vocab.txt); save bert-base-uncased there with save_pretrained")
    args = SLConfig(read_config(config))
    args.text_encoder_type = str(text_encoder)   # a local directory: the package then loads it by path
    args.device = "cpu"
    try:
        with mock.patch.object(package_model, "BertModelWarper", _plain_bert):
            return build_model(args)
    except (AttributeError, KeyError, AssertionError, NotImplementedError) as err:
        raise UserError(f"mask.groundingdino_config: {config} does not describe a Grounding DINO the package builds "
                        f"({type(err).__name__}: {err})") from None


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The model weights of a Grounding DINO checkpoint (.pth with or without "model", or .safetensors)."""
    if not os.path.isfile(path):
        raise UserError(f"mask.groundingdino_checkpoint: {path} not found; download it (e.g. "
                        "groundingdino_swint_ogc.pth) and set mask.groundingdino_checkpoint")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        reason = next((line for line in lines if "Unsupported" in line), lines[0]).split(" was not an allowed")[0][:200]
        raise UserError(f"mask.groundingdino_checkpoint: {path} cannot be read with weights_only=True ({reason}); "
                        "only tensors and training args are loaded, never other pickled objects: save its "
                        "state_dict alone where you trust the file") from None
    state = saved.get("model", saved) if isinstance(saved, dict) else saved
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"mask.groundingdino_checkpoint: {path} holds no state dict (expected tensors by name, or "
                        "{'model': state_dict})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str, config: str) -> None:
    """Load `state` into `model`; every key must fit, save those inference never uses (module docstring)."""
    expected = set(model.state_dict())
    rebuilt = {name for name, _ in model.named_buffers()} - expected   # non-persistent: computed by the model
    missing = sorted(expected - set(state))
    extra = sorted(set(state) - expected - rebuilt - TRAINING_ONLY_KEYS)
    if missing or extra:
        raise UserError(f"mask.groundingdino_checkpoint: {path} does not fit {config}: {len(missing)} missing keys "
                        f"{missing[:3]}, {len(extra)} unexpected keys {extra[:3]}; use the config that belongs to "
                        "this checkpoint")
    try:
        model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)
    except RuntimeError as err:
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err)[:200])
        raise UserError(f"mask.groundingdino_checkpoint: {path} does not fit {config} ({first})") from None


@dataclass
class OriginalGroundingDino:
    """Grounding DINO built by the groundingdino package from a config .py and a checkpoint (module docstring)."""
    config: str
    checkpoint: str
    text_encoder: str
    device: torch.device
    min_size: int = 800
    max_size: int = 1333
    name: str = "groundingdino"
    _model: object = field(default=None, repr=False)
    _transform: object = field(default=None, repr=False)

    def describe(self) -> str:
        return f"groundingdino package ({Path(self.config).name}, {Path(self.checkpoint).name})"

    def model(self):
        if self._model is None:
            model = build_from_config(self.config, self.text_encoder)
            load_weights(model, read_checkpoint(self.checkpoint), self.checkpoint, self.config)
            import groundingdino.datasets.transforms as T

            self._transform = T.Compose([T.RandomResize([self.min_size], max_size=self.max_size), T.ToTensor(),
                                         T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])  # one size: not random
            self._model = model.eval().to(self.device)
        return self._model

    @torch.no_grad()
    def detect(self, images: list[Image.Image], prompts: list[str], box_threshold: float,
               text_threshold: float) -> list[Detections]:
        from groundingdino.util.misc import nested_tensor_from_tensor_list
        from groundingdino.util.utils import get_phrases_from_posmap

        model = self.model()
        pixels = [self._transform(im.convert("RGB"), None)[0] for im in images]
        outputs = model(nested_tensor_from_tensor_list(pixels).to(self.device), captions=list(prompts))
        probs_all, boxes_all = outputs["pred_logits"].float().sigmoid().cpu(), outputs["pred_boxes"].float().cpu()
        out = []
        for im, prompt, probs, boxes in zip(images, prompts, probs_all, boxes_all):
            scores = probs.max(dim=-1).values
            keep = scores > box_threshold
            tokenized = model.tokenizer(prompt)
            labels = [get_phrases_from_posmap(p > text_threshold, tokenized, model.tokenizer) for p in probs[keep]]
            cx, cy, w, h = (boxes[keep] * torch.tensor([im.width, im.height, im.width, im.height])).unbind(-1)
            xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
            out.append(Detections(xyxy.numpy().astype(np.float32).reshape(-1, 4), scores[keep].numpy(), labels))
        return out

"""Model captioners (Sec. 4.2: LLaVA-Next): two captions per image, one per prompt of `caption.prompts`.

- `LlavaCaptioner`: transformers `LlavaNextForConditionalGeneration` + `LlavaNextProcessor` (AutoProcessor)
  from a hub id or local dir; batched greedy generation with left padding, one generate call per prompt
  per batch; fp16 / bf16 on GPU.
- `OllamaCaptioner`: a vision model served by ollama; each image re-encoded as JPEG and sent base64.

Both answer `caption_batch(rows) -> [(caption1, caption2, reason)]`; reason "" means usable. An image that
cannot be read, an empty answer, or the server refusing that image's request gives a reason instead of an
exception. An ollama server that does not answer is no property of the image: it raises `OllamaUnavailable`
(chat.py), the stage stops with the fix, and nothing of the chunk is cached as dropped. Captions are
normalised to one line (white space collapsed).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pandas as pd
import torch
from PIL import Image

from cocoins.backends.chat import ChatFailure, OllamaChat, image_message, in_parallel, load_pretrained
from cocoins.runtime import UserError


def load_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def clean(text: str) -> str:
    return " ".join(text.split())


def check_prompts(prompts: tuple[str, ...]) -> tuple[str, str]:
    if len(prompts) != 2:
        raise UserError(f"caption.prompts has {len(prompts)} prompts; give exactly two (one per caption)")
    return prompts[0], prompts[1]


def _open_all(rows: pd.DataFrame) -> tuple[list, list[str]]:
    images, reasons = [], []
    for path in rows["path"]:
        try:
            images.append(load_rgb(path))
            reasons.append("")
        except (OSError, ValueError) as err:
            images.append(None)
            reasons.append(f"unreadable image ({type(err).__name__})")
    return images, reasons


@dataclass
class LlavaCaptioner:
    model: str
    prompts: tuple[str, ...]
    device: torch.device
    dtype: str = "fp16"
    max_new_tokens: int = 60
    batch_size: int = 8
    backend: str = "llava"
    _loaded: tuple = field(default=(), repr=False)

    def _load(self):
        if not self._loaded:
            from transformers import AutoProcessor, LlavaNextForConditionalGeneration

            processor, lm = load_pretrained(LlavaNextForConditionalGeneration, AutoProcessor, self.model,
                                            self.device, self.dtype, "caption.model")
            processor.tokenizer.padding_side = "left"   # batched generation continues after the prompt
            self._loaded = (processor, lm)
        return self._loaded

    @torch.no_grad()
    def _generate(self, images: list[Image.Image], prompt: str) -> list[str]:
        processor, lm = self._load()
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(conversation, add_generation_prompt=True)
        inputs = processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True)
        inputs = inputs.to(lm.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(lm.dtype)
        out = lm.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                          pad_token_id=processor.tokenizer.pad_token_id)
        return [clean(t) for t in processor.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                                         skip_special_tokens=True)]

    def caption_batch(self, rows: pd.DataFrame) -> list[tuple[str, str, str]]:
        prompts = check_prompts(self.prompts)
        images, reasons = _open_all(rows)
        ok = [k for k, r in enumerate(reasons) if not r]
        captions = {k: ["", ""] for k in ok}
        for start in range(0, len(ok), self.batch_size):
            keys = ok[start:start + self.batch_size]
            for j, prompt in enumerate(prompts):
                for k, text in zip(keys, self._generate([images[k] for k in keys], prompt)):
                    captions[k][j] = text
        out = []
        for k, reason in enumerate(reasons):
            c1, c2 = captions.get(k, ["", ""])
            if not reason and not (c1 and c2):
                reason = "empty caption from the model"
            out.append((c1, c2, reason))
        return out


@dataclass
class OllamaCaptioner:
    model: str
    prompts: tuple[str, ...]
    host: str
    timeout: float = 120.0
    retries: int = 3
    retry_wait: float = 1.0
    parallel: int = 1
    backend: str = "ollama"

    def __post_init__(self):
        self._chat = OllamaChat(self.host, self.model, self.timeout, self.retries, self.retry_wait, option="caption",
                                stop_on_unavailable=True)

    def _caption_one(self, image) -> tuple[str, str, str]:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=95)
        answers = [self._chat.chat([image_message(p, buf.getvalue())]) for p in check_prompts(self.prompts)]
        failure = next((a for a in answers if isinstance(a, ChatFailure)), None)
        if failure is not None:
            return "", "", f"captioning failed after {failure.attempts} attempt(s): {failure.reason}"
        c1, c2 = (clean(a) for a in answers)
        return c1, c2, "" if c1 and c2 else "empty caption from the model"

    def caption_batch(self, rows: pd.DataFrame) -> list[tuple[str, str, str]]:
        """Up to `parallel` images in flight at once (OLLAMA_NUM_PARALLEL on the server side)."""
        check_prompts(self.prompts)
        images, reasons = _open_all(rows)
        todo = [k for k, r in enumerate(reasons) if not r]
        out = [("", "", r) for r in reasons]
        for k, result in zip(todo, in_parallel(self._caption_one, [images[k] for k in todo], self.parallel)):
            out[k] = result
        return out

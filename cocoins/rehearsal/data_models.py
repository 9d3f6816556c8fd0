"""Random-weight data-prep models at real widths: LLaVA-Next-Mistral-7B (caption), Grounding DINO base and
SAM 2.1 hiera-L (mask). Saved as the caption / mask stages load them (see models.py for the conventions).

Tokenizers are built offline. LLaVA's is the project's tiny byte-level BPE (cocoins/backends/tiny.py) with its
vocabulary filled up to Mistral's 32,064 ids by plain word tokens (" w400", " w401", ...), so that every id a
random model generates decodes to text: the captions are nonsense words, never empty. Grounding DINO's is a
WordPiece vocabulary of the words the mask stage prompts with (subject nouns, "face").
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cocoins.rehearsal import architectures as arch
from cocoins.rehearsal.models import free, save_model
from cocoins.sdxl.tiny import _seeded

# The real template of llava-v1.6-mistral-7b-hf, for user/assistant turns with images first.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}[INST] {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] if c['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for c in message['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} [/INST]{% else %}</s>{% endif %}{% endfor %}"
)
# Words the mask stage gives Grounding DINO: subject nouns and modifiers from tagged captions, and "face".
DETECTION_WORDS = ("face", "a", "an", "the", "man", "woman", "person", "boy", "girl", "child", "lady", "gentleman",
                   "guy", "kid", "baby", "people", "young", "old", "older", "elderly", "little", "teenager", "teen",
                   "adult", "male", "female", "doctor", "student", "he", "she", "his", "her", "with", "hair")
BERT_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",")
# BERT's vocabulary holds every single letter. The random captioner writes " w<id>" words, whose letter w the
# stand-in tagger marks as the subject; without the letters that subject would read as [UNK] and match no box.
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")


def llava_tokenizer(vocab_size: int):
    """The tiny BPE (with <pad>, <s>, </s>, <image>) whose vocabulary is filled to `vocab_size` ids."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from cocoins.backends.tiny import tiny_tokenizer

    base = tiny_tokenizer()
    spec = json.loads(base.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    used = set(vocab.values()) | {t["id"] for t in spec["added_tokens"]}
    # "\u0120" is byte-level BPE's space: each filler id decodes to " w<id>".
    for i in range(vocab_size):
        if i not in used:
            vocab[f"\u0120w{i}"] = i
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>", padding_side="left")
    fast.chat_template = LLAVA_CHAT_TEMPLATE
    if len(fast) != vocab_size:
        raise ValueError(f"LLaVA tokenizer has {len(fast)} ids, expected {vocab_size}")
    return fast


def build_llava_next(out_dir: str | Path, depth: str, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                     device: str | torch.device = "cpu") -> Path:
    """LlavaNextForConditionalGeneration with LLaVA-v1.6-Mistral-7B's config + a matching LlavaNextProcessor
    (336 px tiles, patch 14, the CLS token counted, llava-v1.6's grid pinpoints), for `LlavaCaptioner`."""
    from transformers import (CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessor, LlavaNextProcessor, MistralConfig)

    vision, text = arch.llava_configs(depth)
    tokenizer = llava_tokenizer(text["vocab_size"])
    processor = LlavaNextProcessor(image_processor=LlavaNextImageProcessor(**arch.LLAVA_IMAGE_PROCESSOR),
                                   tokenizer=tokenizer, chat_template=LLAVA_CHAT_TEMPLATE, **arch.LLAVA_PROCESSOR)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=MistralConfig(**text, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), **arch.LLAVA_NEXT)
    return save_model(out_dir, lambda: LlavaNextForConditionalGeneration(config), (processor,), dtype, seed, 30,
                      device)


def build_grounding_dino(out_dir: str | Path, depth: str, seed: int = 0,
                         dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu") -> Path:
    """GroundingDinoForObjectDetection with grounding-dino-base's config (Swin-B, BERT-base) + its processor
    (800 px short side), for `GroundingDino(dir)`."""
    from transformers import (BertConfig, BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    backbone, text, head = arch.grounding_dino_configs(depth)
    words = BERT_SPECIAL + DETECTION_WORDS + tuple(w for w in LETTERS if w not in DETECTION_WORDS)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(**arch.GROUNDING_DINO_IMAGE_PROCESSOR), tokenizer=tokenizer)
    config = GroundingDinoConfig(backbone_config=SwinConfig(**backbone), text_config=BertConfig(**text), **head)
    return save_model(out_dir, lambda: GroundingDinoForObjectDetection(config), (processor,), dtype, seed, 40,
                      device)


def build_sam2_checkpoint(out_path: str | Path, depth: str, seed: int = 0,
                          config: str = arch.SAM2_L_CONFIG, device: str | torch.device = "cpu") -> Path:
    """A SAM 2.1 hiera-L checkpoint of random weights in sam2's format ({"model": state_dict}, torch.save,
    tensors only), loadable by `build_sam2(config, path, hydra_overrides_extra=sam2_overrides(depth))`."""
    from sam2.build_sam import build_sam2

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _seeded(seed, 50):
        model = build_sam2(config, None, device=str(device), hydra_overrides_extra=list(arch.sam2_overrides(depth)))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out.with_name(f".{out.name}.building")
    torch.save({"model": state}, tmp)
    tmp.replace(out)
    del model, state
    free()
    return out

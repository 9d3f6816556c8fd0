"""Tiny random models of the real classes, built from configs offline, saved as normal model dirs.

No weights can be downloaded here, so the model backends (LLaVA-Next captioner, chat-LLM tagger,
Grounding DINO in transformers and in the original groundingdino package, SAM 2) are tested and benchmarked
on these: same classes, same `from_pretrained` / `build_sam2` / config-file loading path, random weights, a
few hundred thousand parameters (the groundingdino package's fixed Swin-T backbone aside). Their outputs are
garbage by design; tests check wiring, batching, validation and skip reasons, not quality.

Tokenizers are built offline too: a byte-level BPE trained in milliseconds on a fixed corpus (so any
generated id decodes to some text), with a minimal chat template; Grounding DINO gets a WordPiece vocab.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Text the tiny BPE is trained on: the prompts it will see, so sequences stay short.
_CORPUS = (
    "These are two captions of an image. Tag the words related to the subjects of the captions. "
    "Return the captions in a JSON with keys \"caption1\" and \"caption2\". Identify words related to a "
    "person: Look for specific nouns or noun phrases that refer to a person. Exclude pronouns and collective "
    "nouns from tagging. Surround each identified word or noun phrase with <subj> and </subj> tags. "
    "Use <subj1>, <subj2>, etc., for different items. Apply the same index number to all references.",
    "A photo of a young man with short black hair, glasses and a smile. A close-up portrait of an older "
    "woman with wavy blond hair and earrings. The person faces the viewer. A headshot of a girl.",
    "Describe the person in this photo in one sentence. Write a short caption of this photo.",
    "{\"caption1\": \"a <subj1>man</subj1>\", \"caption2\": \"A <subj1>woman</subj1>\"}",
)
SPECIAL = ("<pad>", "<s>", "</s>", "<image>")
# Minimal chat template: plain strings or LLaVA-style content lists with {"type": "image"} items.
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "</s>\n{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
GROUNDING_WORDS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "face", "a", "an", "the", "man",
                   "woman", "person", "boy", "girl", "child", "lady", "young", "older", "doctor")
# The groundingdino package's config format (the keys of GroundingDINO_SwinT_OGC.py) with a tiny detector.
# The package fixes the backbone to a named Swin (Swin-T: 28M parameters) and the text-enhancer width to 256.
GROUNDINGDINO_TINY_CONFIG = {
    "batch_size": 1, "modelname": "groundingdino", "backbone": "swin_T_224_1k", "position_embedding": "sine",
    "pe_temperatureH": 20, "pe_temperatureW": 20, "return_interm_indices": [1, 2, 3], "backbone_freeze_keywords": None,
    "enc_layers": 1, "dec_layers": 2, "pre_norm": False, "dim_feedforward": 32, "hidden_dim": 256, "dropout": 0.0,
    "nheads": 2, "num_queries": 30, "query_dim": 4, "num_patterns": 0, "num_feature_levels": 4, "enc_n_points": 2,
    "dec_n_points": 2, "two_stage_type": "standard", "two_stage_bbox_embed_share": False,
    "two_stage_class_embed_share": False, "transformer_activation": "relu", "dec_pred_bbox_embed_share": True,
    "dn_box_noise_scale": 1.0, "dn_label_noise_ratio": 0.5, "dn_label_coef": 1.0, "dn_bbox_coef": 1.0,
    "embed_init_tgt": True, "dn_labelbook_size": 2000, "max_text_len": 256, "text_encoder_type": "bert-base-uncased",
    "use_text_enhancer": True, "use_fusion_layer": True, "use_checkpoint": False, "use_transformer_ckpt": False,
    "use_text_cross_attention": True, "text_dropout": 0.0, "fusion_dropout": 0.0, "fusion_droppath": 0.1,
    "sub_sentence_present": True,
}
# Hydra overrides that shrink the packaged sam2.1 hiera-t config to ~6M parameters at 128 px.
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SAM2_TINY_OVERRIDES = (
    "++model.image_size=128", "++model.image_encoder.trunk.embed_dim=8",
    "++model.image_encoder.trunk.stages=[1,2,1,1]", "++model.image_encoder.trunk.global_att_blocks=[2]",
    "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]", "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.dim_feedforward=64",
)


def tiny_tokenizer(padding_side: str = "left"):
    """A byte-level BPE fast tokenizer (~400 tokens) with <pad>, <s>, </s>, <image> and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(SPECIAL), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(_CORPUS) * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   padding_side=padding_side)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _llama_config(tokenizer, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, **extra)


def build_tiny_chat_llm(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny LlamaForCausalLM + tokenizer with a chat template, saved to `out_dir` (AutoModelForCausalLM)."""
    from transformers import LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    LlamaForCausalLM(_llama_config(tokenizer)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_llava(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny LlavaNextForConditionalGeneration (CLIP vision 32 px + Llama) and its processor, saved."""
    from transformers import (CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessor, LlavaNextProcessor)

    out = Path(out_dir)
    tokenizer = tiny_tokenizer()
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                              image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                                   num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=32)
    config = LlavaNextConfig(vision_config=vision, text_config=_llama_config(tokenizer),
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                             image_grid_pinpoints=pinpoints, vision_feature_layer=-1)
    torch.manual_seed(seed)
    LlavaNextForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_grounding_dino(out_dir: str | os.PathLike, seed: int = 0, words=GROUNDING_WORDS) -> Path:
    """A tiny GroundingDinoForObjectDetection (Swin 8-d + BERT 32-d) and its processor over the vocabulary
    `words`, saved."""
    from transformers import (BertConfig, BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    out = Path(out_dir)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=tokenizer)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_indices=[2, 3, 4])
    text = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    # decoder_layers >= 2: transformers ties bbox_embed.0 to the later layers' heads.
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, num_queries=30,
                                 encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                 encoder_attention_heads=2, decoder_attention_heads=2, max_text_len=32,
                                 encoder_n_points=2, decoder_n_points=2)
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_bert(out_dir: str | os.PathLike, words=GROUNDING_WORDS + ("?",), seed: int = 0) -> Path:
    """A tiny BertModel (32-d, one layer) and a WordPiece tokenizer over `words`, saved as a local BERT dir."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = Path(out_dir)
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(out)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True).save_pretrained(out)
    return out


def build_tiny_groundingdino_package(out_dir: str | os.PathLike, seed: int = 0) -> tuple[Path, Path, Path]:
    """(config .py, checkpoint .pth, BERT dir) of a tiny random Grounding DINO of the groundingdino package.

    Shaped like the released files: the config in the package's format naming BERT by hub id, the checkpoint
    `{"model": state_dict, "args": Namespace}` with the two keys the released ones carry beyond the model
    (BERT's position_ids buffer, the training-only label_enc.weight).
    """
    import argparse

    from cocoins.backends.groundingdino_original import build_from_config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bert = build_tiny_bert(out / "bert")
    config = out / "GroundingDINO_Tiny.py"
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in GROUNDINGDINO_TINY_CONFIG.items()))
    torch.manual_seed(seed)
    model = build_from_config(str(config), str(bert))
    state = model.state_dict()
    state["bert.embeddings.position_ids"] = model.bert.embeddings.position_ids.clone()
    c = GROUNDINGDINO_TINY_CONFIG
    state["label_enc.weight"] = torch.randn(c["dn_labelbook_size"] + 1, c["hidden_dim"])
    checkpoint = out / "groundingdino_tiny.pth"
    torch.save({"model": state, "args": argparse.Namespace(**c)}, checkpoint)
    return config, checkpoint, bert

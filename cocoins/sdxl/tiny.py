"""A tiny SDXL built from configs with the real classes, for running the whole pipeline offline on a CPU.

Same components and wiring as stabilityai/stable-diffusion-xl-base-1.0, shrunk the way diffusers' own SDXL
tests shrink it: a 2-level UNet with text_time conditioning, a 2-level VAE (so `vae_scale_factor` = 2, not 8:
a 32 px image gives 16x16 latents), two 32-wide CLIP text encoders over the full 49,408-token CLIP vocab (so
the offline tokenizers' ids are valid), and SDXL's real scheduler config. Random weights from a seed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from cocoins.rehearsal.architectures import SDXL_SCHEDULER
from cocoins.sdxl.tokenizer import VOCAB_SIZE, build_clip_tokenizer

TEXT_WIDTH = 32          # hidden size of each tiny text encoder; UNet cross_attention_dim = 2 * 32
PROJECTION_DIM = 32      # text_encoder_2 pooled projection (1280 in SDXL)
TIME_EMBED_DIM = 8       # addition_time_embed_dim (256 in SDXL)
SDXL_VAE_SCALING = 0.13025

@contextlib.contextmanager
def _seeded(seed: int, component: int):
    """Each component gets its own RNG stream, so its weights do not depend on build order or global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 101 + component)
        yield


def _text_config(hidden_act: str, projection_dim: int | None = None) -> CLIPTextConfig:
    # bos 0 / eos 2 / pad 1: the legacy ids SDXL's text encoder configs carry (pooling then uses
    # input_ids.argmax(-1)); the tiny model reproduces that so the pseudo-word placeholder is tested under it.
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=TEXT_WIDTH, intermediate_size=37, num_hidden_layers=5,
        num_attention_heads=4, max_position_embeddings=77, hidden_act=hidden_act, layer_norm_eps=1e-5,
        projection_dim=projection_dim or TEXT_WIDTH, bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )


def build_tiny_sdxl(seed: int = 0) -> StableDiffusionXLPipeline:
    """Build a float32 tiny `StableDiffusionXLPipeline` on CPU with deterministic weights from `seed`."""
    with _seeded(seed, 0):
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
            cross_attention_dim=2 * TEXT_WIDTH,
            addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED_DIM,
            # text_time: 6 micro-conditioning ids (original size, crop, target size), each embedded to
            # TIME_EMBED_DIM, concatenated with the pooled text embedding of text_encoder_2.
            projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + PROJECTION_DIM,
        )
    with _seeded(seed, 1):
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            scaling_factor=SDXL_VAE_SCALING, force_upcast=True,
        )
    with _seeded(seed, 2):
        text_encoder = CLIPTextModel(_text_config("quick_gelu"))
    with _seeded(seed, 3):
        text_encoder_2 = CLIPTextModelWithProjection(_text_config("gelu", PROJECTION_DIM))
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=build_clip_tokenizer(second=False), tokenizer_2=build_clip_tokenizer(second=True),
        unet=unet, scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
        force_zeros_for_empty_prompt=True,
        # Watermarking changes pixels depending on whether an optional package is installed: off, always.
        add_watermarker=False,
    )
    for module in (unet, vae, text_encoder, text_encoder_2):
        module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_sdxl(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Save the tiny pipeline as a normal diffusers directory (safetensors), loadable by `from_pretrained`."""
    directory = Path(directory)
    build_tiny_sdxl(seed).save_pretrained(directory, safe_serialization=True)
    return directory


def parameter_counts(pipe: StableDiffusionXLPipeline) -> dict[str, int]:
    """Parameters per model component (unet, vae, text_encoder, text_encoder_2)."""
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters())
            for name in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, name) is not None}

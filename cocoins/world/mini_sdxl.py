"""The mini SDXL: an SDXL-architecture text-to-image model small enough to train from scratch on a laptop CPU.

Why: the tiny random model (`cocoins/sdxl/tiny.py`) runs every stage's code but draws noise, so nothing the
paper claims can be checked with it. The mini model is trained by the `base` stage (`models.sdxl: mini`) on
rendered portraits of the synthetic world (`people.py`), where identity is known exactly. Like SDXL it draws a new
person for every initial noise when the prompt names only the class and the scene ("a man in a green park"),
and follows the words when the prompt describes the person ("a man with wavy blond hair and glasses").

Same classes and wiring as stabilityai/stable-diffusion-xl-base-1.0 (AutoencoderKL, UNet2DConditionModel with
text_time micro-conditioning, CLIPTextModel + CLIPTextModelWithProjection, the offline CLIP tokenizers,
EulerDiscreteScheduler with SDXL's config rescaled to zero terminal SNR, see MINI_SCHEDULER), sized for 32 px images: a VAE with 4x downsampling (8x8x4 latents) and a
UNet of about 1.1M parameters. This file builds the untrained model; `captions.py` writes the captions of its
training corpus and `pretrain.py` trains it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from cocoins.sdxl.tiny import SDXL_SCHEDULER, _seeded
from cocoins.sdxl.tokenizer import VOCAB_SIZE, build_clip_tokenizer

# SDXL's scheduler config with one change: the noise schedule is rescaled to zero terminal SNR (Lin et al.,
# 2024, "Common Diffusion Noise Schedules and Sample Steps Are Flawed"), with v-prediction and trailing
# timesteps, which that rescaling needs. Why: SDXL's schedule leaves sqrt(abar_T) = 0.068 of the image in
# x_T. On 128x128 latents that leak holds only the coarsest layout; on the mini model's 8x8 latents the
# lowest frequencies ARE the person (skin, hair colour), so with SDXL's schedule the initial noise decided
# who was drawn and neither words nor a pseudo-word could change it (measured: at a fixed seed, "a bald
# man" and "a blond man" drew the same man). With zero terminal SNR the person comes from the model and
# its text input, as it does in SDXL.
MINI_SCHEDULER = dict(SDXL_SCHEDULER, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                      timestep_spacing="trailing")


@dataclass(frozen=True)
class MiniArchitecture:
    """Sizes of the mini SDXL (defaults: the embedded mini-world)."""
    image_size: int = 32
    vae_channels: tuple[int, ...] = (16, 32, 32)   # 3 levels: 2 downsamplings, vae_scale_factor 4
    unet_channels: tuple[int, ...] = (32, 64)      # on 8x8 latents: 8x8, then 4x4 with cross-attention
    text_width: int = 64                           # each text encoder; cross_attention_dim = 2 * text_width
    text_layers: int = 3
    time_embed_dim: int = 8                        # addition_time_embed_dim (256 in SDXL)
    # Tokens per prompt, BOS and EOS included (SDXL: 77): both tokenizers' window and the text encoders'
    # positions. Why shorter: every prompt of the mini-world fits in 35 tokens (corpus captions 14 on
    # average), and the padded positions were more than half of a base step's text-encoder and
    # cross-attention work (benchmarks/README.md, "The prompt window").
    text_context: int = 40


def _text_config(arch: MiniArchitecture, hidden_act: str) -> CLIPTextConfig:
    # Legacy bos 0 / eos 2 / pad 1 ids, as SDXL's text encoder configs carry (see cocoins/sdxl/tiny.py).
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=arch.text_width, intermediate_size=2 * arch.text_width,
        num_hidden_layers=arch.text_layers, num_attention_heads=4,
        max_position_embeddings=arch.text_context,
        hidden_act=hidden_act, layer_norm_eps=1e-5, projection_dim=arch.text_width,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )


def build_mini_sdxl(arch: MiniArchitecture = MiniArchitecture(), seed: int = 0,
                    vae_scaling_factor: float = 1.0) -> StableDiffusionXLPipeline:
    """The untrained mini pipeline (float32, CPU), weights drawn from `seed` per component."""
    levels = len(arch.vae_channels)
    with _seeded(seed, 10):
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=arch.image_size,
            block_out_channels=arch.vae_channels, layers_per_block=1, norm_num_groups=16,
            down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
            # No attention in the mid block: at 8x8 it adds time and, measured, no reconstruction quality.
            mid_block_add_attention=False, scaling_factor=vae_scaling_factor, force_upcast=False,
        )
    latent_size = arch.image_size // 2 ** (levels - 1)
    with _seeded(seed, 11):
        unet = UNet2DConditionModel(
            sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=arch.unet_channels,
            # Cross-attention on the coarsest level (and the mid block) only, as SDXL keeps it off its
            # highest-resolution level: on a CPU it halves the step time at the same quality.
            down_block_types=("DownBlock2D",) * (len(arch.unet_channels) - 1) + ("CrossAttnDownBlock2D",),
            up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (len(arch.unet_channels) - 1),
            attention_head_dim=8, use_linear_projection=True, norm_num_groups=16,
            cross_attention_dim=2 * arch.text_width,
            addition_embed_type="text_time", addition_time_embed_dim=arch.time_embed_dim,
            projection_class_embeddings_input_dim=6 * arch.time_embed_dim + arch.text_width,
        )
    with _seeded(seed, 12):
        text_encoder = CLIPTextModel(_text_config(arch, "quick_gelu"))
    with _seeded(seed, 13):
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(arch, "gelu"))
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=build_clip_tokenizer(second=False, max_length=arch.text_context),
        tokenizer_2=build_clip_tokenizer(second=True, max_length=arch.text_context),
        unet=unet, scheduler=EulerDiscreteScheduler(**MINI_SCHEDULER),
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

"""The published configs of the real models the full-scale pipeline loads, as plain constants (one copy).

Each is the hub release's config.json reduced to the keys the class needs (the rest are the classes' own
defaults, which match the releases). `reduced(...)` variants keep every width, head count, vocabulary, patch
size and resolution and cut only the number of blocks / layers, for the CPU rehearsal.

- SDXL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0): unet, vae, text_encoder (OpenAI CLIP ViT-L/14's
  text tower), text_encoder_2 (OpenCLIP ViT-bigG/14's text tower with projection), scheduler.
- LLaVA-v1.6-Mistral-7B (llava-hf/llava-v1.6-mistral-7b-hf): CLIP ViT-L/14-336 vision tower + Mistral-7B.
- Grounding DINO (IDEA-Research/grounding-dino-base; Swin-T for -tiny) with a BERT-base text encoder.
- CLIP ViT-L/14 (openai/clip-vit-large-patch14), for the CLIP score.
- SAM 2.1 hiera-L comes from sam2's packaged config; `SAM2_REDUCED_OVERRIDES` cut its stages' block counts.
"""

from __future__ import annotations

# ---- SDXL base 1.0 ------------------------------------------------------------------------------------------
# unet/config.json (2,567,463,684 parameters).
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    only_cross_attention=False, block_out_channels=(320, 640, 1280), layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=2048,
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), dual_cross_attention=False,
    use_linear_projection=True, class_embed_type=None, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, num_class_embeds=None,
    upcast_attention=False, resnet_time_scale_shift="default", time_embedding_type="positional",
    conv_in_kernel=3, conv_out_kernel=3,
)
# vae/config.json (83,653,863 parameters). force_upcast: the released SDXL VAE overflows in fp16.
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=1024, act_fn="silu", norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    scaling_factor=0.13025, force_upcast=True,
)
# text_encoder/config.json: OpenAI CLIP ViT-L/14 text tower (123,060,480 parameters). bos 0 / eos 2 / pad 1:
# the legacy ids the released configs carry (pooling then takes input_ids.argmax(-1)).
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
              projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1)
# text_encoder_2/config.json: OpenCLIP ViT-bigG/14 text tower with projection (694,659,840 parameters).
OPENCLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                     num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
                     projection_dim=1280, bos_token_id=0, eos_token_id=2, pad_token_id=1)
# scheduler/scheduler_config.json, less the DDIM/PNDM-only keys (clip_sample, set_alpha_to_one, skip_prk_steps,
# sample_max_value) that EulerDiscreteScheduler ignores.
SDXL_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, timestep_spacing="leading", prediction_type="epsilon", interpolation_type="linear",
    use_karras_sigmas=False,
)

# ---- LLaVA-v1.6-Mistral-7B ----------------------------------------------------------------------------------
# vision_config: CLIP ViT-L/14 at 336 px (LLaVA reads the penultimate layer, vision_feature_layer -2).
LLAVA_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
# text_config: Mistral-7B-Instruct-v0.2 with LLaVA's 64 extra ids (32000 <image>, padding to 32064).
MISTRAL_7B = dict(vocab_size=32064, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                  rms_norm_eps=1e-5, rope_theta=1000000.0, sliding_window=None, tie_word_embeddings=False)
LLAVA_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
LLAVA_NEXT = dict(image_grid_pinpoints=LLAVA_PINPOINTS, vision_feature_layer=-2,
                  vision_feature_select_strategy="default", projector_hidden_act="gelu",
                  use_image_newline_parameter=True, tie_word_embeddings=False)
# preprocessor_config.json: 336 px tiles, CLIP's normalisation (the class defaults); the processor counts
# the CLS token as one more feature per tile (num_additional_image_tokens).
LLAVA_IMAGE_PROCESSOR = dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                             image_grid_pinpoints=LLAVA_PINPOINTS)
LLAVA_PROCESSOR = dict(patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1)

# ---- Grounding DINO -------------------------------------------------------------------------------------------
# grounding-dino-base's backbone: Swin-B (384 px pre-training, window 12). The tiny release uses SwinConfig()'s
# defaults (Swin-T). Both with BERT-base (BertConfig()'s defaults: 30,522 tokens, 12 layers, 768 wide).
SWIN_B = dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12, image_size=384,
              out_indices=[2, 3, 4])
SWIN_T = dict(out_indices=[2, 3, 4])
# GroundingDinoConfig defaults are the release's head (d_model 256, 6 + 6 layers, 900 queries, 256 text tokens).
GROUNDING_DINO = dict(encoder_layers=6, decoder_layers=6, num_queries=900, max_text_len=256)
# preprocessor_config.json: shortest edge 800, longest 1333 (the class defaults).
GROUNDING_DINO_IMAGE_PROCESSOR = dict(size={"shortest_edge": 800, "longest_edge": 1333})

# ---- CLIP ViT-L/14 (CLIP score) -----------------------------------------------------------------------------
CLIP_VIT_L14_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
CLIP_VIT_L14_IMAGE_PROCESSOR = dict(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})

# ---- SAM 2.1 hiera-L ----------------------------------------------------------------------------------------
SAM2_L_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"
# hiera-L: stages [2, 6, 36, 4], global attention at blocks 23, 33, 43 (the last of stage 3 among them).
# Reduced: one to three blocks per stage, widths (144 -> 1152), heads and windows unchanged; block 5 is the
# last of stage 3, so it keeps one global-attention block where hiera-L has its last.
SAM2_REDUCED_OVERRIDES = ("++model.image_encoder.trunk.stages=[1,2,3,1]",
                          "++model.image_encoder.trunk.global_att_blocks=[5]")

DEPTHS = ("full", "reduced")


def check_depth(depth: str) -> None:
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS}, not {depth!r}")


def sdxl_configs(depth: str) -> dict[str, dict]:
    """unet, vae, text_encoder, text_encoder_2 configs; reduced: 1 block per level, 2 text layers (SDXL reads the
    penultimate hidden state, so 2 is the fewest that keeps that path real)."""
    check_depth(depth)
    if depth == "full":
        return dict(unet=SDXL_UNET, vae=SDXL_VAE, text_encoder=CLIP_L, text_encoder_2=OPENCLIP_BIGG)
    return dict(unet=dict(SDXL_UNET, layers_per_block=1, transformer_layers_per_block=(1, 1, 1)),
                vae=dict(SDXL_VAE, layers_per_block=1),
                text_encoder=dict(CLIP_L, num_hidden_layers=2), text_encoder_2=dict(OPENCLIP_BIGG, num_hidden_layers=2))


def llava_configs(depth: str) -> tuple[dict, dict]:
    """(vision, text) configs; reduced: 2 vision layers (LLaVA reads layer -2), 1 Mistral layer."""
    check_depth(depth)
    if depth == "full":
        return LLAVA_VISION, MISTRAL_7B
    return dict(LLAVA_VISION, num_hidden_layers=2), dict(MISTRAL_7B, num_hidden_layers=1)


def grounding_dino_configs(depth: str) -> tuple[dict, dict, dict]:
    """(Swin-B backbone, BERT text, detector head) configs; reduced: Swin depths [2, 2, 2, 2], BERT 2 layers,
    1 encoder and 2 decoder layers (transformers ties the first decoder box head to the later ones)."""
    check_depth(depth)
    if depth == "full":
        return SWIN_B, {}, GROUNDING_DINO
    return (dict(SWIN_B, depths=[2, 2, 2, 2]), dict(num_hidden_layers=2),
            dict(GROUNDING_DINO, encoder_layers=1, decoder_layers=2))


def clip_vit_l14_configs(depth: str) -> tuple[dict, dict]:
    """(text, vision) configs of CLIP ViT-L/14; reduced: 2 layers each."""
    check_depth(depth)
    if depth == "full":
        return CLIP_L, CLIP_VIT_L14_VISION
    return dict(CLIP_L, num_hidden_layers=2), dict(CLIP_VIT_L14_VISION, num_hidden_layers=2)


def sam2_overrides(depth: str) -> tuple[str, ...]:
    """Hydra overrides of sam2's hiera-L config for `mask.sam2_overrides` (none at full depth)."""
    check_depth(depth)
    return () if depth == "full" else SAM2_REDUCED_OVERRIDES

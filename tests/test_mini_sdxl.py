"""The mini SDXL (models.sdxl: mini): real SDXL classes, its corpus captions, and a short training run."""

import json
import random

import pytest
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from cocoins.sdxl.load import load_pipeline
from cocoins.world.captions import corpus_caption, trait_adjectives, trait_phrases
from cocoins.world.mini_sdxl import MiniArchitecture, build_mini_sdxl, parameter_count
from cocoins.world.people import SCENE_PHRASES, SCENES, draw_traits
from cocoins.world.pretrain import MiniTrainConfig, encode_latents, render_corpus, train_mini_sdxl

TINY_RUN = MiniTrainConfig(corpus_images=32, vae_steps=3, vae_batch=8, unet_steps=3, unet_batch=8, warmup_steps=1)


def test_architecture_is_sdxl_classes_at_mini_size():
    pipe = build_mini_sdxl()
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.text_encoder, CLIPTextModel)
    assert isinstance(pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size == 8
    assert pipe.unet.config.cross_attention_dim == 2 * MiniArchitecture().text_width
    assert 0.9e6 < parameter_count(pipe.unet) < 1.3e6


def test_the_prompt_window_sets_both_tokenizers_and_text_encoders_and_survives_saving(tmp_path):
    from cocoins.sdxl.encode import PromptEncoder

    pipe = build_mini_sdxl(MiniArchitecture(text_context=24))
    assert pipe.tokenizer.model_max_length == pipe.tokenizer_2.model_max_length == 24
    assert pipe.text_encoder.config.max_position_embeddings == pipe.text_encoder_2.config.max_position_embeddings == 24
    pipe.save_pretrained(tmp_path, safe_serialization=True)
    loaded = load_pipeline(tmp_path)
    encoder = PromptEncoder.from_pipeline(loaded)
    encoded = encoder.encode(encoder.tokenize(["a <subj1>man</subj1> in a green park"], insert=False))
    assert encoded.prompt_embeds.shape == (1, 24, 2 * MiniArchitecture().text_width)


def test_every_scene_has_words():
    assert set(SCENE_PHRASES) == set(SCENES)


def test_corpus_captions_describe_a_share_and_name_the_class():
    traits = [draw_traits(3, i) for i in range(1, 201)]
    rng = random.Random(0)
    none = [corpus_caption(t, "park green", rng, describe_share=0.0) for t in traits]
    assert not any(" with " in c for c in none)
    for t, c in zip(traits, none):
        assert ("man" if t.male else "woman") in c or "person" in c
    every = [corpus_caption(t, "park green", rng, describe_share=1.0) for t in traits]
    styles = {"with": 0, "adjectives": 0}
    for t, c in zip(traits, every):   # whatever it describes is true of the person
        if " with " in c:
            styles["with"] += 1
            assert any(p in c.split(" with ", 1)[1] for p in trait_phrases(t)), c
        else:
            styles["adjectives"] += 1
            assert any(f" {a} " in c for a in trait_adjectives(t)) or " young " in c or " older " in c, c
    assert min(styles.values()) > 60   # both styles, about half each

    def described(c: str) -> bool:
        return c.split("man", 1)[0].count(" ") > 2 or " with " in c   # "a photo of a bald man", "... with ..."

    plain = [corpus_caption(t, "sky blue", random.Random(1), 0.0) for t in traits]
    assert not any(described(c) for c in plain if not c.startswith(("a photo", "a portrait")))
    again = [corpus_caption(t, "park green", random.Random(0), 0.0) for t in traits[:5]]
    assert again == [corpus_caption(t, "park green", random.Random(0), 0.0) for t in traits[:5]]


def test_corpus_is_a_pure_function_of_its_config():
    a, b = render_corpus(TINY_RUN, 32), render_corpus(TINY_RUN, 32)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert a.images.shape == (32, 3, 32, 32) and -1 <= a.images.min() and a.images.max() <= 1
    assert all(len(c) == TINY_RUN.captions_per_image for c in a.captions)


def test_short_training_saves_a_loadable_pipeline_with_its_scaling_factor(tmp_path):
    torch.manual_seed(0)
    summary = train_mini_sdxl(tmp_path / "mini", TINY_RUN)
    config = json.loads((tmp_path / "mini" / "vae" / "config.json").read_text())
    assert config["scaling_factor"] == pytest.approx(summary["vae_scaling_factor"])
    pipe = load_pipeline(tmp_path / "mini")
    assert pipe.vae.config.scaling_factor == pytest.approx(summary["vae_scaling_factor"])
    # The factor gives unit-variance latents on the corpus, as SDXL's 0.13025 does on its data.
    latents = encode_latents(pipe.vae, render_corpus(TINY_RUN, 32).images) * pipe.vae.config.scaling_factor
    assert latents.std().item() == pytest.approx(1.0, rel=1e-4)
    assert summary["corpus_captions"] == 32 * TINY_RUN.captions_per_image and summary["truncated_captions"] == 0
    # The text encoders' token tables stay at their random init (only the layers train).
    fresh = build_mini_sdxl(seed=TINY_RUN.seed)
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight,
                       fresh.text_encoder.get_input_embeddings().weight)
    trained = dict(pipe.text_encoder.named_parameters())
    initial = dict(fresh.text_encoder.named_parameters())
    layer = next(n for n in trained if "layers.0.mlp.fc1.weight" in n)
    assert not torch.equal(trained[layer], initial[layer])
    image = pipe("a photo of a man", num_inference_steps=2, height=32, width=32,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)


def test_captions_longer_than_the_window_are_counted(tmp_path):
    summary = train_mini_sdxl(tmp_path / "mini", TINY_RUN, MiniArchitecture(text_context=8))
    assert 0 < summary["truncated_captions"] <= summary["corpus_captions"]


def test_the_default_corpus_fits_the_default_window():
    """Every caption of the embedded default's corpus (params.yaml's mini group) fits in the 40-token window:
    the window cuts padding only."""
    from cocoins.config import load_params
    from cocoins.sdxl.tokenizer import build_clip_tokenizer

    m = load_params().mini
    cfg = MiniTrainConfig(corpus_seed=m.corpus_seed, corpus_images=m.corpus_images, describe_share=m.describe_share,
                          named_people=m.named_people, named_images=m.named_images, name_share=m.name_share)
    captions = [c for per_image in render_corpus(cfg, 8).captions for c in per_image]
    longest = max(len(ids) for second in (False, True) for ids in build_clip_tokenizer(second)(captions).input_ids)
    assert longest <= m.text_context == MiniArchitecture().text_context, longest


def test_training_is_deterministic(tmp_path):
    torch.manual_seed(1)
    train_mini_sdxl(tmp_path / "a", TINY_RUN)
    torch.manual_seed(2)   # global RNG state must not matter
    train_mini_sdxl(tmp_path / "b", TINY_RUN)
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors", "text_encoder_2/model.safetensors"):
        assert (tmp_path / "a" / part).read_bytes() == (tmp_path / "b" / part).read_bytes(), part


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="corpus_images"):
        train_mini_sdxl(tmp_path, MiniTrainConfig(corpus_images=4))
    with pytest.raises(ValueError, match="describe_share"):
        train_mini_sdxl(tmp_path, MiniTrainConfig(describe_share=1.5))


def test_named_people_are_called_by_one_token_before_the_noun():
    from cocoins.sdxl.tokenizer import build_clip_tokenizer
    from cocoins.world.captions import name_tokens

    cfg = MiniTrainConfig(corpus_images=4, named_people=3, named_images=2, name_share=1.0)
    corpus = render_corpus(cfg, 32)
    assert len(corpus.images) == 4 + 3 * 2 and corpus.names == name_tokens(3, cfg.corpus_seed)
    tok = build_clip_tokenizer(second=False)
    for k, name in enumerate(corpus.names):
        assert len(tok(name, add_special_tokens=False).input_ids) == 1
        for caption in corpus.captions[4 + 2 * k] + corpus.captions[5 + 2 * k]:
            assert f" {name} man" in caption or f" {name} woman" in caption or f" {name} person" in caption
    # The unnamed portraits come first and are the corpus of named_people = 0, unchanged.
    plain = render_corpus(MiniTrainConfig(corpus_images=4), 32)
    assert torch.equal(plain.images, corpus.images[:4])


def test_used_token_rows_train_and_the_rest_of_the_table_stays(tmp_path):
    cfg = MiniTrainConfig(corpus_images=24, named_people=2, named_images=4, vae_steps=2, vae_batch=8, unet_steps=3,
                          unet_batch=8, warmup_steps=1, train_used_rows=True)
    summary = train_mini_sdxl(tmp_path / "mini", cfg)
    pipe, fresh = load_pipeline(tmp_path / "mini"), build_mini_sdxl(seed=cfg.seed)
    trained, initial = (p.text_encoder.get_input_embeddings().weight for p in (pipe, fresh))
    name_id = pipe.tokenizer(render_corpus(cfg, 32).names[0], add_special_tokens=False).input_ids[0]
    changed = (trained != initial).any(dim=1)
    assert changed[name_id] and 0 < int(changed.sum()) <= summary["trained_token_rows"] // 2 + 1
    assert (tmp_path / "mini" / "corpus_names.txt").read_text().split() == list(render_corpus(cfg, 32).names)

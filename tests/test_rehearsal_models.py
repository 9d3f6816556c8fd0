"""The rehearsal's random-weight models load through the pipeline's own loaders, at real widths (reduced depth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cocoins.rehearsal import architectures as arch
from cocoins.rehearsal.models import atomic_dir


@pytest.fixture(scope="module")
def portrait(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "portrait.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_full_configs_have_the_published_parameter_counts():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    configs = arch.sdxl_configs("full")
    with torch.device("meta"):
        counts = [sum(p.numel() for p in m.parameters()) for m in (
            UNet2DConditionModel(**configs["unet"]), AutoencoderKL(**configs["vae"]),
            CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])),
            CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"])))]
    assert counts == [2_567_463_684, 83_653_863, 123_060_480, 694_659_840]


def test_full_clip_and_llava_configs_have_the_published_sizes():
    from transformers import (CLIPConfig, CLIPModel, CLIPVisionConfig, LlavaNextConfig,
                              LlavaNextForConditionalGeneration, MistralConfig)

    text, vision = arch.clip_vit_l14_configs("full")
    llava_vision, mistral = arch.llava_configs("full")
    with torch.device("meta"):
        clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768))
        llava = LlavaNextForConditionalGeneration(LlavaNextConfig(
            vision_config=CLIPVisionConfig(**llava_vision), text_config=MistralConfig(**mistral), **arch.LLAVA_NEXT))
    assert sum(p.numel() for p in clip.parameters()) == 427_616_513   # openai/clip-vit-large-patch14
    assert round(sum(p.numel() for p in llava.parameters()) / 1e9, 2) == 7.57


def test_bad_depth_is_refused():
    with pytest.raises(ValueError, match="depth"):
        arch.sdxl_configs("half")


def test_atomic_dir_leaves_nothing_behind_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("build failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sdxl_reduced_loads_with_load_pipeline(tmp_path):
    from cocoins.rehearsal.models import build_sdxl
    from cocoins.sdxl.load import load_pipeline

    pipe = load_pipeline(build_sdxl(tmp_path / "sdxl", "reduced", seed=0))
    unet, vae = pipe.unet.config, pipe.vae.config
    assert tuple(unet.block_out_channels) == (320, 640, 1280) and unet.cross_attention_dim == 2048
    assert unet.layers_per_block == 1 and tuple(unet.transformer_layers_per_block) == (1, 1, 1)
    assert unet.projection_class_embeddings_input_dim == 2816 and unet.addition_time_embed_dim == 256
    assert tuple(vae.block_out_channels) == (128, 256, 512, 512) and vae.force_upcast and vae.scaling_factor == 0.13025
    assert pipe.vae_scale_factor == 8
    assert pipe.text_encoder.config.hidden_size == 768 and pipe.text_encoder_2.config.hidden_size == 1280
    assert pipe.text_encoder_2.config.projection_dim == 1280 and pipe.text_encoder.config.num_hidden_layers == 2
    assert pipe.tokenizer.model_max_length == pipe.tokenizer_2.model_max_length == 77
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert {k: pipe.scheduler.config[k] for k in arch.SDXL_SCHEDULER} == arch.SDXL_SCHEDULER
    assert pipe.unet.dtype == torch.float32   # saved in bf16, loaded in the loader's dtype
    embeds = pipe.encode_prompt("a photo of a man", do_classifier_free_guidance=False)
    assert embeds[0].shape == (1, 77, 2048) and embeds[2].shape == (1, 1280)


def test_llava_tokenizer_decodes_every_id_of_mistral_vocab():
    from cocoins.rehearsal.data_models import llava_tokenizer

    tok = llava_tokenizer(32064)
    assert len(tok) == 32064
    assert tok.decode([31000, 32063]) == " w31000 w32063"
    text = tok.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi."}]}],
                                   add_generation_prompt=True, tokenize=False)
    assert text == "[INST] <image>\nHi. [/INST]"


@pytest.mark.slow
def test_llava_reduced_captions_a_1024_px_image(tmp_path, portrait):
    from cocoins.backends.vlm_captioners import LlavaCaptioner
    from cocoins.rehearsal.data_models import build_llava_next

    path = build_llava_next(tmp_path / "llava", "reduced", seed=0)
    captioner = LlavaCaptioner(str(path), ("Describe the person.", "Write a caption."), torch.device("cpu"),
                               max_new_tokens=4, batch_size=1)
    processor, lm = captioner._load()
    text, vision = lm.config.text_config, lm.config.vision_config
    assert (text.hidden_size, text.vocab_size, text.num_hidden_layers) == (4096, 32064, 1)
    assert (vision.hidden_size, vision.image_size, vision.patch_size) == (1024, 336, 14)
    assert lm.config.vision_feature_layer == -2 and lm.config.image_grid_pinpoints == arch.LLAVA_PINPOINTS
    assert processor.num_additional_image_tokens == 1 and processor.patch_size == 14
    assert processor.image_processor.crop_size == {"height": 336, "width": 336}
    [(caption1, caption2, reason)] = captioner.caption_batch(pd.DataFrame({"path": [portrait]}))
    assert reason == "" and len(caption1.split()) == 4 and len(caption2.split()) == 4


@pytest.mark.slow
def test_grounding_dino_reduced_detects_at_800_px(tmp_path, portrait):
    from cocoins.backends.grounded_sam2 import GroundingDino
    from cocoins.rehearsal.data_models import build_grounding_dino

    detector = GroundingDino(str(build_grounding_dino(tmp_path / "gdino", "reduced", seed=0)), torch.device("cpu"))
    processor, net = detector._load()
    backbone = net.config.backbone_config
    assert (backbone.embed_dim, backbone.num_heads, backbone.window_size) == (128, [4, 8, 16, 32], 12)
    assert net.config.text_config.hidden_size == 768 and net.config.text_config.vocab_size == 30522
    assert net.config.num_queries == 900 and net.config.d_model == 256
    assert processor.image_processor.size == {"shortest_edge": 800, "longest_edge": 1333}
    with Image.open(portrait) as image:
        inputs = processor(images=image, text="man.", return_tensors="pt")
        assert inputs["pixel_values"].shape[-2:] == (800, 800)
        [det] = detector.detect([image], ["man. face."], 0.0, 0.0)
    # Random heads: boxes anywhere, but in pixels of the 1024 px image (scaled back from the 800 px input).
    assert len(det.boxes) == 900 and np.isfinite(det.boxes).all() and det.boxes.max() > 800


@pytest.mark.slow
def test_sam2_checkpoint_loads_through_sam2boxes(tmp_path, portrait):
    from cocoins.backends.grounded_sam2 import Sam2Boxes
    from cocoins.rehearsal.data_models import build_sam2_checkpoint

    checkpoint = build_sam2_checkpoint(tmp_path / "sam2.1_hiera_large.pt", "reduced", seed=0)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    assert state["image_encoder.trunk.patch_embed.proj.weight"].shape[0] == 144
    sam = Sam2Boxes(arch.SAM2_L_CONFIG, str(checkpoint), torch.device("cpu"), arch.sam2_overrides("reduced"))
    trunk = sam.predictor().model.image_encoder.trunk
    assert len(trunk.blocks) == 7 and trunk.blocks[-1].dim_out == 1152
    with Image.open(portrait) as image:
        [mask] = sam.union_masks([np.array(image.convert("RGB"))], [np.array([[200, 200, 800, 900]], np.float32)])
    assert mask.shape == (1024, 1024) and mask.dtype == bool


def test_clip_vit_l14_loads_with_the_clip_scorer(tmp_path, portrait):
    from cocoins.eval.metrics.clip import ClipScorer
    from cocoins.rehearsal.models import build_clip_vit_l14

    path = str(build_clip_vit_l14(tmp_path / "clip", "reduced", seed=0))
    assert ClipScorer.available(path) == (True, "")
    scorer = ClipScorer.load(path)
    config = scorer.model.config
    assert (config.vision_config.hidden_size, config.vision_config.image_size, config.vision_config.patch_size) == \
        (1024, 224, 14)
    assert config.text_config.hidden_size == 768 and config.projection_dim == 768
    with Image.open(portrait) as image:
        scores = scorer.scores([image, image], ["a photo of a man", "a photo of a woman"])
    assert scores.shape == (2,) and (scores.abs() <= 1).all() and scores[0] != scores[1]


def test_fid_inception_weights_load_and_give_spread_features(tmp_path, portrait):
    from cocoins.eval.metrics.fid import fid_features, inception_available, load_inception
    from cocoins.rehearsal.models import build_fid_inception, inception_state_dict

    weights = build_fid_inception(tmp_path / "inception.pth", seed=0)
    assert inception_available(str(weights)) == (True, "")
    net = load_inception(str(weights))
    with Image.open(portrait) as image:
        features = fid_features(net, [image.convert("RGB"), image.convert("L").convert("RGB")])
    assert features.shape == (2, 2048) and features.std() > 0.1   # not collapsed to a constant
    assert all(torch.equal(a, b) for a, b in zip(inception_state_dict(0).values(),
                                                 torch.load(weights, weights_only=True).values()))


@pytest.mark.slow
def test_write_celeba_hq_is_read_by_the_celeba_reader(tmp_path):
    from cocoins.data.celeba_hq import read_celeba_hq
    from cocoins.rehearsal.portraits import write_celeba_hq

    root = write_celeba_hq(tmp_path / "celeba", n=2, seed=3)
    table = read_celeba_hq(str(root), mask_dir=tmp_path / "masks")
    assert list(table["image_id"]) == ["0", "1"] and table["kept"].all()
    assert (table["width"] == 1024).all() and (table["height"] == 1024).all()
    assert list(table["identity"]) == [1, 1]   # two portraits per identity
    for part in (root / "CelebAMask-HQ-mask-anno" / "0").glob("*.png"):
        with Image.open(part) as im:
            assert im.size == (512, 512)
    mask = np.asarray(Image.open(tmp_path / "masks" / "0.png"))
    assert 0.1 < (mask == 255).mean() < 0.9   # one person, not the whole frame
    again = write_celeba_hq(tmp_path / "again", n=1, seed=3)
    assert (again / "CelebA-HQ-img" / "0.jpg").read_bytes() == (root / "CelebA-HQ-img" / "0.jpg").read_bytes()


def test_build_all_builds_each_model_once_into_its_folder(tmp_path, monkeypatch, capsys):
    from cocoins.rehearsal import build

    calls = []

    def fake(path, depth, seed, device="cpu"):
        calls.append((Path(path).relative_to(tmp_path).as_posix(), depth, seed, device))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"\0" * 8)
        return Path(path)

    monkeypatch.setattr(build, "BUILDERS", {name: (fake, rel) for name, (_, rel) in build.BUILDERS.items()})
    monkeypatch.setattr(build, "build_fid_inception", lambda path, seed: fake(path, "full", seed))
    monkeypatch.setattr(build, "parameter_count", lambda path: 2)
    paths = build.build_all(tmp_path, "reduced", seed=4, device="meta")
    assert set(paths) == {"sdxl", "llava", "grounding_dino", "sam2_checkpoint", "clip", "fid_weights"}
    assert calls[0] == ("sdxl", "reduced", 4, "meta") and calls[-1] == (build.FID_WEIGHTS, "full", 4, "cpu")
    assert all(Path(p).is_file() for p in paths.values())
    assert "total: 0.00 GB on disk (reduced depth)" in capsys.readouterr().out

"""Tiny SDXL: real classes, SDXL's scheduler, deterministic weights, save/load round trip, reference.json."""

import json

import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

from cocoins.runtime import UserError
from cocoins.sdxl.load import REFERENCE, load_pipeline, resolve_base, resolve_model
from cocoins.sdxl.tiny import build_tiny_sdxl, parameter_counts, save_tiny_sdxl


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_tiny_sdxl(tmp_path_factory.mktemp("tiny") / "base", seed=0)


def _state(pipe):
    return {f"{name}.{k}": v for name in ("unet", "vae", "text_encoder", "text_encoder_2")
            for k, v in getattr(pipe, name).state_dict().items()}


def _files(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_components_and_configs(tiny_sdxl):
    pipe = tiny_sdxl
    assert isinstance(pipe, StableDiffusionXLPipeline)
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert pipe.unet.config.cross_attention_dim == (pipe.text_encoder.config.hidden_size
                                                    + pipe.text_encoder_2.config.hidden_size)
    # text_time: 6 micro-conditioning ids x addition_time_embed_dim + pooled projection
    assert pipe.unet.config.projection_class_embeddings_input_dim == \
        6 * pipe.unet.config.addition_time_embed_dim + pipe.text_encoder_2.config.projection_dim
    assert pipe.vae.config.scaling_factor == 0.13025
    assert pipe.text_encoder.config.eos_token_id == 2  # SDXL's legacy id: argmax pooling
    sched = pipe.scheduler
    assert isinstance(sched, EulerDiscreteScheduler)
    assert (sched.config.beta_start, sched.config.beta_end, sched.config.beta_schedule) == \
        (0.00085, 0.012, "scaled_linear")
    assert (sched.config.num_train_timesteps, sched.config.steps_offset, sched.config.timestep_spacing,
            sched.config.prediction_type) == (1000, 1, "leading", "epsilon")
    assert pipe.tokenizer.pad_token == "<|endoftext|>" and pipe.tokenizer_2.pad_token == "!"
    counts = parameter_counts(pipe)
    assert set(counts) == {"unet", "vae", "text_encoder", "text_encoder_2"} and all(counts.values())


def test_runs_two_steps(tiny_sdxl):
    out = tiny_sdxl("a man", num_inference_steps=2, height=32, width=32, output_type="latent",
                    generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 4, 16, 16) and torch.isfinite(out.images).all()


def test_weights_deterministic_from_seed(tiny_sdxl):
    again, other = _state(build_tiny_sdxl(0)), _state(build_tiny_sdxl(1))
    for key, value in _state(tiny_sdxl).items():
        assert torch.equal(value, again[key]), key
    assert any(not torch.equal(v, other[k]) for k, v in again.items() if v.dtype.is_floating_point)


def test_save_is_byte_identical(saved, tmp_path):
    again = save_tiny_sdxl(tmp_path / "again", seed=0)
    first, second = _files(saved), _files(again)
    assert first.keys() == second.keys() and "model_index.json" in first
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in first)
    assert any(name.startswith("unet/") and name.endswith(".safetensors") for name in first)
    for name in first:
        assert first[name] == second[name], name


def test_load_roundtrip_equal_weights(tiny_sdxl, saved):
    loaded = load_pipeline(saved)
    assert isinstance(loaded, StableDiffusionXLPipeline)
    want = _state(tiny_sdxl)
    got = _state(loaded)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert not any(p.requires_grad for p in loaded.unet.parameters())
    assert loaded.tokenizer_2.pad_token == "!" and loaded.tokenizer.model_max_length == 77
    assert loaded.scheduler.config.timestep_spacing == "leading"
    text = "a <photo> of a Man, (smiling)!"
    for tok_a, tok_b in ((tiny_sdxl.tokenizer, loaded.tokenizer), (tiny_sdxl.tokenizer_2, loaded.tokenizer_2)):
        assert tok_a(text, padding="max_length", max_length=77).input_ids == \
            tok_b(text, padding="max_length", max_length=77).input_ids


def test_load_dtype(saved):
    assert load_pipeline(saved, dtype=torch.bfloat16).unet.dtype == torch.bfloat16


def test_reference_json_is_followed(saved, tmp_path):
    ref_dir = resolve_base(str(saved), tmp_path / "base")
    assert json.loads((ref_dir / REFERENCE).read_text()) == {"sdxl": str(saved)}
    assert resolve_model(ref_dir) == str(saved)
    assert isinstance(load_pipeline(ref_dir), StableDiffusionXLPipeline)
    hub = resolve_base("stabilityai/stable-diffusion-xl-base-1.0", tmp_path / "hub")
    assert resolve_model(hub) == "stabilityai/stable-diffusion-xl-base-1.0"  # offline: not loaded here


def test_resolve_base_tiny(tmp_path):
    out = resolve_base("tiny", tmp_path / "base", seed=0)
    assert (out / "model_index.json").is_file() and not (out / REFERENCE).exists()


@pytest.mark.parametrize("make", ["missing", "empty", "bad_reference", "loop"])
def test_bad_dirs_raise_clear_errors(tmp_path, make):
    path = tmp_path / "base"
    if make == "empty":
        path.mkdir()
    elif make == "bad_reference":
        path.mkdir()
        (path / REFERENCE).write_text("{not json")
    elif make == "loop":
        path.mkdir()
        (path / REFERENCE).write_text(json.dumps({"sdxl": str(path)}))
    with pytest.raises(UserError) as err:
        load_pipeline(path)
    assert str(path) in str(err.value) and ("dvc repro base" in str(err.value) or "point" in str(err.value))


def test_resolve_base_rejects_missing_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_base(str(tmp_path / "nowhere"), tmp_path / "base")

"""The batched CoCoIns step on the tiny SDXL: gradients reach f and nothing else; switches act."""

import pytest
import torch

from cocoins.method.losses import LossConfig
from cocoins.method.mapper import Mapper, MapperConfig
from cocoins.method.triplets import TripletConfig
from cocoins.training.loop import freeze
from cocoins.training.step import Batch, CocoinsStep, DenoiserSpec, NoisePredictionStep, subject_count


@pytest.fixture()
def setup(tiny_sdxl, tiny_encoder):
    freeze(tiny_sdxl)
    torch.manual_seed(0)
    mapper = Mapper(MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=tiny_encoder.pseudo_word_dims))
    spec = DenoiserSpec(tiny_sdxl.scheduler.alphas_cumprod.float(), tiny_sdxl.scheduler.config.prediction_type)
    batch = Batch(torch.randn(2, 4, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float(),
                  torch.tensor([[32, 32, 0, 0, 32, 32]] * 2).float(),
                  ["a <subj1>man</subj1> with glasses", "a smiling <subj1>woman</subj1>"],
                  ["photo of a <subj1>man</subj1>", "the <subj1>woman</subj1> smiles"], torch.tensor([1, 2]))
    return tiny_sdxl, tiny_encoder, mapper, spec, batch


def test_gradient_reaches_the_mapper_and_nothing_else(setup):
    pipe, encoder, mapper, spec, batch = setup
    step = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig())
    terms = step(mapper, batch, 1, 10, torch.Generator().manual_seed(0))
    terms.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mapper.parameters())
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        assert all(p.grad is None for p in module.parameters())
    assert terms.loss_back is not None and terms.d_neg > 0


def test_step_is_deterministic_for_a_generator_seed(setup):
    pipe, encoder, mapper, spec, batch = setup
    step = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig())
    a = step(mapper, batch, 3, 10, torch.Generator().manual_seed(5)).loss
    b = step(mapper, batch, 3, 10, torch.Generator().manual_seed(5)).loss
    assert torch.equal(a, b)


def test_same_prompt_and_noise_make_anchor_equal_positive(setup):
    pipe, encoder, mapper, spec, batch = setup
    step = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig(same_prompt=True, same_noise=True))
    terms = step(mapper, batch, 1, 10, torch.Generator().manual_seed(0))
    # Anchor and positive then get the same prompt, code and noise: their estimates coincide.
    assert terms.d_pos.item() == pytest.approx(0.0, abs=1e-10)


def test_background_off_skips_reference_passes(setup, monkeypatch):
    pipe, encoder, mapper, spec, batch = setup
    step = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(background=False), TripletConfig())
    monkeypatch.setattr(step, "_references", lambda *a, **k: pytest.fail("reference pass ran"))
    assert step(mapper, batch, 1, 10, torch.Generator().manual_seed(0)).loss_back is None


def test_noise_prediction_baseline_uses_fixed_identity_codes(setup):
    pipe, encoder, mapper, spec, batch = setup
    step = NoisePredictionStep(pipe.unet, encoder, spec, 8, code_seed=0)
    codes = step.identity_codes(torch.tensor([1, 1, 2]), 1, 8)
    assert torch.equal(codes[0], codes[1]) and not torch.equal(codes[0], codes[2])
    terms = step(mapper, batch, 1, 10, torch.Generator().manual_seed(0))
    terms.loss.backward()
    assert all(p.grad is not None for p in mapper.parameters())
    with pytest.raises(ValueError, match="identity labels"):
        step.identity_codes(torch.tensor([-1]), 1, 8)


def test_subject_count():
    assert subject_count(["a <subj1>man</subj1> and a <subj2>woman</subj2>", "a <subj1>boy</subj1>"]) == 2
    with pytest.raises(ValueError, match="no <subjN> tag"):
        subject_count(["a man"])

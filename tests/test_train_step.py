"""The batched CoCoIns step on the tiny SDXL: gradients reach f and nothing else; switches act."""

import pytest
import torch

from cocoins.method.losses import LossConfig
from cocoins.method.mapper import Mapper, MapperConfig
from cocoins.method.triplets import TripletConfig
from cocoins.training.loop import freeze
from cocoins.training.step import (Batch, CocoinsStep, DenoiserSpec, NoisePredictionStep, distinct_rows,
                                   sample_generator, subject_count)


def gens(seed: int, n: int = 2) -> list[torch.Generator]:
    return [sample_generator(seed, i) for i in range(n)]


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
    terms = step(mapper, batch, 1, 10, gens(0))
    terms.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mapper.parameters())
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        assert all(p.grad is None for p in module.parameters())
    assert terms.loss_back is not None and terms.d_neg > 0


def test_step_is_deterministic_for_a_generator_seed(setup):
    pipe, encoder, mapper, spec, batch = setup
    step = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig())
    a = step(mapper, batch, 3, 10, gens(5)).loss
    b = step(mapper, batch, 3, 10, gens(5)).loss
    assert torch.equal(a, b)


def test_same_prompt_and_noise_make_anchor_equal_positive(setup):
    pipe, encoder, mapper, spec, batch = setup
    step = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig(same_prompt=True, same_noise=True))
    terms = step(mapper, batch, 1, 10, gens(0))
    # Anchor and positive then get the same prompt, code and noise: their estimates coincide.
    assert terms.d_pos.item() == pytest.approx(0.0, abs=1e-10)


def test_background_off_skips_reference_passes(setup, monkeypatch):
    pipe, encoder, mapper, spec, batch = setup
    step = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(background=False), TripletConfig())
    monkeypatch.setattr(step, "_references", lambda *a, **k: pytest.fail("reference pass ran"))
    assert step(mapper, batch, 1, 10, gens(0)).loss_back is None


def test_noise_prediction_baseline_uses_fixed_identity_codes(setup):
    pipe, encoder, mapper, spec, batch = setup
    step = NoisePredictionStep(pipe.unet, encoder, spec, 8, code_seed=0)
    codes = step.identity_codes(torch.tensor([1, 1, 2]), 1, 8)
    assert torch.equal(codes[0], codes[1]) and not torch.equal(codes[0], codes[2])
    terms = step(mapper, batch, 1, 10, gens(0))
    terms.loss.backward()
    assert all(p.grad is not None for p in mapper.parameters())
    with pytest.raises(ValueError, match="identity labels"):
        step.identity_codes(torch.tensor([-1]), 1, 8)


def test_subject_count():
    assert subject_count(["a <subj1>man</subj1> and a <subj2>woman</subj2>", "a <subj1>boy</subj1>"]) == 2
    with pytest.raises(ValueError, match="no <subjN> tag"):
        subject_count(["a man"])


# ---- batch layout, text-encoder rows, multi-subject, precision ---------------------------------------------
TWO = Batch(torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1)),
            (torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.5).float(),
            torch.tensor([[32, 32, 0, 0, 32, 32]] * 4).float(),
            ["a <subj1>man</subj1> with glasses", "a smiling <subj1>woman</subj1>",
             "a <subj1>man</subj1> and a <subj2>woman</subj2>", "the <subj1>boy</subj1>"],
            ["photo of a <subj1>man</subj1>", "the <subj1>woman</subj1> smiles",
             "a <subj2>woman</subj2> next to a <subj1>man</subj1>", "a <subj1>boy</subj1> runs"], torch.arange(4))


def rows(batch: Batch, idx: list[int]) -> Batch:
    return Batch(batch.latents[idx], batch.masks[idx], batch.time_ids[idx], [batch.captions1[i] for i in idx],
                 [batch.captions2[i] for i in idx], batch.identities[idx])


def grads(mapper) -> list[torch.Tensor]:
    out = [p.grad.clone() for p in mapper.parameters()]
    mapper.zero_grad(set_to_none=True)
    return out


def test_draws_are_per_sample_and_padded_to_the_batch_subject_count(setup):
    pipe, encoder, _, spec, _ = setup
    step = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig())
    z1, z2, eps1, eps2, t = step.draw(TWO, gens(4, 4))
    assert z1.shape == (4, 2, 8) and torch.equal(z1[0, 1], torch.zeros(8)) and z1[2, 1].abs().sum() > 0
    alone = step.draw(rows(TWO, [0]), [sample_generator(4, 0)])
    assert torch.equal(alone[0][0, 0], z1[0, 0]) and torch.equal(alone[2][0], eps1[0]) and alone[4][0] == t[0]
    with pytest.raises(ValueError, match="one generator per sample"):
        step.draw(TWO, gens(4, 3))


def float64_setup():
    """The tiny model in float64: comparisons of differently batched kernels then test the plumbing, not
    float32 rounding (which λ_neg / L_dis, with L_dis ~ 1e-9 on the random tiny model, magnifies)."""
    from cocoins.sdxl.encode import PromptEncoder
    from cocoins.sdxl.tiny import build_tiny_sdxl

    pipe = build_tiny_sdxl(0).to(torch.float64)
    freeze(pipe)
    encoder = PromptEncoder.from_pipeline(pipe)
    torch.manual_seed(0)
    mapper = Mapper(MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=encoder.pseudo_word_dims)).double()
    spec = DenoiserSpec(pipe.scheduler.alphas_cumprod.double(), pipe.scheduler.config.prediction_type)
    batch = Batch(TWO.latents.double(), TWO.masks.double(), TWO.time_ids.double(), TWO.captions1, TWO.captions2,
                  TWO.identities)
    return pipe, encoder, mapper, spec, batch


def test_loss_and_gradient_do_not_depend_on_the_batch_layout():
    """The property DDP and gradient accumulation rest on: a batch of 4 = mean of two batches of 2."""
    pipe, encoder, mapper, spec, two = float64_setup()
    step = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(gamma=1e-3), TripletConfig())
    full = step(mapper, two, 3, 10, gens(0, 4))
    full.loss.backward()
    g_full = grads(mapper)
    halves = []
    for idx in ([0, 1], [2, 3]):
        part = step(mapper, rows(two, idx), 3, 10, [sample_generator(0, i) for i in idx])
        (part.loss / 2).backward()
        halves.append(part.loss.item())
    assert full.loss.item() == pytest.approx(sum(halves) / 2, rel=1e-9)
    for a, b in zip(g_full, grads(mapper)):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_second_subject_gets_its_own_code(setup, monkeypatch):
    """Fig. 7: <subj2> is conditioned on z[:, 1]; changing only that code changes the loss of its sample."""
    pipe, encoder, mapper, spec, _ = setup
    step = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(gamma=1e-3), TripletConfig())
    batch = rows(TWO, [2])
    base = step(mapper, batch, 3, 10, gens(0, 1))
    real_draw = step.draw

    def other_subject2(b, g):
        z1, z2, eps1, eps2, t = real_draw(b, g)
        z1 = z1.clone()
        z1[:, 1] += 1.0
        return z1, z2, eps1, eps2, t

    monkeypatch.setattr(step, "draw", other_subject2)
    assert step(mapper, batch, 3, 10, gens(0, 1)).loss.item() != pytest.approx(base.loss.item(), rel=1e-4)


def test_equal_captions_share_a_text_encoder_row(setup, monkeypatch):
    pipe, encoder, mapper, spec, batch = setup
    sizes = []
    real_encode = encoder.encode

    def counting(tokenized, pseudo_words=None):
        sizes.append((len(tokenized), pseudo_words is not None))
        return real_encode(tokenized, pseudo_words)

    monkeypatch.setattr(encoder, "encode", counting)
    CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig())(mapper, batch, 1, 10, gens(0))
    assert sizes == [(6, True), (4, False)]          # 3B rows with pseudo-words, 2B distinct plain captions
    sizes.clear()
    same = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig(same_prompt=True))
    terms = same(mapper, batch, 1, 10, gens(0))
    assert sizes == [(4, True), (2, False)]          # anchor = positive row; references: captions1 only
    terms.loss.backward()
    assert all(p.grad is not None for p in mapper.parameters())
    assert distinct_rows(["a", "b", "a", "c"]) == ([0, 1, 3], [0, 1, 0, 2])


def test_bf16_autocast_step_runs_on_cpu(setup):
    pipe, encoder, mapper, spec, batch = setup
    step = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig())
    fp32 = step(mapper, batch, 1, 10, gens(0)).loss.item()
    mapper.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = step(mapper, batch, 1, 10, gens(0))
    terms.loss.backward()
    assert terms.loss.dtype == torch.float32 and terms.loss.item() != fp32
    assert terms.loss.item() == pytest.approx(fp32, rel=0.05)
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in mapper.parameters())


def saved_activation_bytes(step, mapper, batch) -> tuple[int, float]:
    """Bytes autograd keeps for backward outside checkpointed regions, and the step's loss (backpropagated)."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step(mapper, batch, 1, 10, gens(0)).loss
    loss.backward()
    return saved[0], loss.item()


def test_gradient_checkpointing_saves_memory_and_gives_the_same_gradients(setup):
    from cocoins.sdxl.tiny import build_tiny_sdxl

    pipe, encoder, mapper, spec, batch = setup
    plain_bytes, plain_loss = saved_activation_bytes(
        CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig()), mapper, batch)
    plain = grads(mapper)
    ckpt = build_tiny_sdxl(0)
    freeze(ckpt)
    ckpt.unet.enable_gradient_checkpointing()
    ckpt_bytes, ckpt_loss = saved_activation_bytes(
        CocoinsStep(ckpt.unet, encoder, spec, 8, LossConfig(), TripletConfig()), mapper, batch)
    assert ckpt_bytes < plain_bytes / 2 and ckpt_loss == plain_loss   # (2.7x less on the tiny UNet)
    for a, b in zip(plain, grads(mapper)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_min_timestep_floors_the_drawn_timesteps_and_zero_keeps_the_papers_draws(setup):
    pipe, encoder, mapper, spec, batch = setup
    steps = len(spec.alphas_cumprod)
    many = [sample_generator(3, i) for i in range(64)]
    wide = Batch(batch.latents[:1].repeat(64, 1, 1, 1), batch.masks[:1].repeat(64, 1, 1, 1),
                 batch.time_ids[:1].repeat(64, 1), batch.captions1[:1] * 64, batch.captions2[:1] * 64,
                 torch.zeros(64, dtype=torch.long))
    t_paper = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig()).draw(wide, many)[-1]
    many = [sample_generator(3, i) for i in range(64)]
    t_zero = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(),
                         TripletConfig(min_timestep=0)).draw(wide, many)[-1]
    assert torch.equal(t_paper, t_zero) and t_paper.min() < steps // 2
    many = [sample_generator(3, i) for i in range(64)]
    t_high = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(),
                         TripletConfig(min_timestep=steps // 2)).draw(wide, many)[-1]
    assert t_high.min() >= steps // 2 and t_high.max() < steps
    with pytest.raises(ValueError, match="set triplet.min_timestep below"):
        CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(), TripletConfig(min_timestep=steps)).draw(batch, gens(0))
    with pytest.raises(ValueError, match="min_timestep must be >= 0"):
        TripletConfig(min_timestep=-1)


def test_codes_stay_fp32_when_the_batch_is_bf16():
    """f trains in fp32: a bf16 batch must not round z (the noises follow the latents' dtype)."""
    from cocoins.method.losses import LossConfig
    from cocoins.method.triplets import TripletConfig
    from cocoins.training.step import Batch, CocoinsStep, DenoiserSpec, sample_generator

    step = CocoinsStep(None, None, DenoiserSpec(torch.linspace(0.99, 0.01, 10), "epsilon"), 4, LossConfig(),
                       TripletConfig())
    batch = Batch(torch.zeros(2, 4, 2, 2, dtype=torch.bfloat16), torch.ones(2, 1, 2, 2),
                  torch.zeros(2, 6), ["a <subj1>man</subj1>"] * 2, ["the <subj1>man</subj1>"] * 2, torch.arange(2))
    z1, z2, eps1, eps2, t = step.draw(batch, [sample_generator(0, i) for i in range(2)])
    assert z1.dtype == z2.dtype == torch.float32 and eps1.dtype == eps2.dtype == torch.bfloat16
    fp32 = step.draw(Batch(batch.latents.float(), *[getattr(batch, f) for f in
                                                    ("masks", "time_ids", "captions1", "captions2", "identities")]),
                     [sample_generator(0, i) for i in range(2)])
    assert torch.equal(z1, fp32[0]) and torch.equal(z2, fp32[1])


def test_half_towers_run_without_autocast_and_match_the_autocast_loss():
    """Towers stored in bf16 (stages/train.py on CUDA) run the step without autocast: f computes in fp32, x_t
    reaches the UNet cast once to bf16, and the loss comes out fp32, close to the autocast path's.

    Tolerance, from the arithmetic: with Eq. 7's negative term and L_back off, the loss is L_dis(x̂*, x̂+), a mean
    of squared differences of O(1) estimates (well conditioned). Both paths round the towers' activations to
    bf16 (unit roundoff u = 2^-8) but at different places (autocast keeps norms and softmax in fp32), so they may
    differ by rounding errors of u per op, which the mean averages: we allow u relative (measured on 4 seeds:
    at most 0.2 u, and 0.3 u from the fp32 towers' loss). The negative term is no test of the plumbing: its
    L_dis(x̂*, x̂-) is ~1e-5 here, the difference of two estimates that share their noise, so bf16 rounding
    moves it by tens of percent on either path."""
    from cocoins.sdxl.encode import PromptEncoder
    from cocoins.sdxl.tiny import build_tiny_sdxl

    def build(dtype):
        pipe = build_tiny_sdxl(0)
        freeze(pipe)
        pipe.to(dtype=dtype)
        encoder = PromptEncoder.from_pipeline(pipe)
        torch.manual_seed(0)
        mapper = Mapper(MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=encoder.pseudo_word_dims))
        spec = DenoiserSpec(pipe.scheduler.alphas_cumprod.float(), pipe.scheduler.config.prediction_type)
        return pipe, encoder, mapper, spec

    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(2, 4, 8, 8, generator=g), (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float(),
                  torch.tensor([[32, 32, 0, 0, 32, 32]] * 2).float(),
                  ["a <subj1>man</subj1> with glasses", "a smiling <subj1>woman</subj1>"],
                  ["photo of a <subj1>man</subj1>", "the <subj1>woman</subj1> smiles"], torch.tensor([1, 2]))
    positive_only = LossConfig(negative="none", background=False)
    pipe, encoder, mapper, spec = build(torch.bfloat16)
    seen = {}
    pipe.unet.register_forward_pre_hook(lambda m, args: seen.update(
        x_t=args[0].dtype, autocast=torch.is_autocast_enabled("cpu")))
    mapper.net.register_forward_hook(lambda m, args, out: seen.update(word=out.dtype))   # f's layers
    step = CocoinsStep(pipe.unet, encoder, spec, 8, positive_only, TripletConfig())
    half = step(mapper, batch, 5, 10, gens(0))
    assert seen == {"x_t": torch.bfloat16, "autocast": False, "word": torch.float32}
    assert half.loss.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = step(mapper, batch, 5, 10, gens(0))
    assert seen["autocast"] and seen["word"] == torch.bfloat16   # what autocast did to f
    assert half.loss.item() != autocast.loss.item()
    assert half.loss.item() == pytest.approx(autocast.loss.item(), rel=2 ** -8)
    # The full loss (Eq. 9, both terms) on the half towers: finite, and f's gradients fp32 and finite.
    full = CocoinsStep(pipe.unet, encoder, spec, 8, LossConfig(gamma=1e-3), TripletConfig())(mapper, batch, 5, 10,
                                                                                            gens(0))
    full.loss.backward()
    assert torch.isfinite(full.loss) and full.loss_back.dtype == torch.float32
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in mapper.parameters())

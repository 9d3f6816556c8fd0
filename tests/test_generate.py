"""generate(): pseudo-word conditioning through the stock SDXL pipeline call."""

import numpy as np
import pytest
import torch

from cocoins.data.tags import strip_tags
from cocoins.sdxl.generate import generate

PROMPTS = ["a photo of a <subj1>man</subj1> smiling", "a <subj1>woman</subj1> and a <subj2>dog</subj2>"]
D = 64


def _stock(pipe, prompts, seeds, **kw):
    return pipe([strip_tags(p) for p in prompts], generator=[torch.Generator().manual_seed(s) for s in seeds],
                **kw).images


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_plain_equals_stock_pipeline(tiny_sdxl, tiny_encoder, guidance):
    kw = dict(num_inference_steps=2, guidance_scale=guidance, height=32, width=32)
    ours = generate(tiny_sdxl, tiny_encoder, PROMPTS, None, [3, 4], steps=2, guidance=guidance, height=32,
                    width=32, output_type="latent")
    assert ours.images is None and ours.latents.shape == (2, 4, 16, 16)
    torch.testing.assert_close(ours.latents, _stock(tiny_sdxl, PROMPTS, [3, 4], output_type="latent", **kw),
                               rtol=0, atol=1e-6)


def test_pil_images_equal_stock_and_latents_are_final(tiny_sdxl, tiny_encoder):
    kw = dict(num_inference_steps=2, guidance_scale=5.0, height=32, width=32)
    ours = generate(tiny_sdxl, tiny_encoder, PROMPTS, None, [3, 4], steps=2, guidance=5.0, height=32, width=32,
                    negative_prompt="blurry")
    stock = _stock(tiny_sdxl, PROMPTS, [3, 4], negative_prompt="blurry", **kw)
    assert len(ours.images) == 2 and ours.images[0].size == (32, 32)
    for a, b in zip(ours.images, stock):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    stock_latents = _stock(tiny_sdxl, PROMPTS, [3, 4], negative_prompt="blurry", output_type="latent", **kw)
    torch.testing.assert_close(ours.latents, stock_latents, rtol=0, atol=1e-6)


def test_seed_independent_of_batch(tiny_sdxl, tiny_encoder):
    w = torch.randn(3, 2, D, generator=torch.Generator().manual_seed(0))
    prompts = PROMPTS + ["a <subj1>boy</subj1> in a park"]
    batch = generate(tiny_sdxl, tiny_encoder, prompts, w, [11, 12, 13], steps=2, guidance=5.0, height=32, width=32)
    alone = generate(tiny_sdxl, tiny_encoder, prompts[1:2], w[1:2], [12], steps=2, guidance=5.0, height=32,
                     width=32)
    # Batched kernels may round differently from single ones: equal up to float32 noise.
    torch.testing.assert_close(batch.latents[1:2], alone.latents, rtol=0, atol=1e-4)
    diff = np.abs(np.asarray(batch.images[1], dtype=int) - np.asarray(alone.images[0], dtype=int))
    assert diff.max() <= 1


def test_pseudo_words_change_the_image(tiny_sdxl, tiny_encoder):
    g = torch.Generator().manual_seed(1)
    w_a, w_b = torch.randn(1, 1, D, generator=g), torch.randn(1, 1, D, generator=g)
    args = dict(seeds=[5], steps=2, guidance=5.0, height=32, width=32, output_type="latent")
    a = generate(tiny_sdxl, tiny_encoder, PROMPTS[:1], w_a, **args)
    a_again = generate(tiny_sdxl, tiny_encoder, PROMPTS[:1], w_a, **args)
    b = generate(tiny_sdxl, tiny_encoder, PROMPTS[:1], w_b, **args)
    assert torch.equal(a.latents, a_again.latents)  # same code, same seed: same instance
    assert not torch.allclose(a.latents, b.latents)


def test_bad_arguments(tiny_sdxl, tiny_encoder):
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate(tiny_sdxl, tiny_encoder, PROMPTS, None, [1], steps=1, guidance=1.0, height=32, width=32)
    with pytest.raises(ValueError, match="output_type"):
        generate(tiny_sdxl, tiny_encoder, PROMPTS[:1], None, [1], steps=1, guidance=1.0, height=32, width=32,
                 output_type="np")

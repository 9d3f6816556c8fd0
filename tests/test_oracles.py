"""The mini-world's ceilings (cocoins/world/oracles.py): captions, textual inversion and the scores."""


import numpy as np
import pytest
import torch

from cocoins.sdxl.encode import PromptEncoder
from cocoins.sdxl.tiny import build_tiny_sdxl
from cocoins.world.captions import trait_phrases
from cocoins.world.oracles import OracleConfig, describing_caption, render_identity, score, textual_inversion
from cocoins.world.people import draw_traits
from cocoins.world.traits import TRAIT_CLASSES, trait_labels


def test_the_describing_caption_names_every_drawn_trait_in_the_portrait_prompt():
    t = draw_traits(5000, 3)
    caption = describing_caption(t)
    assert caption.startswith("A young " if t.young else "A older ") and caption.endswith("looking at the camera.")
    assert all(phrase in caption for phrase in trait_phrases(t))


def test_renders_of_one_identity_vary_the_scene_only_and_are_reproducible():
    x, scenes = render_identity(5000, 2, 6, 32)
    again, _ = render_identity(5000, 2, 6, 32)
    assert x.shape == (6, 3, 32, 32) and torch.equal(x, again) and -1 <= x.min() and x.max() <= 1
    assert len(set(scenes)) > 1


def test_textual_inversion_fits_one_word_per_identity_and_lowers_the_denoising_loss():
    pipe = build_tiny_sdxl(0)
    encoder = PromptEncoder.from_pipeline(pipe)
    cfg = OracleConfig(identities=2, ti_images=4, ti_steps=30, ti_batch=2, resolution=32, ti_lr=5e-2)
    words, losses = textual_inversion(pipe, encoder, [1, 2], cfg, progress=False)
    assert words.shape == (2, sum(encoder.pseudo_word_dims)) and not torch.equal(words[0], words[1])
    # Mean of the last 10 steps below the first 10: the fit follows the loss (noise and t are redrawn).
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert not any(p.requires_grad for p in pipe.unet.parameters())   # only the words were fitted


class FixedClassifier:
    """Reads what it is told: probabilities given per image, to check the arithmetic of `score`."""
    identity_traits = ("male", "hair_color")

    def __init__(self, reads: list[dict]):
        self.reads = reads

    def probabilities(self, images):
        out = {}
        for name in self.identity_traits:
            p = torch.zeros(len(self.reads), len(TRAIT_CLASSES[name]))
            for i, r in enumerate(self.reads):
                p[i, r[name]] = 1.0
            out[name] = p
        return out

    def embed_probabilities(self, probs):
        return torch.nn.functional.normalize(torch.cat([probs[n] for n in self.identity_traits], dim=1), dim=1)


def test_score_counts_drawn_traits_read_back_per_identity():
    a, b = draw_traits(5000, 1), draw_traits(5000, 2)
    truth_a, truth_b = trait_labels(a), trait_labels(b)
    wrong = lambda k, name: (k + 1) % len(TRAIT_CLASSES[name])
    reads = [{"male": truth_a["male"], "hair_color": truth_a["hair_color"]},          # a: both right
             {"male": truth_a["male"], "hair_color": wrong(truth_a["hair_color"], "hair_color")},  # a: one right
             {"male": wrong(truth_b["male"], "male"), "hair_color": wrong(truth_b["hair_color"], "hair_color")},
             {"male": wrong(truth_b["male"], "male"), "hair_color": wrong(truth_b["hair_color"], "hair_color")}]
    row = score(FixedClassifier(reads), [None] * 4, [1, 1, 2, 2], {1: a, 2: b})
    assert row.true_trait_agreement == pytest.approx((0.75 + 0.0) / 2)
    assert row.true_trait_agreement_std == pytest.approx(0.375)
    assert row.per_trait == {"male": 0.5, "hair_color": 0.25}
    # b's two images are read alike: its pair has cosine 1; a's two images share one of two traits: cosine 1/2.
    assert row.identity_sim == pytest.approx(0.75) and row.images == 4

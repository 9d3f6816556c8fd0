"""The synthetic world's exact identity metric: a trait classifier trained on fresh renders (issue 6)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cocoins.simdiv import sim_div
from cocoins.world.traits import (HEADS, SCENE, SCENE_CLASSES, TRAIT_CLASSES, TraitClassifier,
                                  render_portraits, to_tensor, train_trait_classifier, trait_agreement)

SIZE = 64
# Traits the renderer draws visibly. `male` has no drawn cue of its own (only its correlates: beard,
# mustache, lipstick, hair style) and `young` is a few thin lines, so both sit near 0.83 and get their own bar.
VISIBLE = ("skin", "hair_color", "hair_style", "eyeglasses", "beard", "mustache", "smiling", "lipstick")


@pytest.fixture(scope="module")
def classifier():
    return train_trait_classifier(seed=0, steps=450, train_images=1000, batch_size=64, image_size=SIZE,
                                  progress=False)


@pytest.fixture(scope="module")
def held_out():
    """Clean renders of 300 identities never seen in training (another world seed)."""
    return render_portraits(seed=1, identities=range(1, 301), image_size=SIZE)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-r ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    k2 = (k[:, None] * k[None, :])[None, None].repeat(3, 1, 1, 1)
    return F.conv2d(F.pad(x, (3, 3, 3, 3), mode="replicate"), k2, groups=3)


@pytest.mark.slow   # the module classifier: 450 steps on 1,000 renders, about 6 minutes of a shared 2-core machine
def test_per_trait_accuracy_on_held_out_clean_and_blurred_renders(classifier, held_out):
    images, labels = held_out
    clean = classifier.accuracy(images, labels)
    blurred = classifier.accuracy(gaussian_blur(to_tensor(images, SIZE), 1.0), labels)
    print("\nclean", {k: round(v, 3) for k, v in clean.items()})
    print("blurred (sigma 1)", {k: round(v, 3) for k, v in blurred.items()})
    assert set(clean) == set(HEADS) == {*TRAIT_CLASSES, SCENE}
    # The scene is the background colour: the easiest head, through blur too (evaluate's scene fidelity).
    assert clean[SCENE] >= 0.95 and blurred[SCENE] >= 0.9, (clean[SCENE], blurred[SCENE])
    # One short training's per-trait accuracies move by a few hundredths between CPUs: each trait gets a floor
    # and the visible traits together a mean (measured: min 0.90 clean / 0.863 blurred, mean 0.956 / 0.935).
    for name in VISIBLE:
        assert clean[name] >= 0.82, (name, clean[name])
        assert blurred[name] >= 0.78, (name, blurred[name])
    assert np.mean([clean[n] for n in VISIBLE]) >= 0.9 and np.mean([blurred[n] for n in VISIBLE]) >= 0.88
    for name in ("male", "young"):
        assert clean[name] >= 0.75 and blurred[name] >= 0.75, (name, clean[name], blurred[name])
    # Eye colour (a few pixels of iris) needs longer training: 0.41 here, 0.83 with the defaults.
    assert clean["eye_color"] >= 0.33 and blurred["eye_color"] >= 0.3   # chance is 0.25


@pytest.mark.slow   # shares the module classifier above
def test_sim_same_identity_clearly_above_cross_identity(classifier):
    ids = [i for i in range(1, 31) for _ in range(4)]          # 30 identities x 4 scenes / poses
    images, _ = render_portraits(seed=2, identities=ids, image_size=SIZE)
    emb = classifier.embed(images)
    assert emb.shape == (len(ids), sum(len(c) for c in TRAIT_CLASSES.values()))
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(ids)), atol=1e-5)
    r = sim_div(emb, ids)
    cross = 1 - r.div          # mean cosine between identities' averaged embeddings
    print(f"\nSim {r.sim:.3f}  Div {r.div:.3f}  cross-identity cosine {cross:.3f}")
    assert r.sim >= 0.9 and r.sim - cross >= 0.3
    agreement = trait_agreement(classifier.predict(images), ids)
    print("same-identity trait agreement", {k: round(v, 3) for k, v in agreement.items()})
    # Measured: min 0.867 (mustache), mean 0.94 over the visible traits.
    assert all(agreement[name] >= 0.8 for name in VISIBLE) and np.mean([agreement[n] for n in VISIBLE]) >= 0.9


def test_training_is_deterministic_and_seed_dependent():
    def weights(seed):
        net = train_trait_classifier(seed=seed, steps=3, train_images=32, batch_size=16, image_size=32,
                                     width=8, progress=False).net
        return net.state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.fixture(scope="module")
def quick_classifier():
    """A few steps of training: enough for save / load and input handling, which do not depend on accuracy."""
    return train_trait_classifier(seed=0, steps=3, train_images=32, batch_size=16, image_size=SIZE, width=8,
                                  progress=False)


@pytest.fixture(scope="module")
def few_renders():
    return render_portraits(seed=1, identities=range(1, 21), image_size=SIZE)


def test_save_load_round_trip(quick_classifier, few_renders, tmp_path):
    classifier, images = quick_classifier, few_renders[0]
    classifier.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traits.json", "traits.safetensors"]
    loaded = TraitClassifier.load(tmp_path)
    assert loaded.cfg == classifier.cfg
    assert torch.equal(loaded.embed(images), classifier.embed(images))
    assert loaded.predict(images) == classifier.predict(images)
    meta = json.loads((tmp_path / "traits.json").read_text())
    (tmp_path / "traits.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "scenes"}))
    with pytest.raises(ValueError, match="without this renderer's scene head.*dvc repro identity"):
        TraitClassifier.load(tmp_path)
    (tmp_path / "traits.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="traits.safetensors"):
        TraitClassifier.load(tmp_path)


def test_predict_accepts_pil_and_other_sizes(quick_classifier, few_renders):
    from PIL import Image

    classifier, images = quick_classifier, few_renders[0][:4]
    pil = [Image.fromarray(im).resize((32, 32)) for im in images]
    pred = classifier.predict(pil)
    assert set(pred) == set(HEADS) and all(len(v) == 4 for v in pred.values())
    assert all(v in SCENE_CLASSES for v in pred[SCENE])
    assert all(v in TRAIT_CLASSES["skin"] for v in pred["skin"])
    with pytest.raises(ValueError, match="uint8"):
        classifier.predict(images.astype(np.float32))


def test_trait_agreement_on_hand_made_labels():
    preds = {"skin": ["tan", "tan", "dark", "pale", "pale", "pale"], "male": [True, False, True, True, True, True]}
    ids = ["a", "a", "b", "c", "c", "c"]
    # pairs: a: (0,1); c: (3,4), (3,5), (4,5); b has one image and forms no pair.
    assert trait_agreement(preds, ids) == {"skin": 1.0, "male": 0.75}
    assert trait_agreement({"skin": ["tan", "dark"]}, ["a", "b"]) == {"skin": None}
    with pytest.raises(ValueError, match="3 labels for 2"):
        trait_agreement({"skin": ["tan", "tan", "tan"]}, ["a", "a"])

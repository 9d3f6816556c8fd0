"""The offline attribute captioner (cocoins.backends.captioners)."""

import re

import pytest

from cocoins.backends.captioners import AttributeCaptioner, CaptionSkip, make_captioner
from cocoins.backends.taggers import rule_tag
from cocoins.runtime import UserError
from cocoins.world.people import CELEBA_ATTRIBUTES


def celeba_row(*on):
    """A full CelebA attribute row (all 40 names) with the given attributes set to 1."""
    return {name: 1 if name in on else -1 for name in CELEBA_ATTRIBUTES}


# Rows in the shape real CelebA has: every attribute present; No_Beard=1 means clean-shaven.
MAN = celeba_row("Male", "Young", "Black_Hair", "Eyeglasses", "Smiling", "Mustache", "Wearing_Necktie")
WOMAN = celeba_row("Blond_Hair", "Wavy_Hair", "Wearing_Lipstick", "No_Beard", "Wearing_Earrings", "Young")


def test_two_different_captions_of_the_same_person():
    cap = AttributeCaptioner(seed=0)
    for i in range(30):
        c1, c2 = cap.caption(f"{i:06d}", "unused.jpg", MAN)
        assert c1 != c2
        for c in (c1, c2):
            assert re.search(r"\b(man|person)\b", c) and "woman" not in c
            assert re.search(r"\b(glasses|eyeglasses)\b", c) and "black hair" in c and "mustache" in c
            assert "smile" in c and "necktie" in c and "beard" in c  # No_Beard=-1: CelebA's beard flag
            assert c[0].isupper() and c.endswith(".")


def test_woman_attributes():
    c1, c2 = AttributeCaptioner().caption("000001", "x.jpg", WOMAN)
    for c in (c1, c2):
        assert re.search(r"\b(woman|person)\b", c) and not re.search(r"\bman\b", c)
        assert "wavy blond hair" in c and "lipstick" in c and "beard" not in c and "glasses" not in c


def test_deterministic_per_seed_and_image():
    a = [AttributeCaptioner(seed=0).caption(f"{i}", "x", MAN) for i in range(20)]
    assert a == [AttributeCaptioner(seed=0).caption(f"{i}", "x", MAN) for i in range(20)]
    assert a != [AttributeCaptioner(seed=1).caption(f"{i}", "x", MAN) for i in range(20)]
    assert len(set(a)) > 5  # templates vary across images


def test_every_caption_has_a_taggable_subject():
    cap = AttributeCaptioner()
    for i, row in enumerate([MAN, WOMAN, celeba_row(), celeba_row("Male", "Bald", "Gray_Hair")] * 10):
        for c in cap.caption(str(i), "x", row):
            assert "<subj1>" in rule_tag(c), c


def test_bald_and_no_hair_colour():
    c1, _ = AttributeCaptioner().caption("1", "x", celeba_row("Male", "Bald", "Gray_Hair"))
    assert "bald head" in c1 and "gray hair" not in c1


def test_no_attributes_is_a_skip():
    with pytest.raises(CaptionSkip, match="no attributes"):
        AttributeCaptioner().caption("1", "x", {})


def test_make_captioner():
    from cocoins.backends.vlm_captioners import LlavaCaptioner, OllamaCaptioner
    from cocoins.config import CaptionParams

    made = make_captioner(CaptionParams(seed=3))
    assert isinstance(made, AttributeCaptioner) and made.seed == 3
    assert isinstance(make_captioner(CaptionParams(backend="llava")), LlavaCaptioner)  # loads lazily
    assert isinstance(make_captioner(CaptionParams(backend="ollama", model="llava:7b")), OllamaCaptioner)
    with pytest.raises(UserError, match="unknown caption.backend"):
        make_captioner(CaptionParams(backend="blip"))


def test_caption_batch_gives_skip_reasons():
    import json

    import pandas as pd

    rows = pd.DataFrame({"image_id": ["1", "2"], "path": ["x", "y"],
                         "attributes": [json.dumps({"Male": 1, "Young": 1}), "{}"]})
    (c1, c2, r1), (d1, d2, r2) = AttributeCaptioner().caption_batch(rows)
    assert c1 and c2 and r1 == "" and (d1, d2) == ("", "") and r2.startswith("no attributes")

"""Captioners: two differently phrased captions per image (the paper uses LLaVA-Next, Sec. 4.2).

`AttributeCaptioner` is a real offline captioner for CelebA-format data: it reads the 40 CelebA attributes
of the image and phrases them with templates. The two captions of an image describe the same person in
different words, which is what the paper's triplets need (anchor and positive use different prompts,
Table 5). Template choice is a hash of (seed, image_id), so it is deterministic and independent of row
order. Every caption names the subject with a person noun (man / woman / person), so the tagger finds it.
CelebA has no child flag, so the nouns are only "man", "woman" and sometimes "person".

Extension point: a captioner is any object with `backend`, `model` and
`caption(image_id, image_path, attributes) -> (caption1, caption2)` that raises `CaptionSkip(reason)`
for an image it cannot caption. `make_captioner` picks one by the `caption.backend` param.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Protocol

from cocoins.runtime import UserError


class CaptionSkip(Exception):
    """This image cannot be captioned; the message is the skip reason recorded in the table."""


class Captioner(Protocol):
    backend: str
    model: str

    def caption(self, image_id: str, image_path: str, attributes: dict[str, int]) -> tuple[str, str]: ...


# Attributes phrased the same way in every caption, in CelebA's naming.
ACCESSORIES = (("Mustache", "a mustache"), ("Wearing_Lipstick", "red lipstick"), ("Wearing_Hat", "a hat"),
               ("Wearing_Earrings", "earrings"), ("Wearing_Necktie", "a necktie"), ("Pale_Skin", "pale skin"))
HAIR_COLORS = {"Black_Hair": "black", "Blond_Hair": "blond", "Brown_Hair": "brown", "Gray_Hair": "gray"}

# Two caption families so the pair differs in structure, not just in a word: "portrait" templates lead
# with the photo, "description" templates lead with the subject.
PORTRAIT = (
    "a photo of {a_subject} with {features}",
    "a close-up portrait of {a_subject} with {features}",
    "a headshot of {a_subject} with {features}",
)
DESCRIPTION = (
    "{A_subject} with {features} is looking at the camera",
    "{A_subject} with {features} poses for a picture",
    "{A_subject} with {features} faces the viewer",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


@dataclass
class AttributeCaptioner:
    """Offline captioner phrasing an image's CelebA attributes (1 = present, -1 = absent)."""
    seed: int = 0
    backend: str = "attributes"
    model: str = "celeba-attribute-templates-v1"

    def _rng(self, image_id: str) -> random.Random:
        digest = hashlib.sha256(f"{self.seed}:{image_id}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    @staticmethod
    def subject(attrs: dict[str, int], rng: random.Random) -> str:
        """Noun phrase for the person: age adjective + man / woman, sometimes the neutral "person"."""
        noun = "man" if attrs.get("Male", -1) == 1 else "woman"
        if rng.random() < 0.2:
            noun = "person"
        young = attrs.get("Young", -1) == 1
        age = rng.choice(["young", "young", ""] if young else ["older", "middle-aged"])
        return f"{age} {noun}".strip()

    @staticmethod
    def features(attrs: dict[str, int], rng: random.Random) -> list[str]:
        """Visible traits as noun phrases ("short black hair", "glasses", ...), in a shuffled order."""
        on = {name for name, v in attrs.items() if v == 1}
        hair_color = next((c for name, c in HAIR_COLORS.items() if name in on), "")
        out: list[str] = []
        if "Bald" in on:
            out.append("a bald head")
        else:
            texture = "wavy" if "Wavy_Hair" in on else "straight" if "Straight_Hair" in on else ""
            hair = " ".join(w for w in (texture, hair_color, "hair") if w)
            out.append(hair if (texture or hair_color) else "dark hair" if "Bangs" in on else "short hair")
            if "Bangs" in on:
                out.append("bangs")
        if "Eyeglasses" in on:
            out.append(rng.choice(["glasses", "eyeglasses"]))
        if attrs.get("No_Beard", 1) == -1:
            out.append("a goatee" if "Goatee" in on else "a beard")
        out += [phrase for name, phrase in ACCESSORIES if name in on]
        out.append(rng.choice(["a smile", "a bright smile"]) if "Smiling" in on
                   else rng.choice(["a neutral expression", "a calm expression"]))
        rng.shuffle(out)
        return out

    def caption(self, image_id: str, image_path: str, attributes: dict[str, int]) -> tuple[str, str]:
        if not attributes:
            raise CaptionSkip("no attributes to caption from (folder source); use a model captioner")
        rng = self._rng(image_id)
        captions = []
        families = [PORTRAIT, DESCRIPTION]
        rng.shuffle(families)  # which family comes first varies, so caption1 is not always "a photo of"
        for family in families:
            subject = self.subject(attributes, rng)
            feats = self.features(attributes, rng)
            text = rng.choice(family).format(a_subject=f"{_article(subject)} {subject}",
                                             A_subject=f"{_article(subject).capitalize()} {subject}",
                                             features=_join_list(feats))
            captions.append(text[0].upper() + text[1:] + ".")
        return captions[0], captions[1]


def make_captioner(backend: str, seed: int = 0) -> Captioner:
    """The captioner for the `caption.backend` param."""
    if backend == "attributes":
        return AttributeCaptioner(seed=seed)
    if backend in ("llava", "ollama"):
        raise UserError(f"caption.backend: {backend} is not available yet (the model captioners come in a "
                        "later issue); set caption.backend: attributes")
    raise UserError(f"unknown caption.backend {backend!r}; use attributes")

"""Captioners: two differently phrased captions per image (the paper uses LLaVA-Next, Sec. 4.2).

`AttributeCaptioner` is a real offline captioner for CelebA-format data: it reads the 40 CelebA attributes
of the image and phrases them with templates. The two captions of an image describe the same person in
different words, which is what the paper's triplets need (anchor and positive use different prompts,
Table 5). Template choice is a hash of (seed, image_id), so it is deterministic and independent of row
order. Every caption names the subject with a person noun (man / woman / person), so the tagger finds it.
CelebA has no child flag, so the nouns are only "man", "woman" and sometimes "person".

Extension point: a captioner is any object with `backend`, `model` and
`caption_batch(rows) -> [(caption1, caption2, skip reason)]` over rows of the images table ("" = usable).
`make_captioner` picks one by the `caption.backend` param; the model captioners (LLaVA-Next, ollama) are
in vlm_captioners.py.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Protocol

from cocoins.runtime import UserError


class CaptionSkip(Exception):
    """This image cannot be captioned; the message is the skip reason recorded in the table."""


class Captioner(Protocol):
    backend: str
    model: str

    def caption_batch(self, rows) -> list[tuple[str, str, str]]: ...


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


    def caption_batch(self, rows) -> list[tuple[str, str, str]]:
        """(caption1, caption2, skip reason) per row of the images table (image_id, path, attributes)."""
        out = []
        for image_id, path, attributes in zip(rows["image_id"], rows["path"], rows["attributes"]):
            try:
                out.append((*self.caption(image_id, path, json.loads(attributes)), ""))
            except CaptionSkip as skip:
                out.append(("", "", str(skip)))
        return out


def make_captioner(p, device=None) -> Captioner:
    """The captioner for the `caption` params group (`CaptionParams`); model captioners: vlm_captioners.py."""
    if p.backend == "attributes":
        return AttributeCaptioner(seed=p.seed)
    from cocoins.backends import vlm_captioners  # imported late: the offline default needs no model code

    if p.backend == "llava":
        return vlm_captioners.LlavaCaptioner(p.model, p.prompts, device, p.dtype, p.max_new_tokens, p.batch_size)
    if p.backend == "ollama":
        return vlm_captioners.OllamaCaptioner(p.model, p.prompts, p.host, p.timeout, p.retries, p.retry_wait,
                                              parallel=p.batch_size)
    raise UserError(f"unknown caption.backend {p.backend!r}; use attributes, llava or ollama")

"""The words of the mini-world: how its captions and prompts describe and name a person.

The mini SDXL's corpus (`pretrain.py`) is captioned here: `corpus_caption` describes a person's traits
(`trait_phrases` after "with", `trait_adjectives` before the noun) or names only the class; `named_caption`
calls a named person by a one-token name (`name_tokens`) in the slot before the noun, where Eq. 4 puts the
pseudo-word. The diagnose oracles (`oracles.py`) describe their identities with the same phrases.
"""

from __future__ import annotations

import random

from cocoins.sdxl.encode import DEFAULT_PLACEHOLDER
from cocoins.sdxl.tokenizer import clip_vocab_and_merges
from cocoins.world.people import EYES, HAIR, SCENE_PHRASES, SKIN, Traits


def trait_phrases(t: Traits) -> list[str]:
    """Every drawn trait of an identity as a noun phrase ("wavy blond hair"), the words after "with"."""
    style = {"short": "short", "long": "long straight", "wavy": "wavy", "bangs": "bangs and"}.get(t.hair_style)
    out = [f"{t.skin} skin", "a bald head" if style is None else f"{style} {t.hair_color} hair",
           f"{t.eye_color} eyes", "a smile" if t.smiling else "a neutral expression"]
    out += [p for flag, p in ((t.eyeglasses, "glasses"), (t.beard, "a beard"), (t.mustache, "a mustache"),
                              (t.lipstick, "red lipstick")) if flag]
    return out


def trait_adjectives(t: Traits) -> list[str]:
    """The traits that English also puts before the noun ("a smiling blond man"). Web captions do, so SDXL
    learned to read identity in the slot before the noun: the very slot where CoCoIns inserts its pseudo-word
    (Eq. 4). A corpus that only says "a man with blond hair" leaves that slot without a lever on the person."""
    hair = {"blond": "blond", "black": "black-haired", "brown": "brown-haired", "gray": "gray-haired"}[t.hair_color]
    out = [f"{t.skin}-skinned" if t.skin != "tan" else "tanned",
           "bald" if t.hair_style == "bald" else hair, f"{t.eye_color}-eyed",
           "smiling" if t.smiling else "serious"]
    out += [a for flag, a in ((t.hair_style == "wavy", "curly-haired"), (t.hair_style == "long", "long-haired"),
                              (t.eyeglasses, "bespectacled"), (t.beard, "bearded"), (t.mustache, "mustached"))
            if flag]
    return out


TEMPLATES = (
    "a photo of {a_subject}{features}{scene}",
    "a portrait of {a_subject}{features}{scene}",
    "{A_subject}{features} is looking at the camera{scene}.",
    "{A_subject}{features}{scene}.",
)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def corpus_caption(t: Traits, scene: str, rng: random.Random, describe_share: float) -> str:
    """One caption of a corpus image. With probability `describe_share` it describes a random non-empty
    subset of the person's traits, each either as an adjective before the noun ("a bearded man") or as a
    phrase after "with" ("a man with a beard"), and sometimes the age; otherwise it names only the class
    ("a man"), the way most web captions name a person. The scene is named 80% of the time."""
    noun = "person" if rng.random() < 0.15 else "man" if t.male else "woman"
    adjectives: list[str] = []
    features = ""
    if rng.random() < describe_share:
        if rng.random() < 0.4:
            adjectives.append("young" if t.young else "older")
        before = rng.random() < 0.5   # this caption's style: adjectives, or "with" phrases
        pool = trait_adjectives(t) if before else trait_phrases(t)
        picked = [p for p in pool if rng.random() < 0.5] or [rng.choice(pool)]
        rng.shuffle(picked)
        if before:
            adjectives += picked[:3]   # "a smiling bald bearded man", not a list of ten
        else:
            features = " with " + _join(picked)
    words = " ".join([*adjectives, noun])
    a_subject = f"{'an' if words[0] in 'aeiou' else 'a'} {words}"
    template = rng.choice(TEMPLATES)
    scene_words = f" {SCENE_PHRASES[scene]}" if rng.random() < 0.8 else ""
    return template.format(a_subject=a_subject, A_subject=a_subject[0].upper() + a_subject[1:],
                           features=features, scene=scene_words)


def _world_words() -> set[str]:
    """Every word the world's captions and evaluation prompts use: names must not collide with them."""
    text = " ".join([*TEMPLATES, *SCENE_PHRASES.values(), *SKIN, *HAIR, *EYES, "a photo of a man woman person",
                     "young older is looking at the camera with and", DEFAULT_PLACEHOLDER,
                     "short long straight wavy bangs bald head skin hair eyes smile neutral expression glasses",
                     "beard mustache red lipstick skinned tanned haired eyed smiling serious curly bespectacled",
                     "bearded mustached"])
    return {w.strip(".,").lower() for w in text.replace("-", " ").replace("{", " ").replace("}", " ").split()}


def name_tokens(count: int, seed: int) -> tuple[str, ...]:
    """`count` names for the corpus's named people: lower-case words of 4 to 8 letters that are one CLIP token
    (so a name is one slot of the text encoder, as a pseudo-word is), none of them a word the world's captions
    or prompts use. Drawn from the vocabulary in a seeded order, so the same arguments give the same names."""
    vocab, _ = clip_vocab_and_merges()
    banned = _world_words()
    words = sorted(t[:-4] for t in vocab if t.endswith("</w>") and t[:-4].isascii() and t[:-4].isalpha()
                   and t[:-4].islower() and 4 <= len(t) - 4 <= 8 and t[:-4] not in banned)
    if count > len(words):
        raise ValueError(f"asked for {count} names; the vocabulary has {len(words)} single-token words")
    rng = random.Random(seed)
    return tuple(rng.sample(words, count))


def named_caption(name: str, t: Traits, scene: str, rng: random.Random) -> str:
    """A caption that names the person with one token in the slot before the noun, where Eq. 4 puts the
    pseudo-word ("a photo of a kestrel woman in a green park"): web captions name celebrities this way, and
    that is what teaches SDXL's text encoders that one token can stand for a whole person."""
    noun = "person" if rng.random() < 0.15 else "man" if t.male else "woman"
    template = rng.choice(TEMPLATES)
    a_subject = f"a {name} {noun}"
    scene_words = f" {SCENE_PHRASES[scene]}" if rng.random() < 0.8 else ""
    return template.format(a_subject=a_subject, A_subject=a_subject[0].upper() + a_subject[1:],
                           features="", scene=scene_words)

"""Story mode: a story with two characters in a panel renders into a storyboard plus panels whose sidecars
reproduce them; the shipped example story parses; malformed stories are clear errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from front_models import SIZE, write_models
from PIL import Image

from cocoins.cli import main
from cocoins.front.story import parse_story
from cocoins.runtime import UserError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "story-mini-world.yaml"


TWO_PANELS = """
characters: {alice: {seed: 7}}
panels:
  - prompt: "A <alice>woman</alice> and a <bob>man</bob> at an orange sunset."
    seed: 4
  - prompt: "A photo of a <subj1>man</subj1> on a purple stage."
    characters: [bob]
    seed: 5
    negative_prompt: "a woman"
"""


def test_the_example_story_parses_with_a_two_character_panel():
    story = parse_story(EXAMPLE.read_text())
    assert len(story.panels) == 6 and story.inline == {"alice": 7, "bob": 11}
    assert [p.cast for p in story.panels if len(p.cast) == 2] == [("alice", "bob")]


def test_a_story_renders_into_a_storyboard_and_each_panel_replays(tmp_path_factory, tmp_path):
    dirs = write_models(tmp_path_factory.mktemp("story"))
    assert main(["character", "new", "bob", "--seed", "11", "--mapper", str(dirs / "mapper"),
                 "--library", str(tmp_path / "lib")]) == 0     # bob from the library, alice from the story
    (tmp_path / "story.yaml").write_text(TWO_PANELS)
    out = tmp_path / "story"
    assert main(["story", str(tmp_path / "story.yaml"), "--model", str(dirs / "model"), "--mapper",
                 str(dirs / "mapper"), "--steps", "1", "--height", str(SIZE), "--width", str(SIZE), "--device", "cpu",
                 "--library", str(tmp_path / "lib"), "--out", str(out)]) == 0
    panels = sorted(out.glob("panel-*.png"))
    assert len(panels) == 2 and Image.open(out / "storyboard.png").width > 2 * 256   # 2 upscaled cells
    first = json.loads((out / "panel-01.json").read_text())
    assert first["codes"] == [{"character": "alice", "code_seed": 7}, {"character": "bob", "code_seed": 11}]
    assert first["story_prompt"].startswith("A <alice>woman</alice>") and first["seed"] == 4
    assert json.loads((out / "panel-02.json").read_text())["negative_prompt"] == "a woman"
    assert main(["generate", "--sidecar", str(out / "panel-01.json"), "--device", "cpu",
                 "--out", str(tmp_path / "again.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), np.asarray(Image.open(panels[0])))


@pytest.mark.parametrize("text, message", [
    ("panels: []", "non-empty 'panels:'"),
    ("panels: [{seed: 1}]", "panel 1: a panel is a mapping with at least 'prompt:'"),
    ("panels: [{prompt: 'a <alice>woman'}]", "panel 1: malformed tag.*<alice> is never closed"),
    ("panels: [{prompt: 'a <subj1>man</subj1>'}]", "panel 1: the prompt has 1 <subjN> tag"),
    ("panels: [{prompt: 'a <alice>woman</alice>', seed: one}]", "seed must be a whole number"),
    ("panels: [{prompt: 'a <alice>woman</alice>', colour: red}]", r"unknown key\(s\) \['colour'\]"),
    ("characters: {alice: 7}\npanels: [{prompt: 'a <alice>woman</alice>'}]", "write `alice: {seed: N}`"),
    ("settings: {steps: many}\npanels: [{prompt: 'a <alice>woman</alice>'}]", "setting steps must be a number"),
    ("panels: [{prompt: 'a <alice>woman</alice>'", "not valid YAML"),
])
def test_malformed_stories_are_clear_errors(text, message):
    with pytest.raises(UserError, match=message):
        parse_story(text)


def test_a_story_names_a_character_by_a_photo_fitted_once(tmp_path, monkeypatch):
    import hashlib

    from test_from_image import _photo_and_mask

    from cocoins.characters.library import CharacterLibrary
    from cocoins.method.code_inversion import CodeInversionConfig, CodeInverter

    dirs = write_models(tmp_path / "models")
    photo, mask = _photo_and_mask(size=64)                # the tiny SDXL's own size
    (tmp_path / "carol.png").write_bytes(photo)
    (tmp_path / "carol-mask.png").write_bytes(mask)
    fits, real_fit = [], CodeInverter.fit

    def cheap_fit(self, pixels, mask, prompt, cfg, seed=0, progress=True):   # counted; fewer steps, for speed
        fits.append(prompt)
        return real_fit(self, pixels, mask, prompt, CodeInversionConfig(steps=1, noises=2, candidates=2), seed,
                        progress)

    monkeypatch.setattr(CodeInverter, "fit", cheap_fit)
    (tmp_path / "story.yaml").write_text("characters: {carol: {photo: carol.png, mask: carol-mask.png, noun: woman}}\n"
                                         "panels: [{prompt: 'A <carol>woman</carol> in a green park.', seed: 3}]\n")
    run = ["story", str(tmp_path / "story.yaml"), "--model", str(dirs / "model"), "--mapper", str(dirs / "mapper"),
           "--steps", "1", "--height", str(SIZE), "--width", str(SIZE), "--device", "cpu",
           "--library", str(tmp_path / "lib")]
    assert main([*run, "--out", str(tmp_path / "one")]) == 0
    assert main([*run, "--out", str(tmp_path / "two")]) == 0
    assert fits == ["A <subj1>woman</subj1> is looking at the camera."]        # fitted once, then read back
    cache = CharacterLibrary(tmp_path / "lib" / ".photos")
    (kept,) = [cache.get(n) for n in cache.names()]
    assert kept.source["photo_sha256"] == hashlib.sha256(photo).hexdigest()
    assert CharacterLibrary(tmp_path / "lib").names() == []                    # the user's names stay theirs
    side = json.loads((tmp_path / "one" / "panel-01.json").read_text())
    assert side["codes"] == [{"character": "carol", "z": kept.z.tolist()}]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / "panel-01.png")),
                          np.asarray(Image.open(tmp_path / "two" / "panel-01.png")))
    with pytest.raises(UserError, match=r"character carol: photo .*nope.png not found"):
        parse_story("characters: {carol: {photo: nope.png}}\npanels: [{prompt: 'a <carol>woman</carol>'}]",
                    base_dir=tmp_path)
    with pytest.raises(UserError, match="create the character from the photo first"):
        parse_story("characters: {carol: {photo: carol.png}}\npanels: [{prompt: 'a <carol>woman</carol>'}]")

"""Story mode: the shipped example story renders (two characters in one panel) into a storyboard plus panels
whose sidecars reproduce them; malformed stories are clear errors."""

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


def test_the_example_story_renders_and_each_panel_replays(tmp_path_factory, tmp_path):
    dirs = write_models(tmp_path_factory.mktemp("story"))
    story = parse_story(EXAMPLE.read_text())
    assert len(story.panels) == 6 and any(len(p.cast) == 2 for p in story.panels)
    out = tmp_path / "story"
    assert main(["story", str(EXAMPLE), "--model", str(dirs / "model"), "--mapper", str(dirs / "mapper"),
                 "--steps", "1", "--height", str(SIZE), "--width", str(SIZE), "--device", "cpu",
                 "--library", str(tmp_path / "empty-lib"), "--out", str(out)]) == 0
    panels = sorted(out.glob("panel-*.png"))
    assert len(panels) == 6 and (out / "storyboard.png").is_file()
    board = Image.open(out / "storyboard.png")
    assert board.width > 4 * 256 and board.height > 2 * 256        # 4 columns, 2 rows of upscaled panels
    four = json.loads((out / "panel-04.json").read_text())
    assert [c["character"] for c in four["codes"]] == ["alice", "bob"] and four["seed"] == 4
    assert four["story_prompt"].startswith("A <alice>woman</alice> and a <bob>man</bob>")
    assert json.loads((out / "panel-05.json").read_text())["negative_prompt"] == "a woman"
    assert main(["generate", "--sidecar", str(out / "panel-04.json"), "--device", "cpu",
                 "--out", str(tmp_path / "again.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), np.asarray(Image.open(panels[3])))
    images = [np.asarray(Image.open(p)) for p in panels]
    assert len({im.tobytes() for im in images}) == 6


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

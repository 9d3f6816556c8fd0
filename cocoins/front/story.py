"""Story mode: a YAML list of panels rendered with kept characters into one storyboard and one PNG per panel.

    characters:                 # optional: made for this story from code seeds; other names come from the library
      alice: {seed: 7}
      carol: {photo: carol.png, mask: carol-mask.png, noun: woman}   # a photo, beside the story file: fitted
                                  # once (kept in the library's .photos/ under its sha256), then like any character
    settings: {steps: 20, guidance: 5.0}          # optional; height / width default to the model's own size
    panels:
      - prompt: "A <alice>woman</alice> in a green park."
        seed: 1
      - prompt: "A <alice>woman</alice> and a <bob>man</bob> at night."
        seed: 2
        negative_prompt: "blurry"                 # optional
      - prompt: "A <subj1>man</subj1> on a purple stage."
        characters: [bob]                         # for <subjN> prompts: the character of each <subjN>
        seed: 3

Each panel gets `panel-NN.png` and a `panel-NN.json` sidecar (`cocoins generate --sidecar` renders it again);
`storyboard.png` shows them in order with their prompts.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from PIL import Image, ImageDraw, ImageFont

from cocoins.characters.codes import code_from_seed
from cocoins.characters.library import Character, CharacterLibrary
from cocoins.characters.prompts import check_name, resolve_prompt
from cocoins.runtime import UserError

PANEL_KEYS = {"prompt", "seed", "characters", "negative_prompt"}
SETTING_KEYS = {"steps": int, "guidance": float, "height": int, "width": int}
MAX_PANELS = 64
BOARD_CELL = 256      # storyboard cells are at least this many pixels wide (small models draw 32 px panels)
BOARD_COLUMNS = 4


@dataclass(frozen=True)
class Panel:
    prompt: str                 # as written
    tagged: str                 # <subjN> form
    cast: tuple[str, ...]       # character of each <subjN>
    seed: int
    negative_prompt: str | None


@dataclass(frozen=True)
class PhotoCharacter:
    photo: Path
    mask: Path | None
    noun: str


@dataclass(frozen=True)
class Story:
    panels: tuple[Panel, ...]
    inline: dict                # name -> code seed, characters defined in the story itself
    settings: dict              # steps, guidance, height, width (those given)
    photos: dict = field(default_factory=dict)    # name -> PhotoCharacter, characters fitted to a photo
    where: str = "story"


def _photo_character(name: str, spec: dict, where: str, base_dir: Path | None) -> PhotoCharacter:
    here = f"{where}: character {name}"
    if base_dir is None:
        raise UserError(f"{here}: a photo is read from a file beside a story file; here, create the character from "
                        "the photo first (the photo upload above) and name it in the story")
    if set(spec) - {"photo", "mask", "noun"} or not all(isinstance(v, str) for v in spec.values()):
        raise UserError(f"{here}: write `{name}: {{photo: FILE.png, mask: MASK.png, noun: woman}}` (mask and noun "
                        "optional)")
    paths = {key: base_dir / spec[key] for key in ("photo", "mask") if key in spec}
    for key, path in paths.items():
        if not path.is_file():
            raise UserError(f"{here}: {key} {path} not found; give a path relative to the story file")
    return PhotoCharacter(paths["photo"], paths.get("mask"), spec.get("noun", "person"))


def parse_story(text: str, where: str = "story", base_dir: str | os.PathLike | None = None) -> Story:
    """Check a story's YAML and return it; UserError naming the panel and field otherwise. Photos are read
    relative to `base_dir` (the story file's folder); without it a story may not name a photo."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{where} is not valid YAML ({str(err).splitlines()[0]}); see examples/story-mini-world.yaml")
    if not isinstance(data, dict) or not isinstance(data.get("panels"), list) or not data["panels"]:
        raise UserError(f"{where} needs a non-empty 'panels:' list; see examples/story-mini-world.yaml")
    unknown = set(data) - {"title", "characters", "settings", "panels"}
    if unknown:
        raise UserError(f"{where}: unknown top-level key(s) {sorted(unknown)}; use title, characters, settings, panels")
    if len(data["panels"]) > MAX_PANELS:
        raise UserError(f"{where} has {len(data['panels'])} panels; split it into stories of at most {MAX_PANELS}")
    inline, photos = {}, {}
    for name, spec in (data.get("characters") or {}).items():
        check_name(str(name), f"{where}: character")
        if isinstance(spec, dict) and "photo" in spec:
            photos[str(name)] = _photo_character(str(name), spec, where, None if base_dir is None else Path(base_dir))
            continue
        if not isinstance(spec, dict) or set(spec) != {"seed"} or not isinstance(spec["seed"], int):
            raise UserError(f"{where}: character {name}: write `{name}: {{seed: N}}`, `{name}: {{photo: FILE.png}}` "
                            "(or leave it to the library)")
        inline[str(name)] = spec["seed"]
    settings = {}
    for key, value in (data.get("settings") or {}).items():
        if key not in SETTING_KEYS:
            raise UserError(f"{where}: unknown setting {key!r}; use {', '.join(SETTING_KEYS)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UserError(f"{where}: setting {key} must be a number, got {value!r}")
        settings[key] = SETTING_KEYS[key](value)
    panels = tuple(_panel(p, i, where) for i, p in enumerate(data["panels"], start=1))
    return Story(panels, inline, settings, photos, where)


def _panel(raw, number: int, where: str) -> Panel:
    here = f"{where}, panel {number}"
    if not isinstance(raw, dict) or "prompt" not in raw:
        raise UserError(f"{here}: a panel is a mapping with at least 'prompt:'")
    if set(raw) - PANEL_KEYS:
        raise UserError(f"{here}: unknown key(s) {sorted(set(raw) - PANEL_KEYS)}; use {', '.join(sorted(PANEL_KEYS))}")
    try:
        resolved = resolve_prompt(raw["prompt"])
    except UserError as err:
        raise UserError(f"{here}: {err}") from None
    seed = raw.get("seed", number - 1)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"{here}: seed must be a whole number, got {seed!r}")
    cast = raw.get("characters")
    if resolved.names:
        if cast is not None and list(cast) != list(resolved.names):
            raise UserError(f"{here}: the prompt names {list(resolved.names)}; drop 'characters:' or make it match")
        cast = list(resolved.names)
    elif not isinstance(cast, list) or len(cast) != resolved.subjects:
        raise UserError(f"{here}: the prompt has {resolved.subjects} <subjN> tag(s); name characters in the prompt "
                        "(<alice>woman</alice>) or give 'characters: [alice, ...]', one per <subjN>")
    for name in cast:
        check_name(str(name), f"{here}: character")
    negative = raw.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise UserError(f"{here}: negative_prompt must be text")
    return Panel(raw["prompt"], resolved.tagged, tuple(str(c) for c in cast), seed, negative)


def cast_characters(story: Story, pipe, library: CharacterLibrary | None) -> dict[str, Character]:
    """Every character the story uses, checked against the pipeline's mapper."""
    names = sorted({n for p in story.panels for n in p.cast})
    cast = {}
    for name in names:
        if name in story.inline:
            cast[name] = Character(name, code_from_seed(story.inline[name], pipe.code_dim), pipe.mapper_sha256,
                                   {"code_seed": story.inline[name]})
        elif name in story.photos:
            cast[name] = _from_photo(name, story.photos[name], story.where, pipe, library)
        elif library is None:
            raise UserError(f"character {name!r} is not defined in the story and no library is set")
        else:
            cast[name] = library.get(name)
        cast[name].check_mapper(pipe.mapper_sha256, pipe.code_dim)
    return cast


def _from_photo(name: str, spec: PhotoCharacter, where: str, pipe, library: CharacterLibrary | None) -> Character:
    from cocoins.characters.from_photo import PHOTO_CACHE, cached_character_from_photo
    from cocoins.characters.photo import people_counter

    counter = people_counter(spec.mask is not None, pipe.default_size, f"{where}: character {name}: photo "
                             f"{spec.photo}", "`mask:`")
    cache = None if library is None else CharacterLibrary(library.root / PHOTO_CACHE)
    return cached_character_from_photo(pipe, name, spec.photo, counter, cache, noun=spec.noun, mask=spec.mask)


def render_story(story: Story, pipe, out_dir: str | os.PathLike, library: CharacterLibrary | None = None,
                 batch_size: int = 1, overrides: dict | None = None) -> Path:
    """Render every panel into `out_dir` (panel-NN.png + .json, storyboard.png); returns the storyboard path."""
    if pipe.mapper is None:
        raise UserError("story mode needs a mapper (--mapper models/mapper)")
    settings = {"steps": 30, "guidance": 5.0, "height": pipe.default_size, "width": pipe.default_size,
                **story.settings, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    pipe.check_settings(settings["steps"], settings["guidance"], settings["height"], settings["width"], batch_size)
    cast = cast_characters(story, pipe, library)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images: list[Image.Image] = []
    from tqdm.auto import tqdm

    groups = _batches(story.panels, batch_size)
    with tqdm(total=len(story.panels), desc="panels", disable=len(story.panels) < 2) as bar:
        for group in groups:
            out = pipe([p.tagged for p in group], subjects=[[cast[n] for n in p.cast] for p in group],
                       seed=[p.seed for p in group], num_inference_steps=settings["steps"],
                       guidance_scale=settings["guidance"], height=settings["height"], width=settings["width"],
                       negative_prompt=group[0].negative_prompt, batch_size=batch_size)
            for panel, image, sidecar in zip(group, out.images, out.sidecars):
                number = len(images) + 1
                image.save(out_dir / f"panel-{number:02d}.png")
                side = {**sidecar, "story_prompt": panel.prompt, "panel": number}
                (out_dir / f"panel-{number:02d}.json").write_text(json.dumps(side, indent=2) + "\n")
                images.append(image)
            bar.update(len(group))
    board = storyboard(images, [p.prompt for p in story.panels])
    board.save(out_dir / "storyboard.png")
    return out_dir / "storyboard.png"


def _batches(panels: tuple[Panel, ...], size: int) -> list[list[Panel]]:
    """Consecutive panels with the same number of characters and negative prompt, `size` at most per batch."""
    groups: list[list[Panel]] = []
    for panel in panels:
        last = groups[-1] if groups else None
        if last and len(last) < size and len(last[0].cast) == len(panel.cast) \
                and last[0].negative_prompt == panel.negative_prompt:
            last.append(panel)
        else:
            groups.append([panel])
    return groups


def storyboard(images: list[Image.Image], captions: list[str]) -> Image.Image:
    """Panels left to right, top to bottom, each with its number and prompt under it."""
    scale = max(1, -(-BOARD_CELL // max(im.width for im in images)))
    cell_w, cell_h = images[0].width * scale, images[0].height * scale
    font = ImageFont.load_default()
    wrap = max(10, cell_w // 7)
    lines = [textwrap.wrap(f"{i}. {_plain(c)}", wrap)[:4] for i, c in enumerate(captions, start=1)]
    text_h = 14 * max(len(ls) for ls in lines) + 8
    cols = min(BOARD_COLUMNS, len(images))
    rows = -(-len(images) // cols)
    gap = 8
    board = Image.new("RGB", (cols * (cell_w + gap) + gap, rows * (cell_h + text_h + gap) + gap), "white")
    draw = ImageDraw.Draw(board)
    for i, (image, caption_lines) in enumerate(zip(images, lines)):
        x = gap + (i % cols) * (cell_w + gap)
        y = gap + (i // cols) * (cell_h + text_h + gap)
        board.paste(image.convert("RGB").resize((cell_w, cell_h), Image.Resampling.NEAREST), (x, y))
        for j, line in enumerate(caption_lines):
            draw.text((x, y + cell_h + 4 + 14 * j), line, fill="black", font=font)
    return board


def _plain(prompt: str) -> str:
    """The prompt as read: tags dropped, names kept ("<alice>woman</alice>" -> "alice (woman)")."""
    return re.sub(r"<([a-z0-9_-]+)>(.*?)</\1>", lambda m: m.group(2) if m.group(1).startswith("subj")
                  else f"{m.group(1)} ({m.group(2)})", prompt)


def load_story(path: str | os.PathLike) -> Story:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"story file {path} not found; see examples/story-mini-world.yaml")
    return parse_story(path.read_text(), where=str(path), base_dir=path.parent)


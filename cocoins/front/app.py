"""`cocoins app`: a Gradio page on a trained mapper. Create or pick a character, type prompts, generate into a
gallery, download the character's files, run a short story.

Every render goes through `CoCoInsPipeline.__call__`, so the page draws the pixels the API and the CLI draw
for the same arguments. One render runs at a time (a queue): two browsers are served in turn. Bad input
(an unknown character, a malformed tag, a wrong code file, an absurd size or step count) is answered in the
status line and the server keeps running. The page has no path fields: characters are opened by their
checked names inside the library folder, uploads are read from Gradio's upload cache, and downloads are
written to a temporary export folder that is the only extra folder Gradio may serve.

A character can also come from an uploaded photo (a code fitted to it once, cocoins.characters.from_photo) or
be cast distinct from the library (cocoins.characters.looks) when the app has the identity metric.
"""

from __future__ import annotations

import html
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cocoins.characters.codes import code_from_seed, file_sha256, read_code_file
from cocoins.characters.library import (Character, CharacterExists, CharacterForOtherMapper, CharacterLibrary,
                                       UnknownCharacter)
from cocoins.characters.looks import LOOK_GUIDANCE, LOOK_NOUN, LOOK_STEPS, IdentityMetric, LookSettings
from cocoins.characters.photo import MAX_PHOTO_BYTES
from cocoins.characters.prompts import check_name
from cocoins.method.code_inversion import CodeInversionConfig
from cocoins.front.sheet import render_sheet
from cocoins.front.story import parse_story, render_story
from cocoins.runtime import UserError

EXAMPLE_STORY = Path(__file__).resolve().parents[2] / "examples" / "story-mini-world.yaml"
MAX_STEPS = 150          # per render in the app; the API allows more
MAX_STORY_PANELS = 8
PAGE_CSS = "#gallery img, #storyboard img, #sheet img { image-rendering: pixelated; }"   # small models: 32 px images
SHEET_MIN_HEIGHT = 128   # a sheet of small images is scaled up by whole factors to at least this height


@dataclass(frozen=True)
class AppLimits:
    max_side: int
    max_steps: int = MAX_STEPS

    @classmethod
    def for_model(cls, default_size: int) -> "AppLimits":
        return cls(max_side=max(2 * default_size, 512))


def _int(value, what: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what}: enter a whole number") from None
    if number != int(number):
        raise UserError(f"{what} {value}: enter a whole number")
    return int(number)


class FrontApp:
    """The page's handlers, separate from the widgets so they can be called directly."""

    def __init__(self, pipe, library: CharacterLibrary, export_dir: Path, identity: IdentityMetric | None = None,
                 fit: CodeInversionConfig = CodeInversionConfig(), look_steps: int = LOOK_STEPS):
        self.pipe, self.library, self.export_dir = pipe, library, export_dir
        self.identity, self.fit = identity, fit   # distinct casting's metric (None: off); the photo fit's settings
        self.looks = LookSettings(look_steps, LOOK_GUIDANCE, pipe.default_size)   # as `character list` sees them
        pipe.library = library            # named prompts resolve in the app's library
        self.limits = AppLimits.for_model(pipe.default_size)
        self._lock = threading.Lock()     # the queue already serialises renders; this guards direct calls too

    def check(self, steps, guidance, height, width) -> tuple[int, float, int, int]:
        steps, height, width = _int(steps, "steps"), _int(height, "height"), _int(width, "width")
        if not 1 <= steps <= self.limits.max_steps:
            raise UserError(f"steps {steps}: use 1 to {self.limits.max_steps} in the app")
        for name, side in (("height", height), ("width", width)):
            if not 8 <= side <= self.limits.max_side or side % 8:
                raise UserError(f"{name} {side}: use a multiple of 8 from 8 to {self.limits.max_side} (this model "
                                f"draws {self.pipe.default_size})")
        try:
            guidance = float(guidance)
        except (TypeError, ValueError):
            raise UserError("guidance: enter a number (5 is typical)") from None
        self.pipe.check_settings(steps, guidance, height, width)
        return steps, guidance, height, width

    def create(self, name: str, seed, upload, distinct: bool = False, photo=None, mask=None,
               noun: str = LOOK_NOUN) -> str:
        """A new character from the code seed, or from an uploaded code file, or fitted to an uploaded photo, or
        (distinct) the first code from the seed on that looks like no one in the library."""
        name = check_name((name or "").strip())
        if name in self.library:
            raise CharacterExists(name, self.library.root)
        if sum(map(bool, (upload, photo, distinct))) > 1:
            raise UserError("make a character from one thing: a code file, a photo, or the code seed (with or "
                            "without distinct); clear the others")
        if photo:
            character, how = self._from_photo(name, photo, mask, noun or LOOK_NOUN)
        elif upload:
            z = read_code_file(upload, self.pipe.code_dim, what="the uploaded code file")
            character, how = Character(name, z, self.pipe.mapper_sha256, {"code_file_sha256": file_sha256(upload)}), ""
        elif distinct:
            character, how = self._distinct(name, _int(seed, "code seed"))
        else:
            seed = _int(seed, "code seed")
            character, how = Character(name, code_from_seed(seed, self.pipe.code_dim), self.pipe.mapper_sha256,
                                       {"code_seed": seed}), ""
        self.library.add(character)
        return f"created {name}{how}; use it in a prompt as `<{name}>person</{name}>`"

    def _from_photo(self, name: str, photo, mask, noun: str) -> tuple[Character, str]:
        import time

        from cocoins.characters.from_photo import character_from_photo
        from cocoins.characters.photo import people_counter

        def read(path, what):
            if Path(path).stat().st_size > MAX_PHOTO_BYTES:
                raise UserError(f"{what} is over {MAX_PHOTO_BYTES >> 20} MiB; give a smaller image")
            return Path(path).read_bytes()

        counter = people_counter(bool(mask), self.pipe.default_size, "the uploaded photo", "a subject mask upload")
        start = time.perf_counter()
        with self._lock:
            character = character_from_photo(self.pipe, name, read(photo, "the uploaded photo"), counter, noun=noun,
                                             mask=read(mask, "the mask") if mask else None, cfg=self.fit,
                                             progress=False, what="the uploaded photo")
        return character, (f" from the photo in {time.perf_counter() - start:.1f} s (photo sha256 "
                           f"{character.source['photo_sha256'][:12]})")

    def _distinct(self, name: str, first_seed: int) -> tuple[Character, str]:
        from cocoins.characters.looks import distinct_character

        if self.identity is None:
            raise UserError("distinct casting needs the evaluation's identity metric: start the app with --identity "
                            "(models/identity in the mini-world, an ArcFace model folder at full scale)")
        with self._lock:
            character, result = distinct_character(self.pipe, self.library, name, self.identity, self.looks, first_seed)
        if result.nearest_name is None:
            return character, f" (code seed {result.seed}, the first of the cast)"
        verdict = "" if result.reached else f", the farthest of {result.tries}: none reached the minimum"
        return character, (f" (code seed {result.seed}; nearest cast member {result.nearest_name} at "
                           f"{result.nearest_distance:.3f}{verdict})")

    def message(self, err: UserError) -> str:
        """The status line for `err`, in the page's words: the fix for a missing or foreign character is the
        Create button above, not a CLI command, and no folder of the server shows."""
        if isinstance(err, UnknownCharacter):
            known = ", ".join(err.known) or "none yet"
            return (f"no character {err.name!r} yet (characters: {known}); make it with **Create character** above, "
                    "or name one from the list")
        if isinstance(err, CharacterExists):
            return f"character {err.name!r} already exists; pick another name"
        if isinstance(err, CharacterForOtherMapper):
            return (f"character {err.name!r} was made for another mapper and would draw someone else here; make a "
                    "new one with **Create character** above")
        text = str(err)
        for folder in sorted({str(self.library.root), str(self.export_dir)}, key=len, reverse=True):
            text = text.replace(folder, "the app's folder")
        return text

    def sheet(self, name: str, steps, height, width):
        """The character at four noise seeds in a plain portrait prompt, scaled up when the images are small."""
        if not name:
            raise UserError("pick a character for its sheet")
        steps, _, height, width = self.check(steps, 5.0, height, width)
        self.library.get(check_name(name))
        with self._lock:
            image, _ = render_sheet(self.pipe, name, num_inference_steps=steps, height=height, width=width)
        scale = max(1, -(-SHEET_MIN_HEIGHT // image.height))
        return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image

    def export(self, name: str) -> list[str]:
        if not name:
            raise UserError("pick a character to download")
        return [str(p) for p in self.library.export(check_name(name), self.export_dir)]

    def generate(self, prompt: str, seed, steps, guidance, height, width, negative: str):
        steps, guidance, height, width = self.check(steps, guidance, height, width)
        with self._lock:
            out = self.pipe(prompt, seed=_int(seed, "seed"), num_inference_steps=steps, guidance_scale=guidance,
                            height=height, width=width, negative_prompt=negative or None)
        return out.images[0]

    def story(self, text: str, steps, height, width):
        story = parse_story(text or "", where="the story")
        if len(story.panels) > MAX_STORY_PANELS:
            raise UserError(f"the story has {len(story.panels)} panels; the app runs up to {MAX_STORY_PANELS}")
        steps, _, height, width = self.check(steps, 5.0, height, width)
        out_dir = Path(tempfile.mkdtemp(dir=self.export_dir, prefix="story-"))
        with self._lock:
            board = render_story(story, self.pipe, out_dir, library=self.library,
                                 overrides={"steps": steps, "height": height, "width": width})
        return str(board)


def build_app(front: FrontApp):
    """The Gradio Blocks page for `front`."""
    import gradio as gr

    def guarded(fn, n_outputs: int):
        """Run fn; on a user error leave the outputs as they were and say why in the status line."""
        def run(*args):
            try:
                return fn(*args)
            except UserError as err:
                return (*[gr.skip()] * n_outputs, "**error:** " + html.escape(front.message(err)))
        return run

    def choices(selected=None):
        return gr.Dropdown(choices=front.library.names(), value=selected)

    def create(name, seed, upload, distinct, photo, mask, noun):
        message = front.create(name, seed, upload, distinct, photo, mask, noun)
        return choices(name.strip()), html.escape(message)

    def download(name):
        return front.export(name), f"the files of {name}: keep both, `cocoins character import` reads them"

    def generate(prompt, seed, steps, guidance, height, width, negative, gallery):
        image = front.generate(prompt, seed, steps, guidance, height, width, negative)
        items = [(item[0] if isinstance(item, (tuple, list)) else item) for item in (gallery or [])]
        return [*items, image], html.escape(f"generated {prompt!r} with seed {int(float(seed))}")

    def story(text, steps, height, width):
        return front.story(text, steps, height, width), "story rendered"

    def sheet(name, steps, height, width):
        return front.sheet(name, steps, height, width), html.escape(f"the sheet of {name}: four noise seeds")

    size = front.pipe.default_size
    with gr.Blocks(title="CoCoIns") as page:
        gr.Markdown("# CoCoIns: characters you can keep\nCreate a character, then name it in a prompt: "
                    "`a photo of a <alice>woman</alice> in a green park`.")
        with gr.Row():
            character = gr.Dropdown(front.library.names(), label="character", elem_id="character",
                                    allow_custom_value=False)
            new_name = gr.Textbox(label="new character name", placeholder="alice", elem_id="new-name")
            new_seed = gr.Number(value=0, precision=0, label="code seed", elem_id="new-seed")
            upload = gr.File(label="or a code file (.safetensors)", file_types=[".safetensors"], type="filepath",
                             height=140, elem_id="upload")
        with gr.Row():
            photo = gr.File(label="or a photo of one person", file_types=["image"], type="filepath", height=140,
                            elem_id="photo")
            photo_mask = gr.File(label="its subject mask (small models)", file_types=["image"], type="filepath",
                                 height=140, elem_id="photo-mask")
            noun = gr.Textbox(value=LOOK_NOUN, label="the photo's person is a", elem_id="noun")
            distinct = gr.Checkbox(label="distinct: a code that looks like no one in the library",
                                   interactive=front.identity is not None, elem_id="distinct")
        with gr.Row():
            create_button = gr.Button("Create character", elem_id="create")
            sheet_button = gr.Button("Character sheet", elem_id="sheet-button")
            download_button = gr.Button("Download character files", elem_id="download")
            files = gr.File(label="character files", file_count="multiple", interactive=False,
                            height=140, elem_id="files")
        prompt = gr.Textbox(label="prompt", placeholder="a photo of a <alice>woman</alice> in a green park",
                            elem_id="prompt")
        with gr.Row():
            seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
            steps = gr.Number(value=20, precision=0, label="steps", elem_id="steps")
            guidance = gr.Number(value=5.0, label="guidance", elem_id="guidance")
            height = gr.Number(value=size, precision=0, label="height", elem_id="height")
            width = gr.Number(value=size, precision=0, label="width", elem_id="width")
        negative = gr.Textbox(label="negative prompt (optional)", elem_id="negative")
        generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
        status = gr.Markdown("", elem_id="status")
        # A compact grid: fit_columns=False keeps each image a column of eight wide instead of stretching two
        # images over the page.
        gallery = gr.Gallery(label="gallery", columns=8, fit_columns=False, height="auto", object_fit="contain",
                             format="png", interactive=False, elem_id="gallery")
        sheet_image = gr.Image(label="character sheet", format="png", type="pil", interactive=False, height=160,
                               elem_id="sheet")
        with gr.Accordion("Story", open=False):
            story_text = gr.Code(EXAMPLE_STORY.read_text() if EXAMPLE_STORY.is_file() else "", language="yaml",
                                 label="story (YAML)", elem_id="story")
            story_button = gr.Button("Run story", elem_id="run-story")
            board = gr.Image(label="storyboard", format="png", type="filepath", interactive=False,
                             elem_id="storyboard")

        page.load(lambda: choices(), outputs=character)      # characters made since the page was built
        create_button.click(guarded(create, 1), [new_name, new_seed, upload, distinct, photo, photo_mask, noun],
                            [character, status])
        download_button.click(guarded(download, 1), [character], [files, status])
        sheet_button.click(guarded(sheet, 1), [character, steps, height, width], [sheet_image, status])
        generate_button.click(guarded(generate, 1), [prompt, seed, steps, guidance, height, width, negative,
                                                     gallery], [gallery, status])
        story_button.click(guarded(story, 1), [story_text, steps, height, width], [board, status])
    return page


def launch(pipe, library: CharacterLibrary, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
           identity: IdentityMetric | None = None, fit: CodeInversionConfig = CodeInversionConfig()):
    """Start the app; returns the running Blocks (with `block=False`) so tests can drive and close it."""
    export_dir = Path(tempfile.mkdtemp(prefix="cocoins-app-"))
    page = build_app(FrontApp(pipe, library, export_dir, identity, fit))
    page.queue(default_concurrency_limit=1, max_size=32)
    page.launch(server_name=host, server_port=port, prevent_thread_lock=not block, allowed_paths=[str(export_dir)],
                show_error=False, quiet=not block, css=PAGE_CSS)
    return page

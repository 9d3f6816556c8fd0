"""`cocoins character ...`, `cocoins story` and `cocoins app`: the CLI side of the front (cocoins.cli wires them).

    cocoins character new alice --seed 7 --mapper models/mapper     # or --from-code z.safetensors
    cocoins character list | show alice --model models/base | rm alice
    cocoins character export alice --out shared/ ; cocoins character import shared/alice.json
    cocoins story examples/story-mini-world.yaml --out story/
    cocoins app                                                     # http://127.0.0.1:7860
"""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path

from cocoins.front.options import add_command, add_device_options, add_sampling_options, open_pipeline
from cocoins.front.sheet import SHEET_PROMPT, SHEET_SEEDS, render_sheet
from cocoins.runtime import UserError

DEFAULT_MODEL, DEFAULT_MAPPER = "models/base", "models/mapper"


def mapper_identity(mapper_dir: str) -> tuple[str, int]:
    """(sha256 of the mapper's weights, code size c) without loading the network."""
    from cocoins.method.mapper import CONFIG_NAME, mapper_fingerprint, weights_path

    directory = Path(mapper_dir)
    if not (directory / CONFIG_NAME).is_file() or not weights_path(directory).is_file():
        raise UserError(f"--mapper {mapper_dir} is not a trained mapper directory; use models/mapper after "
                        "`dvc repro train` (or `make repro`)")
    return mapper_fingerprint(directory), int(json.loads((directory / CONFIG_NAME).read_text())["code_dim"])


def _library(args: argparse.Namespace):
    from cocoins.characters.library import CharacterLibrary

    return CharacterLibrary(args.library)


def cmd_character_new(args: argparse.Namespace) -> int:
    from cocoins.characters.library import Character
    from cocoins.characters.codes import code_from_seed, file_sha256, read_code_file
    from cocoins.characters.prompts import check_name

    check_name(args.name)
    sha, code_dim = mapper_identity(args.mapper)
    if args.from_code is not None:
        if args.seed is not None:
            raise UserError("give --seed or --from-code, not both")
        z = read_code_file(args.from_code, code_dim, what="--from-code")
        source = {"code_file_sha256": file_sha256(args.from_code)}
    else:
        seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
        z, source = code_from_seed(seed, code_dim), {"code_seed": seed}
    character = _library(args).add(Character(args.name, z, sha, source))
    print(f"created {character.name} in {_library(args).root} (c = {code_dim}, mapper {sha[:12]}, {source})")
    return 0


def cmd_character_list(args: argparse.Namespace) -> int:
    library = _library(args)
    names = library.names()
    if not names:
        print(f"no characters in {library.root}; create one with `cocoins character new NAME --seed N`")
    for name in names:
        c = library.get(name)
        print(f"{name}\tc = {c.code_dim}\tmapper {c.mapper_sha256[:12]}\t{c.source}")
    return 0


def cmd_character_show(args: argparse.Namespace) -> int:
    """A preview sheet: the character in `--prompt` at several noise seeds, side by side."""
    character = _library(args).get(args.name)
    print(f"{character.name}: c = {character.code_dim}, mapper {character.mapper_sha256}, {character.source}")
    pipe = open_pipeline(args)
    sheet, prompt = render_sheet(pipe, args.name, args.prompt, args.seeds, num_inference_steps=args.steps,
                                 guidance_scale=args.guidance, height=args.height, width=args.width,
                                 negative_prompt=args.negative_prompt, batch_size=args.batch_size)
    path = Path(args.out or f"{args.name}-sheet.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    print(f"wrote {path} ({len(args.seeds)} seeds of {prompt!r})")
    return 0


def cmd_character_rm(args: argparse.Namespace) -> int:
    _library(args).remove(args.name)
    print(f"removed {args.name} from {_library(args).root}")
    return 0


def cmd_character_export(args: argparse.Namespace) -> int:
    paths = _library(args).export(args.name, args.out)
    print("wrote " + " and ".join(str(p) for p in paths))
    return 0


def cmd_character_import(args: argparse.Namespace) -> int:
    character = _library(args).import_pair(args.path, name=args.name, overwrite=args.force)
    print(f"imported {character.name} into {_library(args).root} (c = {character.code_dim}, "
          f"mapper {character.mapper_sha256[:12]})")
    return 0


def cmd_story(args: argparse.Namespace) -> int:
    from cocoins.characters.library import CharacterLibrary
    from cocoins.front.story import load_story, render_story

    story = load_story(args.story)
    defaults = {"steps": 30, "guidance": 5.0, "height": None, "width": None, **story.settings}
    for key, value in defaults.items():     # an option given on the command line wins over the story's settings
        if getattr(args, key) is None:
            setattr(args, key, value)
    pipe = open_pipeline(args)
    board = render_story(story, pipe, args.out, library=CharacterLibrary(args.library), batch_size=args.batch_size,
                         overrides={"steps": args.steps, "guidance": args.guidance, "height": args.height,
                                    "width": args.width})
    print(f"wrote {board} and {len(story.panels)} panels (panel-NN.png + .json) in {args.out}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from cocoins.front.app import launch
    from cocoins.characters.library import CharacterLibrary

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: use a port from 1 to 65535 (7860 is Gradio's usual one)")
    args.steps, args.guidance, args.height, args.width = 30, 5.0, None, None
    pipe = open_pipeline(args)
    library = CharacterLibrary(args.library)
    print(f"cocoins app: http://{args.host}:{args.port} (model {args.model}, mapper {args.mapper}, characters in "
          f"{library.root}); Ctrl+C stops it")
    launch(pipe, library, host=args.host, port=args.port)
    return 0


def _library_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--library", default=None, help="character folder (default $COCOINS_LIBRARY or characters/)")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="diffusers SDXL dir, hub id, or models/base (default)")
    p.add_argument("--mapper", default=DEFAULT_MAPPER, help="trained mapper dir (default models/mapper)")
    add_sampling_options(p)
    add_device_options(p)
    p.add_argument("--batch-size", type=int, default=1, help="images per UNet batch (speed only)")


def add_front_commands(sub) -> None:
    c = add_command(sub, "character", "keep characters: new, list, show, rm, export, import",
                    "cocoins character new alice --seed 7")
    csub = c.add_subparsers(dest="character_command", required=True)
    new = add_command(csub, "new", "create a character from a code seed or a code file",
                      "cocoins character new alice --seed 7")
    new.add_argument("name", help="lowercase letters, digits, - and _ (used in prompts as <name>...</name>)")
    new.add_argument("--seed", type=int, default=None, help="code seed (default: a random one, recorded)")
    new.add_argument("--from-code", default=None, help="a code file from `cocoins sample-code`")
    new.add_argument("--mapper", default=DEFAULT_MAPPER, help="the mapper the character is for (default "
                                                              "models/mapper)")
    new.set_defaults(func=cmd_character_new)
    ls = add_command(csub, "list", "the characters in the library", "cocoins character list")
    ls.set_defaults(func=cmd_character_list)
    show = add_command(csub, "show", "print a character and write its preview sheet",
                       "cocoins character show alice --out alice-sheet.png")
    show.add_argument("name")
    show.add_argument("--out", default=None, help="sheet PNG (default NAME-sheet.png)")
    show.add_argument("--prompt", default=None, help=f"default {SHEET_PROMPT.format(name='NAME')!r}")
    show.add_argument("--seeds", type=int, nargs="+", default=list(SHEET_SEEDS), help="one image per noise seed")
    _model_options(show)
    show.set_defaults(func=cmd_character_show)
    rm = add_command(csub, "rm", "remove a character", "cocoins character rm alice")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_character_rm)
    ex = add_command(csub, "export", "write NAME.safetensors + NAME.json to a folder, for another user",
                     "cocoins character export alice --out to-share/")
    ex.add_argument("name")
    ex.add_argument("--out", required=True, help="folder to write the pair into")
    ex.set_defaults(func=cmd_character_export)
    im = add_command(csub, "import", "add an exported pair (give its .json or .safetensors)",
                     "cocoins character import to-share/alice.json")
    im.add_argument("path")
    im.add_argument("--name", default=None, help="store it under another name")
    im.add_argument("--force", action="store_true", help="replace a character of the same name")
    im.set_defaults(func=cmd_character_import)
    for p in (new, ls, show, rm, ex, im):
        _library_option(p)

    st = add_command(sub, "story", "render a YAML story of panels into a storyboard (see examples/)",
                     "cocoins story examples/story-mini-world.yaml --out story/")
    st.add_argument("story", help="the story YAML, e.g. examples/story-mini-world.yaml")
    st.add_argument("--out", default="story", help="folder for storyboard.png and panel-NN.png/.json")
    _model_options(st)
    st.set_defaults(steps=None, guidance=None)     # the story's settings unless given here
    _library_option(st)
    st.set_defaults(func=cmd_story)

    app = add_command(sub, "app", "the web app (Gradio) on 127.0.0.1: make characters, render, run a story",
                      "cocoins app --port 7860")
    app.add_argument("--model", default=DEFAULT_MODEL, help="diffusers SDXL dir, hub id, or models/base (default)")
    app.add_argument("--mapper", default=DEFAULT_MAPPER, help="trained mapper dir (default models/mapper)")
    app.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    app.add_argument("--port", type=int, default=7860)
    add_device_options(app)
    _library_option(app)
    app.set_defaults(func=cmd_app)

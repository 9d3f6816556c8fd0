"""`cocoins character ...`, `cocoins story` and `cocoins app`: the CLI side of the front (cocoins.cli wires them).

    cocoins character new alice --seed 7 --mapper models/mapper     # or --from-code z.safetensors
    cocoins character new bob --distinct                            # a code that looks like no one in the cast
    cocoins character from-image me.png --name me                   # a code fitted to a photo of one person
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

from cocoins.characters.looks import LOOK_GUIDANCE, LOOK_NOUN, LOOK_STEPS
from cocoins.front.options import add_command, add_device_options, add_sampling_options, open_pipeline
from cocoins.front.sheet import SHEET_PROMPT, SHEET_SEEDS, render_sheet
from cocoins.runtime import UserError

DEFAULT_MODEL, DEFAULT_MAPPER, DEFAULT_IDENTITY = "models/base", "models/mapper", "models/identity"


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


def _casting(args: argparse.Namespace):
    """The pipeline, the evaluation's identity metric and the look settings `--distinct` and `list` measure with."""
    from cocoins.characters.looks import LookSettings, load_identity_metric

    metric = load_identity_metric(args.identity, device=args.device)   # a wrong folder fails before the model loads
    args.height = args.width = None
    pipe = open_pipeline(args)
    return pipe, metric, LookSettings(args.steps, args.guidance, pipe.default_size, args.noun)


def cmd_character_new(args: argparse.Namespace) -> int:
    from cocoins.characters.library import Character, CharacterExists
    from cocoins.characters.codes import code_from_seed, file_sha256, read_code_file
    from cocoins.characters.prompts import check_name

    check_name(args.name)
    sha, code_dim = mapper_identity(args.mapper)
    library = _library(args)
    if args.name in library:
        raise CharacterExists(args.name, library.root)
    if args.from_code is not None and (args.seed is not None or args.distinct):
        raise UserError("give --from-code alone: --seed and --distinct draw the code instead")
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    if args.from_code is not None:
        z = read_code_file(args.from_code, code_dim, what="--from-code")
        character = Character(args.name, z, sha, {"code_file_sha256": file_sha256(args.from_code)})
    elif args.distinct:
        from cocoins.characters.looks import distinct_character

        pipe, metric, settings = _casting(args)
        character, result = distinct_character(pipe, library, args.name, metric, settings, seed, args.min_distance,
                                               args.max_tries, args.batch_size)
        wanted = character.source["casting"]["min_distance"]
        if result.nearest_name is None:
            print(f"{args.name} is the first of the cast (no other character for this mapper)")
        elif result.reached:
            print(f"{args.name}: code seed {result.seed}, candidate {result.tries} of at most {args.max_tries}; "
                  f"nearest cast member {result.nearest_name} at {result.nearest_distance:.3f} "
                  f"(>= {wanted:g}, {metric.name})")
        else:
            print(f"{args.name}: none of {result.tries} candidates reached {wanted:g} from the cast; kept the "
                  f"farthest, code seed {result.seed}, nearest {result.nearest_name} at {result.nearest_distance:.3f} "
                  f"({metric.name}); more --max-tries or a lower --min-distance")
    else:
        character = Character(args.name, code_from_seed(seed, code_dim), sha, {"code_seed": seed})
    library.add(character)
    print(f"created {character.name} in {library.root} (c = {code_dim}, mapper {sha[:12]}, {character.source})")
    return 0


def cmd_character_from_image(args: argparse.Namespace) -> int:
    """A character whose code is fitted to the one person in a photo (base and mapper frozen)."""
    import dataclasses
    import time

    from cocoins.characters.from_photo import character_from_photo
    from cocoins.characters.library import CharacterExists
    from cocoins.characters.photo import people_counter
    from cocoins.characters.prompts import check_name
    from cocoins.method.code_inversion import CodeInversionConfig

    check_name(args.name, "--name")
    library = _library(args)
    if args.name in library:
        raise CharacterExists(args.name, library.root)
    if args.fit_steps < 1:
        raise UserError(f"--fit-steps {args.fit_steps}: use at least 1 (default {CodeInversionConfig.steps})")
    args.steps, args.guidance, args.height, args.width = 30, 5.0, None, None
    pipe = open_pipeline(args)
    counter = people_counter(args.mask is not None, pipe.default_size, f"PHOTO {args.photo}")
    cfg = dataclasses.replace(CodeInversionConfig(), steps=args.fit_steps)
    start = time.perf_counter()
    character = character_from_photo(pipe, args.name, args.photo, counter, noun=args.noun, mask=args.mask, cfg=cfg,
                                     seed=args.fit_seed)
    seconds = time.perf_counter() - start
    library.add(character)
    print(f"fitted {args.name} to {args.photo} in {seconds:.1f} s ({cfg.steps} steps on {args.device}); "
          f"created {args.name} in {library.root}")
    print(json.dumps(character.metadata(), sort_keys=True))
    return 0


def _origin(source: dict) -> str:
    """Where a character's code came from, in a few words (its full record is in NAME.json)."""
    if "photo_sha256" in source:
        return f"photo {source['photo_sha256'][:12]}"
    if "code_file_sha256" in source:
        return f"code file {source['code_file_sha256'][:12]}"
    if "code_seed" in source:
        return f"code seed {source['code_seed']}" + (" (distinct)" if "casting" in source else "")
    return "imported"


def cmd_character_list(args: argparse.Namespace) -> int:
    """The characters, each with its nearest other character by the identity metric (look-alikes flagged)."""
    from cocoins.characters.casting import nearest_pairs

    library = _library(args)
    names = library.names()
    if not names:
        print(f"no characters in {library.root}; create one with `cocoins character new NAME --seed N`")
        return 0
    characters = {name: library.get(name) for name in names}
    pairs, metric, note = {}, None, None
    if len(names) > 1 and not args.no_distances:
        ready = Path(args.mapper).is_dir() and Path(args.identity).is_dir()
        sha = mapper_identity(args.mapper)[0] if ready else None
        mine = ready and sum(c.mapper_sha256 == sha for c in characters.values()) > 1
        if not ready:
            note = (f"distances: give the trained models (--mapper {args.mapper}, --identity {args.identity} "
                    "not found; `make repro` makes them) or --no-distances")
        elif not mine:
            note = f"distances: fewer than two characters were made for --mapper {args.mapper}"
        else:
            from cocoins.characters.looks import cast_looks

            pipe, metric, settings = _casting(args)
            looks, left_out = cast_looks(pipe, library, metric, settings, args.batch_size)
            pairs = nearest_pairs(looks)
            if left_out:
                note = f"distances leave out {', '.join(left_out)} (made for another mapper, or no face found)"
    for name, c in characters.items():
        line = f"{name}\tc = {c.code_dim}\tmapper {c.mapper_sha256[:12]}\t{_origin(c.source)}"
        other, distance = pairs.get(name, (None, None))
        if other is not None:
            line += f"\tnearest {other} at {distance:.3f}"
            if distance < metric.lookalike:
                line += f"\tLOOK-ALIKE (< {metric.lookalike:g}, {metric.name})"
        print(line)
    if note:
        print(note)
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
    identity = None
    if args.identity is not None or Path(DEFAULT_IDENTITY).is_dir():     # the default only when it is there
        from cocoins.characters.looks import load_identity_metric

        identity = load_identity_metric(args.identity or DEFAULT_IDENTITY, device=args.device)
    args.steps, args.guidance, args.height, args.width = 30, 5.0, None, None
    pipe = open_pipeline(args)
    library = CharacterLibrary(args.library)
    print(f"cocoins app: http://{args.host}:{args.port} (model {args.model}, mapper {args.mapper}, characters in "
          f"{library.root}, distinct casting by {identity.name if identity else 'nothing: give --identity'}); "
          "Ctrl+C stops it")
    launch(pipe, library, host=args.host, port=args.port, identity=identity)
    return 0


def _library_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--library", default=None, help="character folder (default $COCOINS_LIBRARY or characters/)")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="diffusers SDXL dir, hub id, or models/base (default)")
    p.add_argument("--mapper", default=DEFAULT_MAPPER, help="trained mapper dir (default models/mapper)")
    add_sampling_options(p)
    add_device_options(p)
    p.add_argument("--batch-size", type=int, default=1, help="images per UNet batch (speed only)")


def _look_options(p: argparse.ArgumentParser) -> None:
    """How `--distinct` and `list` see a character: its sheet's portraits read by the identity metric."""
    p.add_argument("--model", default=DEFAULT_MODEL, help="diffusers SDXL dir, hub id, or models/base (default)")
    p.add_argument("--identity", default=DEFAULT_IDENTITY,
                   help="the evaluation's identity metric: the trait classifier (default models/identity, the "
                        "mini-world's) or an insightface model folder with .onnx files (ArcFace, full scale)")
    p.add_argument("--noun", default=LOOK_NOUN, help="the portraits' noun: a portrait of a <subj1>NOUN</subj1>")
    p.add_argument("--steps", type=int, default=LOOK_STEPS, help="denoising steps of the portraits")
    p.add_argument("--guidance", type=float, default=LOOK_GUIDANCE)
    p.add_argument("--batch-size", type=int, default=16, help="portraits per UNet batch (speed only)")
    add_device_options(p)


def add_front_commands(sub) -> None:
    c = add_command(sub, "character", "keep characters: new, from-image, list, show, rm, export, import",
                    "cocoins character new alice --seed 7")
    csub = c.add_subparsers(dest="character_command", required=True)
    new = add_command(csub, "new", "create a character from a code seed or a code file; --distinct: one who "
                      "looks like no one in the cast", "cocoins character new alice --seed 7")
    new.add_argument("name", help="lowercase letters, digits, - and _ (used in prompts as <name>...</name>)")
    new.add_argument("--seed", type=int, default=None, help="code seed (default: a random one, recorded); with "
                                                            "--distinct the first candidate's")
    new.add_argument("--from-code", default=None, help="a code file from `cocoins sample-code`")
    new.add_argument("--mapper", default=DEFAULT_MAPPER, help="the mapper the character is for (default "
                                                              "models/mapper)")
    new.add_argument("--distinct", action="store_true",
                     help="draw candidate codes (seed, seed + 1, ...) and keep the first whose portraits are at least "
                          "--min-distance from every character of the library (renders; needs --model, --identity)")
    new.add_argument("--min-distance", type=float, default=None,
                     help="1 - cos of two looks (default: the metric's: 0.15 for the trait classifier, 0.7 for "
                          "ArcFace)")
    new.add_argument("--max-tries", type=int, default=32, help="candidates before keeping the farthest one")
    _look_options(new)
    new.set_defaults(func=cmd_character_new)
    fi = add_command(csub, "from-image", "create a character from a photo of one person: a code fitted to it "
                     "once (base and mapper frozen)", "cocoins character from-image me.png --name me")
    fi.add_argument("photo", help="PNG or JPEG of one person, square-ish, at least the model's size")
    fi.add_argument("--name", required=True, help="the character's name")
    fi.add_argument("--mask", default=None, help="the photo's subject mask (white on the person); needed where the "
                                                 "model is too small for a face detector (the mini-world)")
    fi.add_argument("--noun", default="person", help="what the person is: person, woman, man (the fit's prompt)")
    fi.add_argument("--fit-steps", type=int, default=60, help="Adam steps on the code")
    fi.add_argument("--fit-seed", type=int, default=0, help="the fit's noises and starting draws")
    fi.add_argument("--model", default=DEFAULT_MODEL, help="diffusers SDXL dir, hub id, or models/base (default)")
    fi.add_argument("--mapper", default=DEFAULT_MAPPER, help="trained mapper dir (default models/mapper)")
    add_device_options(fi)
    fi.set_defaults(func=cmd_character_from_image)
    ls = add_command(csub, "list", "the characters in the library, each with its nearest other and their distance",
                     "cocoins character list")
    ls.add_argument("--mapper", default=DEFAULT_MAPPER, help="the mapper whose characters are compared")
    ls.add_argument("--no-distances", action="store_true", help="list only (no renders)")
    _look_options(ls)
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
    for p in (new, fi, ls, show, rm, ex, im):
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
    app.add_argument("--identity", default=None, help="the identity metric of the create button's distinct "
                                                      f"option (default {DEFAULT_IDENTITY} when it exists)")
    add_device_options(app)
    _library_option(app)
    app.set_defaults(func=cmd_app)

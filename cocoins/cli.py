"""The `cocoins` command: characters that stay themselves across prompts and seeds, on a trained mapper.

Every command's `--help` ends with an example; every output image gets a JSON sidecar that reproduces it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from cocoins.characters.codes import CODE_KEY, code_from_seed, write_code_file
from cocoins.front.options import add_command, add_device_options, add_sampling_options, open_pipeline
from cocoins.runtime import UserError

__all__ = ["main", "build_parser", "code_from_seed", "CODE_KEY"]


def _fail(message: str):
    raise UserError(message)


def _resolved(prompt: str):
    from cocoins.characters.prompts import resolve_prompt

    try:
        return resolve_prompt(prompt)
    except UserError as err:
        _fail(f"--prompt: {err}")


def _subject(spec: tuple[str, object]):
    """A `--code-seed` / `--code-file` / sidecar code as a pipeline subject."""
    kind, value = spec
    if kind == "seed":
        return int(value)
    if kind == "file":
        return str(value)
    return torch.tensor(value, dtype=torch.float32)


def _render(pipe, prompts: list[str], codes: torch.Tensor | None, seeds: list[int], args: argparse.Namespace):
    return pipe.render(prompts, codes, seeds, args.steps, args.guidance, args.height, args.width,
                       args.negative_prompt, max(1, getattr(args, "batch_size", 1)), show_progress=True)


def _codes(pipe, specs: list[tuple[str, object]]) -> tuple[torch.Tensor, list[dict]]:
    """The codes [S, c] of `--code-seed` / `--code-file` options, in order, and their sidecar records."""
    pairs = [pipe._code(_subject(s)) for s in specs]
    return torch.stack([z for z, _ in pairs]), [r for _, r in pairs]


def _settings(args: argparse.Namespace) -> dict:
    return {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "seed": args.seed,
            "steps": args.steps, "guidance": args.guidance, "height": args.height, "width": args.width,
            "model": str(args.model), "device": str(args.device)}


def _mapper_record(pipe) -> dict | None:
    return None if pipe.mapper is None else {"dir": pipe.mapper_dir, "sha256": pipe.mapper_sha256}


def _write(image, out: str, sidecar: dict, args: argparse.Namespace) -> None:
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(out_path)
    sidecar["command"] = "cocoins " + shlex.join(args.argv)
    out_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {out_path} and {out_path.with_suffix('.json')}")


def _replay(args: argparse.Namespace) -> str | None:
    """Fill `args` from a generate sidecar; returns the mapper hash the image was made with."""
    path = Path(args.sidecar)
    if not path.is_file():
        _fail(f"--sidecar {path} not found; give the .json written beside a generated image")
    try:
        side = json.loads(path.read_text())
        for key in ("prompt", "negative_prompt", "seed", "steps", "guidance", "height", "width", "model"):
            setattr(args, key, side[key])
        args.mapper = side["mapper"]["dir"] if side.get("mapper") else None
        args.codes = [("seed", r["code_seed"]) if "code_seed" in r else ("z", r["z"]) for r in side["codes"]]
    except (ValueError, KeyError, TypeError):
        _fail(f"--sidecar {path} is not a cocoins image sidecar (JSON with prompt, seed, codes, ...)")
    return side["mapper"]["sha256"] if side.get("mapper") else None


def cmd_generate(args: argparse.Namespace) -> int:
    want_sha = _replay(args) if args.sidecar else None
    if not args.model or not args.prompt:
        _fail("generate needs --model and --prompt (or --sidecar FILE.json)")
    resolved = _resolved(args.prompt)
    if args.codes and not args.mapper:
        _fail("--code-seed / --code-file need --mapper (the trained mapper dir, e.g. models/mapper)")
    if args.mapper and resolved.subjects == 0:
        _fail("--prompt has no <subj1>...</subj1> tag; tag the subject to keep consistent")
    if resolved.names and args.codes:
        _fail("--prompt names its characters; drop --code-seed / --code-file (they go with <subjN> tags)")
    if args.mapper and not resolved.names and len(args.codes) != resolved.subjects:
        _fail(f"the prompt has {resolved.subjects} subject(s); give exactly one --code-seed or --code-file per "
              f"subject, in <subjN> order (got {len(args.codes)})")
    if resolved.names:
        from cocoins.characters.library import CharacterLibrary

        library = CharacterLibrary(args.library)
        for name in resolved.names:
            library.get(name)        # an unknown name fails before the model loads
    pipe = open_pipeline(args)
    if want_sha is not None and pipe.mapper_sha256 != want_sha:
        _fail(f"--mapper {args.mapper} is not the mapper {args.sidecar} was made with (sha256 differs); restore it")
    out = pipe(args.prompt, subjects=[_subject(c) for c in args.codes], seed=args.seed,
               num_inference_steps=args.steps, guidance_scale=args.guidance, height=args.height, width=args.width,
               negative_prompt=args.negative_prompt)
    _write(out.images[0], args.out, {**out.sidecars[0], "device": str(args.device)}, args)
    return 0


def cmd_sample_code(args: argparse.Namespace) -> int:
    if args.dim < 1:
        _fail(f"--dim {args.dim}: the code size c must be >= 1 (the mapper's code_dim, 256 by default)")
    out = write_code_file(args.out, code_from_seed(args.seed, args.dim), metadata={"code_seed": str(args.seed)})
    print(f"wrote {out} (z ~ N(0, I), c = {args.dim}, seed {args.seed}; same as --code-seed {args.seed})")
    return 0


def _one_subject(args: argparse.Namespace, what: str) -> None:
    resolved = _resolved(args.prompt)
    if resolved.names:
        _fail(f"--prompt: {what} takes <subj1>...</subj1> and codes from --code-seed / --code-file, not names")
    if resolved.subjects != 1:
        _fail(f"{what} takes a prompt with exactly one subject, <subj1>...</subj1>")


def cmd_interpolate(args: argparse.Namespace) -> int:
    """Fig. 8: the strip of images for codes interpolated from code A to code B, all from one noise seed."""
    from cocoins.method.latent_space import image_strip, interpolate_codes

    _one_subject(args, "interpolate")
    if len(args.codes) != 2:
        _fail(f"interpolate needs two codes (two of --code-seed / --code-file), got {len(args.codes)}")
    if args.frames < 2:
        _fail(f"--frames {args.frames}: a strip needs at least the two end frames")
    pipe = open_pipeline(args)
    ends, records = _codes(pipe, args.codes)
    codes, ts = interpolate_codes(ends[0], ends[1], args.frames, args.mode)
    images = _render(pipe, [args.prompt] * args.frames, codes[:, None], [args.seed] * args.frames, args)
    _write(image_strip(images), args.out, {**_settings(args), "codes": records, "mode": args.mode, "t": ts,
                                           "mapper": _mapper_record(pipe)}, args)
    return 0


def cmd_neighbors(args: argparse.Namespace) -> int:
    """Fig. 9: sample `count` codes, order them by cosine similarity of their pseudo-words to the query's,
    render the query and its nearest `show - 1` neighbours with one fixed noise."""
    from cocoins.method.latent_space import image_strip, neighbor_order

    _one_subject(args, "neighbors")
    if args.count < 2 or not 0 <= args.query < args.count or args.show < 0:
        _fail(f"need --count >= 2, 0 <= --query < --count and --show >= 0 (got {args.count}, {args.query}, "
              f"{args.show})")
    pipe = open_pipeline(args)
    seeds = list(range(args.first_code_seed, args.first_code_seed + args.count))
    codes, _ = _codes(pipe, [("seed", s) for s in seeds])
    words = pipe.pseudo_words(codes)                                       # [N, d]
    order, sims = neighbor_order(words.float().cpu(), args.query)
    shown = order[:args.show or len(order)]
    images = _render(pipe, [args.prompt] * len(shown), codes[shown][:, None], [args.seed] * len(shown), args)
    ranking = [{"rank": r, "code_seed": seeds[i], "cosine": round(float(sims[i]), 6), "shown": r < len(shown)}
               for r, i in enumerate(order)]
    _write(image_strip(images), args.out, {**_settings(args), "query_code_seed": seeds[args.query],
                                           "neighbors": ranking, "mapper": _mapper_record(pipe)}, args)
    return 0


def _code_option(kind: str):
    def parse(text: str):
        if kind == "seed":
            try:
                return ("seed", int(text))
            except ValueError:
                raise argparse.ArgumentTypeError(f"--code-seed takes an integer, got {text!r}") from None
        return ("file", text)
    return parse


def _render_options(p: argparse.ArgumentParser, mapper_required: bool) -> None:
    p.add_argument("--model", required=mapper_required, help="diffusers SDXL dir, hub id, or models/base")
    p.add_argument("--mapper", required=mapper_required,
                   help="trained mapper dir (models/mapper)" + ("" if mapper_required else "; omit for plain SDXL"))
    p.add_argument("--prompt", required=mapper_required, help='e.g. "a <subj1>man</subj1> reading in a cafe"')
    p.add_argument("--seed", type=int, default=0, help="initial-noise seed (fixed across a strip)")
    p.add_argument("--out", required=True, help="PNG path; a .json sidecar is written beside it")
    add_sampling_options(p)
    add_device_options(p)


def _code_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--code-seed", dest="codes", type=_code_option("seed"), action="append", default=[],
                   help="draw a code z ~ N(0, I) from this seed (one per subject, in order)")
    p.add_argument("--code-file", dest="codes", type=_code_option("file"), action="append",
                   help=f"a safetensors file with a tensor '{CODE_KEY}' [c] (from `cocoins sample-code`)")


class _Parser(argparse.ArgumentParser):
    """argparse with user errors as one line and exit status 1, like every other user error of the CLI."""

    def error(self, message: str):
        raise SystemExit(f"error: {self.prog}: {message} (see `{self.prog} --help`)")


# How `cocoins --help` lists the commands: by what a user came to do. A name not registered is left out.
COMMAND_GROUPS = (
    ("make a character", ("character",)),
    ("render", ("generate", "sample-code", "interpolate", "neighbors")),
    ("tell a story", ("story",)),
    ("the web app", ("app",)),
    ("research", ("ablate", "score-folder", "preflight")),
)


def command_list(sub) -> str:
    """The registered commands under their COMMAND_GROUPS titles, each with its one-line help."""
    lines = []
    for title, names in COMMAND_GROUPS:
        present = [name for name in names if name in sub.choices]
        if present:
            lines.append(f"{title}:")
            lines += [f"  {name:<14}{sub.choices[name].description}" for name in present]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from cocoins.front.commands import add_front_commands

    parser = _Parser(prog="cocoins", usage="cocoins COMMAND [options]",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="`cocoins COMMAND --help`: the command's options and an example.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS)
    add_front_commands(sub)
    g = add_command(sub, "generate", "render a prompt with named characters or saved codes; the sidecar replays it",
                    'cocoins generate --model models/base --mapper models/mapper --prompt "a photo of a '
                    '<alice>woman</alice> in a green park" --out park.png')
    _render_options(g, mapper_required=False)
    _code_options(g)
    g.add_argument("--sidecar", help="re-render from a sidecar JSON (its settings replace the options above, "
                                     "except --out and the device options)")
    g.add_argument("--library", default=None, help="character library folder for named prompts "
                                                   "(default $COCOINS_LIBRARY or characters/)")
    g.set_defaults(func=cmd_generate)

    s = add_command(sub, "sample-code", "save the code z ~ N(0, I) of a seed as safetensors",
                    "cocoins sample-code --seed 7 --out alice.safetensors")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--dim", type=int, default=256, help="c, the mapper's code_dim")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sample_code)

    i = add_command(sub, "interpolate", "Fig. 8: images along a path between two codes, fixed noise",
                    'cocoins interpolate --model models/base --mapper models/mapper --prompt "a <subj1>man</subj1> '
                    'in a park" --code-seed 1 --code-seed 2 --frames 7 --out strip.png')
    _render_options(i, mapper_required=True)
    _code_options(i)
    i.add_argument("--frames", type=int, default=7, help="images in the strip, both ends included")
    i.add_argument("--mode", choices=["slerp", "lerp"], default="slerp",
                   help="slerp (default) stays on the shell where N(0, I) codes live; lerp cuts inside it")
    i.add_argument("--batch-size", type=int, default=4)
    i.set_defaults(func=cmd_interpolate)

    n = add_command(sub, "neighbors", "Fig. 9: images ordered by pseudo-word cosine similarity to one code",
                    'cocoins neighbors --model models/base --mapper models/mapper --prompt "a <subj1>man</subj1> '
                    'in a park" --count 100 --query 0 --show 10 --out strip.png')
    _render_options(n, mapper_required=True)
    n.add_argument("--count", type=int, default=100, help="codes to sample (paper: 100)")
    n.add_argument("--first-code-seed", type=int, default=0, help="code i is drawn from seed first + i")
    n.add_argument("--query", type=int, default=0, help="index of the query code among the sampled ones")
    n.add_argument("--show", type=int, default=10, help="images in the strip: the query and its nearest; 0: all")
    n.add_argument("--batch-size", type=int, default=4)
    n.set_defaults(func=cmd_neighbors)

    # Thin doors to the research tools; their own parsers own the options and the examples.
    for name, help_text in PASSTHROUGH_HELP.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    parser.description = __doc__.split("\n\n")[0] + "\n\n" + command_list(sub)
    return parser


PASSTHROUGH_HELP = {
    "ablate": "queue, run and tabulate a paper table's ablation rows (cocoins ablate table3 --help)",
    "score-folder": "score any folder of images from a manifest (cocoins score-folder --help)",
    "preflight": "check every stage's models, files and services before a long run (cocoins preflight --help)",
}


def _passthrough(name: str, argv: list[str]) -> int:
    if name == "ablate":
        from cocoins.eval.ablate import main as tool
    elif name == "score-folder":
        from cocoins.eval.score_folder import main as tool
    else:
        from cocoins.preflight import main as tool
    return tool(argv) or 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH_HELP:
        return _passthrough(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except UserError as err:     # a problem the user can fix: one line, exit status 1, no traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    sys.exit(main())

"""The `cocoins` command: render the same subject again from a saved latent code, and look at the code space.

    cocoins generate --model models/base --mapper models/mapper \\
        --prompt "a <subj1>man</subj1> reading in a cafe" --code-seed 7 --seed 1 --steps 30 --out out.png
    cocoins generate --sidecar out.json --out again.png           # the same image again, from its sidecar
    cocoins sample-code --seed 7 --dim 256 --out z.safetensors     # the code --code-seed 7 draws, as a file
    cocoins interpolate --model M --mapper F --prompt P --code-seed 1 --code-seed 2 --frames 7 --out strip.png
    cocoins neighbors --model M --mapper F --prompt P --count 100 --query 0 --show 10 --out strip.png

One `--code-seed` or `--code-file` per subject (`<subj1>`, `<subj2>`, ... in the order given). Without
`--mapper`, generate renders the plain model. Every output image gets a JSON sidecar that reproduces it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CODE_KEY = "z"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fail(message: str):
    raise SystemExit(f"error: {message}")


def code_from_seed(seed: int, code_dim: int) -> torch.Tensor:
    """z ~ N(0, I) (Eq. 3) drawn from `seed`, [c]; the same draw as the evaluation protocol's code seeds."""
    from cocoins.method.mapper import sample_codes

    return sample_codes(torch.Generator().manual_seed(int(seed)), 1, 1, code_dim)[0, 0]


def load_codes(specs: list[tuple[str, object]], code_dim: int) -> tuple[torch.Tensor, list[dict]]:
    """One code per subject, in order, [S, c]: ("seed", n) draws z ~ N(0, I); ("file", path) reads a saved
    `z`; ("z", values) is a code replayed from a sidecar. Also returns the sidecar record of each code."""
    codes, records = [], []
    for kind, value in specs:
        if kind == "seed":
            codes.append(code_from_seed(int(value), code_dim))
            records.append({"code_seed": int(value)})
            continue
        if kind == "file":
            path = Path(value)
            if not path.is_file():
                _fail(f"code file {path} not found; write one with `cocoins sample-code`")
            tensors = load_file(str(path))
            if CODE_KEY not in tensors or tensors[CODE_KEY].shape != (code_dim,):
                _fail(f"{path} must hold a tensor '{CODE_KEY}' of shape ({code_dim},) for this mapper")
            z = tensors[CODE_KEY].float()
            records.append({"code_file": str(path), "sha256": _sha256(path), "z": z.tolist()})
        else:
            z = torch.tensor(value, dtype=torch.float32)
            if z.shape != (code_dim,):
                _fail(f"a sidecar code has {z.numel()} values; this mapper takes c = {code_dim}")
            records.append({"z": z.tolist()})
        codes.append(z)
    return torch.stack(codes), records


def _subjects(prompt: str) -> int:
    from cocoins.data.tags import TagError, parse_tagged

    try:
        return max((s.index for s in parse_tagged(prompt).spans), default=0)
    except TagError as err:
        _fail(f"--prompt: {err}")


def _open(args: argparse.Namespace):
    """(pipe, encoder, mapper or None, mapper sidecar record or None) for the render options in `args`."""
    from cocoins.method.mapper import WEIGHTS_NAME, Mapper
    from cocoins.sdxl.encode import PromptEncoder
    from cocoins.sdxl.load import load_pipeline

    device = torch.device(args.device)
    pipe = load_pipeline(args.model, device="cpu" if args.cpu_offload else device,
                         dtype=torch.float16 if device.type == "cuda" else torch.float32)
    if args.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    mapper = record = None
    if args.mapper:
        mapper = Mapper.load(args.mapper, device=device).eval()
        record = {"dir": str(args.mapper), "sha256": _sha256(Path(args.mapper) / WEIGHTS_NAME)}
    return pipe, PromptEncoder.from_pipeline(pipe), mapper, record


def _pseudo_words(mapper, codes: torch.Tensor) -> torch.Tensor:
    """w = f(z) (Eq. 3) for codes [..., c], in fp32 on the mapper's device, one code at a time (see
    `pseudo_words_one_by_one`: a code's word must not depend on the codes rendered beside it)."""
    from cocoins.method.mapper import pseudo_words_one_by_one

    return pseudo_words_one_by_one(mapper, codes)


def _render(pipe, encoder, prompts: list[str], words: torch.Tensor | None, seeds: list[int],
            args: argparse.Namespace) -> list:
    """Images for prompts [N] with pseudo-words [N, S, d] (or None), `batch_size` at a time."""
    from tqdm.auto import tqdm

    from cocoins.sdxl.generate import generate

    images, size = [], max(1, getattr(args, "batch_size", 1))
    for i in tqdm(range(0, len(prompts), size), desc="render", disable=len(prompts) <= size):
        chunk = None if words is None else words[i:i + size]
        images += generate(pipe, encoder, prompts[i:i + size], chunk, seeds[i:i + size], steps=args.steps,
                           guidance=args.guidance, height=args.height, width=args.width,
                           negative_prompt=args.negative_prompt).images
    return images


def _settings(args: argparse.Namespace) -> dict:
    return {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "seed": args.seed,
            "steps": args.steps, "guidance": args.guidance, "height": args.height, "width": args.width,
            "model": str(args.model), "device": str(args.device)}


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
        _fail(f"sidecar {path} not found")
    side = json.loads(path.read_text())
    for key in ("prompt", "negative_prompt", "seed", "steps", "guidance", "height", "width", "model"):
        setattr(args, key, side[key])
    args.mapper = side["mapper"]["dir"] if side.get("mapper") else None
    args.codes = [("seed", r["code_seed"]) if "code_seed" in r else ("z", r["z"]) for r in side["codes"]]
    return side["mapper"]["sha256"] if side.get("mapper") else None


def cmd_generate(args: argparse.Namespace) -> int:
    want_sha = _replay(args) if args.sidecar else None
    if not args.model or not args.prompt:
        _fail("generate needs --model and --prompt (or --sidecar FILE.json)")
    subjects = _subjects(args.prompt)
    if args.codes and not args.mapper:
        _fail("--code-seed / --code-file need --mapper (the trained mapper dir, e.g. models/mapper)")
    if args.mapper and subjects == 0:
        _fail("--prompt has no <subj1>...</subj1> tag; tag the subject to keep consistent")
    if args.mapper and len(args.codes) != subjects:
        _fail(f"the prompt has {subjects} subject(s); give exactly one --code-seed or --code-file per "
              f"subject, in <subjN> order (got {len(args.codes)})")
    pipe, encoder, mapper, mapper_record = _open(args)
    if want_sha is not None and mapper_record["sha256"] != want_sha:
        _fail(f"{args.mapper} is not the mapper {args.sidecar} was made with (sha256 differs); restore it")
    words, records = None, []
    if mapper is not None:
        codes, records = load_codes(args.codes, mapper.config.code_dim)
        words = _pseudo_words(mapper, codes)[None]                        # [1, S, d]
    image = _render(pipe, encoder, [args.prompt], words, [args.seed], args)[0]
    _write(image, args.out, {**_settings(args), "codes": records, "mapper": mapper_record}, args)
    return 0


def cmd_sample_code(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({CODE_KEY: code_from_seed(args.seed, args.dim).contiguous()}, str(out),
              metadata={"code_seed": str(args.seed)})
    print(f"wrote {out} (z ~ N(0, I), c = {args.dim}, seed {args.seed}; same as --code-seed {args.seed})")
    return 0


def _one_subject(args: argparse.Namespace, what: str) -> None:
    if _subjects(args.prompt) != 1:
        _fail(f"{what} takes a prompt with exactly one subject, <subj1>...</subj1>")


def cmd_interpolate(args: argparse.Namespace) -> int:
    """Fig. 8: the strip of images for codes interpolated from code A to code B, all from one noise seed."""
    from cocoins.method.latent_space import image_strip, interpolate_codes

    _one_subject(args, "interpolate")
    if len(args.codes) != 2:
        _fail(f"interpolate needs two codes (two of --code-seed / --code-file), got {len(args.codes)}")
    if args.frames < 2:
        _fail(f"--frames {args.frames}: a strip needs at least the two end frames")
    pipe, encoder, mapper, mapper_record = _open(args)
    ends, records = load_codes(args.codes, mapper.config.code_dim)
    codes, ts = interpolate_codes(ends[0], ends[1], args.frames, args.mode)
    words = _pseudo_words(mapper, codes)[:, None]                         # [F, 1, d]
    images = _render(pipe, encoder, [args.prompt] * args.frames, words, [args.seed] * args.frames, args)
    _write(image_strip(images), args.out, {**_settings(args), "codes": records, "mode": args.mode, "t": ts,
                                           "mapper": mapper_record}, args)
    return 0


def cmd_neighbors(args: argparse.Namespace) -> int:
    """Fig. 9: sample `count` codes, order them by cosine similarity of their pseudo-words to the query's,
    render the query and its nearest `show - 1` neighbours with one fixed noise."""
    from cocoins.method.latent_space import image_strip, neighbor_order

    _one_subject(args, "neighbors")
    if args.count < 2 or not 0 <= args.query < args.count or args.show < 0:
        _fail(f"need --count >= 2, 0 <= --query < --count and --show >= 0 (got {args.count}, {args.query}, "
              f"{args.show})")
    pipe, encoder, mapper, mapper_record = _open(args)
    seeds = list(range(args.first_code_seed, args.first_code_seed + args.count))
    codes, _ = load_codes([("seed", s) for s in seeds], mapper.config.code_dim)
    words = _pseudo_words(mapper, codes)                                   # [N, d]
    order, sims = neighbor_order(words.float().cpu(), args.query)
    shown = order[:args.show or len(order)]
    images = _render(pipe, encoder, [args.prompt] * len(shown), words[shown][:, None], [args.seed] * len(shown),
                     args)
    ranking = [{"rank": r, "code_seed": seeds[i], "cosine": round(float(sims[i]), 6), "shown": r < len(shown)}
               for r, i in enumerate(order)]
    _write(image_strip(images), args.out, {**_settings(args), "query_code_seed": seeds[args.query],
                                           "neighbors": ranking, "mapper": mapper_record}, args)
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
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cpu-offload", action="store_true", help="diffusers model CPU offload (low VRAM)")
    p.add_argument("--out", required=True, help="PNG path; a .json sidecar is written beside it")


def _code_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--code-seed", dest="codes", type=_code_option("seed"), action="append", default=[],
                   help="draw a code z ~ N(0, I) from this seed (one per subject, in order)")
    p.add_argument("--code-file", dest="codes", type=_code_option("file"), action="append",
                   help=f"a safetensors file with a tensor '{CODE_KEY}' [c] (from `cocoins sample-code`)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cocoins", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="render a tagged prompt with saved codes")
    _render_options(g, mapper_required=False)
    _code_options(g)
    g.add_argument("--sidecar", help="re-render from a sidecar JSON (its settings replace the options above, "
                                     "except --out, --device and --cpu-offload)")
    g.set_defaults(func=cmd_generate)

    s = sub.add_parser("sample-code", help="save the code z ~ N(0, I) of a seed as safetensors")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--dim", type=int, default=256, help="c, the mapper's code_dim")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sample_code)

    i = sub.add_parser("interpolate", help="Fig. 8: images along a path between two codes, fixed noise")
    _render_options(i, mapper_required=True)
    _code_options(i)
    i.add_argument("--frames", type=int, default=7, help="images in the strip, both ends included")
    i.add_argument("--mode", choices=["slerp", "lerp"], default="slerp",
                   help="slerp (default) stays on the shell where N(0, I) codes live; lerp cuts inside it")
    i.add_argument("--batch-size", type=int, default=4)
    i.set_defaults(func=cmd_interpolate)

    n = sub.add_parser("neighbors", help="Fig. 9: images ordered by pseudo-word cosine similarity to one code")
    _render_options(n, mapper_required=True)
    n.add_argument("--count", type=int, default=100, help="codes to sample (paper: 100)")
    n.add_argument("--first-code-seed", type=int, default=0, help="code i is drawn from seed first + i")
    n.add_argument("--query", type=int, default=0, help="index of the query code among the sampled ones")
    n.add_argument("--show", type=int, default=10, help="images in the strip: the query and its nearest; 0: all")
    n.add_argument("--batch-size", type=int, default=4)
    n.set_defaults(func=cmd_neighbors)

    # Thin doors to the evaluation tools; their own parsers own the options.
    for name, help_text in PASSTHROUGH_HELP.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


PASSTHROUGH_HELP = {
    "ablate": "queue, run and tabulate a paper table's ablation rows (cocoins ablate table3 --help)",
    "score-folder": "score any folder of images from a manifest (cocoins score-folder --help)",
}


def _passthrough(name: str, argv: list[str]) -> int:
    if name == "ablate":
        from cocoins.eval.ablate import main as tool
    else:
        from cocoins.eval.score_folder import main as tool
    tool(argv)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH_HELP:
        return _passthrough(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The `cocoins` command: generate the same subject again from a saved latent code.

    cocoins generate --model models/base --mapper models/mapper \
        --prompt "a <subj1>man</subj1> reading in a cafe" --code-seed 7 --seed 1 --steps 30 --out out.png

One `--code-seed` or `--code-file` per subject (`<subj1>`, `<subj2>`, ... in order). Without `--mapper`
the prompt is rendered by the plain model. Every image gets a JSON sidecar that reproduces it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

CODE_KEY = "z"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_codes(code_seeds: list[int], code_files: list[str], code_dim: int) -> tuple[torch.Tensor, list[dict]]:
    """One code per subject, [S, c]: seeds draw z ~ N(0, I) (Eq. 3); files hold a saved `z`."""
    from cocoins.method.mapper import sample_codes

    codes, records = [], []
    for seed in code_seeds:
        codes.append(sample_codes(torch.Generator().manual_seed(seed), 1, 1, code_dim)[0, 0])
        records.append({"code_seed": seed})
    for name in code_files:
        path = Path(name)
        if not path.is_file():
            raise SystemExit(f"error: code file {path} not found")
        tensors = load_file(str(path))
        if CODE_KEY not in tensors or tensors[CODE_KEY].shape != (code_dim,):
            raise SystemExit(f"error: {path} must hold a tensor '{CODE_KEY}' of shape ({code_dim},)")
        codes.append(tensors[CODE_KEY].float())
        records.append({"code_file": str(path), "sha256": _sha256(path)})
    return torch.stack(codes), records


def cmd_generate(args: argparse.Namespace) -> int:
    from cocoins.data.tags import TagError, parse_tagged
    from cocoins.method.mapper import Mapper
    from cocoins.sdxl.encode import PromptEncoder
    from cocoins.sdxl.generate import generate
    from cocoins.sdxl.load import load_pipeline

    try:
        tagged = parse_tagged(args.prompt)
    except TagError as err:
        raise SystemExit(f"error: --prompt: {err}")
    device = torch.device(args.device)
    pipe = load_pipeline(args.model, device="cpu" if args.cpu_offload else device,
                         dtype=torch.float16 if device.type == "cuda" else torch.float32)
    if args.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    encoder = PromptEncoder.from_pipeline(pipe)
    pseudo_words, code_records, mapper_record = None, [], None
    if args.mapper:
        mapper = Mapper.load(args.mapper, device=device).eval()
        subjects = max((s.index for s in tagged.spans), default=0)
        given = len(args.code_seed) + len(args.code_file)
        if subjects == 0:
            raise SystemExit("error: --prompt has no <subj1>...</subj1> tag; tag the subject to keep consistent")
        if given != subjects:
            raise SystemExit(f"error: the prompt has {subjects} subject(s); give exactly one --code-seed or "
                             f"--code-file per subject (got {given})")
        codes, code_records = load_codes(args.code_seed, args.code_file, mapper.config.code_dim)
        with torch.no_grad():
            pseudo_words = mapper(codes.to(device))[None]
        mapper_record = {"dir": args.mapper, "sha256": _sha256(Path(args.mapper) / "mapper.safetensors")}
    result = generate(pipe, encoder, [args.prompt], pseudo_words, [args.seed], steps=args.steps,
                      guidance=args.guidance, height=args.height, width=args.width,
                      negative_prompt=args.negative_prompt)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.images[0].save(out)
    sidecar = {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "codes": code_records,
               "seed": args.seed, "steps": args.steps, "guidance": args.guidance, "height": args.height,
               "width": args.width, "model": str(args.model), "mapper": mapper_record,
               "command": "cocoins " + " ".join(sys.argv[1:])}
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cocoins", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="render a tagged prompt with saved codes")
    g.add_argument("--model", required=True, help="diffusers SDXL dir, hub id, or models/base")
    g.add_argument("--mapper", help="trained mapper dir (models/mapper); omit for the plain model")
    g.add_argument("--prompt", required=True, help='e.g. "a <subj1>man</subj1> reading in a cafe"')
    g.add_argument("--code-seed", type=int, action="append", default=[], help="one per subject")
    g.add_argument("--code-file", action="append", default=[], help="safetensors with a tensor 'z' [c]")
    g.add_argument("--seed", type=int, default=0, help="initial-noise seed")
    g.add_argument("--steps", type=int, default=30)
    g.add_argument("--guidance", type=float, default=5.0)
    g.add_argument("--height", type=int, default=1024)
    g.add_argument("--width", type=int, default=1024)
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--cpu-offload", action="store_true", help="diffusers model CPU offload (low VRAM)")
    g.add_argument("--out", required=True)
    g.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

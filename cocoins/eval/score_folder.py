"""Score any folder of images with a manifest, so other methods (StoryDiffusion, ConsiStory, 1Prompt1Story,
DreamBooth, ...) become rows of the same tables as CoCoIns.

    python -m cocoins.eval.score_folder MANIFEST --out metrics.json [--root DIR] [--clip-model ID_OR_DIR]
        [--face dlib|arcface|none] [--arcface-dir DIR] [--dreamsim-cache DIR] [--fid-weights FILE]
        [--fid-reference METHOD] [--strict]

MANIFEST is a CSV or Parquet file with one row per image: `path, method, identity, prompt, subject, set`
(optionally `setting`). `identity` groups the images that should show the same subject (Sim) and separates
the ones that should differ (Div); `prompt` is the plain text the image was generated from (CLIP); `set` is
portraits / scenes or any name. Relative paths are taken from `--root` (default: the manifest's folder).
FID compares each method with `--fid-reference`'s images of the same set (default: base), e.g. a method's
base model rendered on the same prompts. The pipeline's own manifest is reports/eval/samples.parquet
(paths relative to the repo root: pass `--root .`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from cocoins.eval.report import nested_metrics
from cocoins.eval.scoring import Backends, MetricConfig, Scores, check_manifest, extract, load_rgb, score_table
from cocoins.io import write_json
from cocoins.runtime import UserError


def read_manifest(path: str | Path, root: str | Path | None = None) -> pd.DataFrame:
    """The manifest with `path` resolved to files that exist (or a UserError naming the first missing one)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest {path} not found")
    if path.suffix.lower() == ".parquet":
        table = pd.read_parquet(path)
    elif path.suffix.lower() in (".csv", ".tsv"):
        table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False)
    else:
        raise UserError(f"manifest {path} must be .csv, .tsv or .parquet")
    try:
        table = check_manifest(table, str(path))
    except ValueError as err:
        raise UserError(str(err)) from None
    base = Path(root) if root is not None else path.parent
    resolved = [p if Path(p).is_absolute() else str(base / p) for p in table["path"]]
    missing = [p for p in resolved if not Path(p).is_file()]
    if missing:
        raise UserError(f"{len(missing)} image(s) of {path} not found, first: {missing[0]}; paths are read relative "
                        f"to {base} (set --root)")
    return table.assign(file=resolved)


def score_manifest(table: pd.DataFrame, config: MetricConfig) -> Scores:
    """Every metric of every (set, method) of a resolved manifest (column `file` holds each image's path)."""
    backends = Backends.load(config)
    per = extract(table, lambda i: load_rgb(table.at[i, "file"]), backends, config.batch_size)
    return score_table(table, per, backends, config.fid_reference)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cocoins.eval.score_folder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--root", default=None, help="folder that relative image paths start from")
    parser.add_argument("--face", default="dlib", choices=["dlib", "arcface", "none"])
    parser.add_argument("--arcface-dir", default=None)
    parser.add_argument("--clip-model", default=MetricConfig.clip_model)
    parser.add_argument("--dreamsim-cache", default=None)
    parser.add_argument("--dreamsim-type", default=MetricConfig.dreamsim_type)
    parser.add_argument("--fid-weights", default=None)
    parser.add_argument("--fid-reference", default="base")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strict", action="store_true", help="an absent metric model is an error, not null")
    args = parser.parse_args(argv)
    config = MetricConfig(face_backend=args.face, arcface_dir=args.arcface_dir, clip_model=args.clip_model,
                          dreamsim_cache=args.dreamsim_cache, dreamsim_type=args.dreamsim_type,
                          fid_weights=args.fid_weights, fid_reference=args.fid_reference, strict=args.strict,
                          batch_size=args.batch_size, device=args.device)
    try:
        scores = score_manifest(read_manifest(args.manifest, args.root), config)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    write_json(nested_metrics(scores), args.out)
    for set_name, methods in scores.sets.items():
        for method, m in methods.items():
            shown = ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))
            print(f"{set_name:<10} {method:<16} {m['images']:>5} images  {shown}")
    for metric, reason in scores.unavailable.items():
        print(f"null {metric}: {reason}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Build every rehearsal model into one folder, one at a time (each is freed before the next), and print sizes.

    python -m cocoins.rehearsal.build OUT_DIR [--depth reduced|full] [--seed 0]

The params the pipeline needs to use them: models.sdxl = <sdxl>, caption.model = <llava>, mask.detector =
<grounding_dino>, mask.sam2_config = architectures.SAM2_L_CONFIG, mask.sam2_checkpoint = <sam2_checkpoint>,
mask.sam2_overrides = architectures.sam2_overrides(depth), eval.clip_model = <clip>, eval.fid_weights =
<fid_weights>. ArcFace and DreamSim are not built (see models.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cocoins.rehearsal.architectures import DEPTHS, check_depth
from cocoins.rehearsal.data_models import build_grounding_dino, build_llava_next, build_sam2_checkpoint
from cocoins.rehearsal.models import build_clip_vit_l14, build_fid_inception, build_sdxl, disk_bytes, parameter_count

BUILDERS = {
    "sdxl": lambda out, depth, seed: build_sdxl(out / "sdxl", depth, seed),
    "llava": lambda out, depth, seed: build_llava_next(out / "llava-next", depth, seed),
    "grounding_dino": lambda out, depth, seed: build_grounding_dino(out / "grounding-dino-base", depth, seed),
    "sam2_checkpoint": lambda out, depth, seed: build_sam2_checkpoint(out / "sam2" / "sam2.1_hiera_large.pt",
                                                                      depth, seed),
    "clip": lambda out, depth, seed: build_clip_vit_l14(out / "clip-vit-large-patch14", depth, seed),
    "fid_weights": lambda out, depth, seed: build_fid_inception(out / "fid" / "pt_inception-2015-12-05.pth", seed),
}


def build_all(out_dir: str | Path, depth: str, seed: int = 0) -> dict[str, str]:
    """Build every model under `out_dir`; returns {name: path} and prints parameters, GB on disk and seconds."""
    check_depth(depth)
    out = Path(out_dir)
    paths: dict[str, str] = {}
    total = 0
    for name, build in BUILDERS.items():
        start = time.perf_counter()
        path = build(out, depth, seed)
        size = disk_bytes(path)
        total += size
        paths[name] = str(path)
        print(f"{name:>16}: {parameter_count(path) / 1e6:9.1f} M parameters, {size / 1e9:6.2f} GB, "
              f"{time.perf_counter() - start:6.1f} s  ({path})", flush=True)
    print(f"{'total':>16}: {total / 1e9:.2f} GB on disk ({depth} depth)", flush=True)
    return paths


def main(argv=None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--depth", choices=DEPTHS, default="reduced")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return build_all(args.out_dir, args.depth, args.seed)


if __name__ == "__main__":
    main()

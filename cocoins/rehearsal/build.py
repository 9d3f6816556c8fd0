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

BUILDERS = {   # name: (builder, path under out_dir)
    "sdxl": (build_sdxl, "sdxl"),
    "llava": (build_llava_next, "llava-next"),
    "grounding_dino": (build_grounding_dino, "grounding-dino-base"),
    "sam2_checkpoint": (build_sam2_checkpoint, "sam2/sam2.1_hiera_large.pt"),
    "clip": (build_clip_vit_l14, "clip-vit-large-patch14"),
}
FID_WEIGHTS = "fid/pt_inception-2015-12-05.pth"


def build_all(out_dir: str | Path, depth: str, seed: int = 0, device: str = "cpu") -> dict[str, str]:
    """Build every model under `out_dir` (initialised on `device`); returns {name: path} and prints parameters,
    GB on disk and seconds per model. FID's Inception has one depth and is always built on the CPU."""
    check_depth(depth)
    out = Path(out_dir)
    paths: dict[str, str] = {}
    total = 0
    jobs = {name: (lambda b=build, r=rel: b(out / r, depth, seed, device=device))
            for name, (build, rel) in BUILDERS.items()}
    jobs["fid_weights"] = lambda: build_fid_inception(out / FID_WEIGHTS, seed)
    for name, build in jobs.items():
        start = time.perf_counter()
        path = build()
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
    parser.add_argument("--device", default="cpu",
                        help="where weights are initialised (cuda: much faster at full depth)")
    args = parser.parse_args(argv)
    return build_all(args.out_dir, args.depth, args.seed, args.device)


if __name__ == "__main__":
    main()

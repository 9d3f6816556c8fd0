"""The README's figure of issue 25: a held-out person's photo, the character fitted to it in three scenes, and the
plain prompt in the same scenes and noises (the base drawing anyone), on the trained mini-world.

    nice -n 10 python benchmarks/from_image_figure.py --base /work/main/models/base \
        --mapper /work/main/models/mapper --out docs/images/from-photo.png

The person is the first of world seed 6000 (held out like benchmarks/from_image.py's, not picked by looking);
the photo and its mask are written beside the figure (`--keep-photo`) for `cocoins character from-image`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SCENES = ("park green", "night navy", "stage purple")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(ROOT / "models/base"))
    ap.add_argument("--mapper", default=str(ROOT / "models/mapper"))
    ap.add_argument("--person", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "docs/images/from-photo.png"))
    ap.add_argument("--keep-photo", action="store_true", help="also write PERSON.png and PERSON-mask.png")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import time

    import torch
    from PIL import Image

    from cocoins.characters.from_photo import character_from_photo
    from cocoins.characters.photo import MaskRegionCounter
    from cocoins.method.latent_space import image_strip
    from cocoins.pipeline import CoCoInsPipeline
    from cocoins.world.people import SCENE_PHRASES, ImageSpec, WorldConfig, draw_traits, render

    torch.set_num_threads(args.threads)
    pipe = CoCoInsPipeline.from_pretrained(args.base, mapper=args.mapper)
    pipe.sdxl.set_progress_bar_config(disable=True)
    size, world = pipe.default_size, 6000
    traits = draw_traits(world, args.person)
    photo, mask = render(ImageSpec("photo", (args.person,), "studio gray", args.person), {args.person: traits},
                         WorldConfig(seed=world, image_size=size))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    photo_path, mask_path = out.with_name(f"{out.stem}-person.png"), out.with_name(f"{out.stem}-person-mask.png")
    photo.convert("RGB").save(photo_path)
    mask.save(mask_path)
    noun = "man" if traits.male else "woman"
    start = time.perf_counter()
    character = character_from_photo(pipe, "person", photo_path, MaskRegionCounter(), noun=noun, mask=mask_path,
                                     progress=False)
    seconds = time.perf_counter() - start
    prompts = [f"a photo of a <subj1>{noun}</subj1> {SCENE_PHRASES[s]}" for s in SCENES]
    seeds = [100_001 + k for k in range(len(SCENES))]
    ours = pipe.render(prompts, character.z[None, None].expand(len(SCENES), 1, -1), seeds, 20, 5.0, size, size,
                       batch_size=8)
    plain = pipe.render([p.replace("<subj1>", "").replace("</subj1>", "") for p in prompts], None, seeds, 20, 5.0,
                        size, size, batch_size=8)
    blank = Image.new("RGB", (size, size), "white")
    rows = [image_strip([photo.convert("RGB"), *ours]), image_strip([blank, *plain])]
    figure = Image.new("RGB", (rows[0].width, 2 * size + 4), "white")
    figure.paste(rows[0], (0, 0))
    figure.paste(rows[1], (0, size + 4))
    figure.resize((figure.width * 4, figure.height * 4), Image.NEAREST).save(out)
    if not args.keep_photo:
        photo_path.unlink()
        mask_path.unlink()
    print(f"{noun} {args.person} of world {world} ({traits}); fit {seconds:.1f} s; top: the photo, then the fitted "
          f"code in {', '.join(SCENES)}; bottom: the plain prompt, same scenes and noises; wrote {out}")


if __name__ == "__main__":
    main()

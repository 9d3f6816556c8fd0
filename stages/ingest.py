"""ingest: the images table (data/images.parquet) from the synthetic world, CelebA or an image folder.

synthetic: draws the world into data/world (CelebA layout, see cocoins.world.people) and reads it back
with the CelebA reader, so the synthetic path exercises exactly the code real CelebA goes through.
celeba / folder: reads `data.root` in place; data/world then only holds SOURCE.json naming the root (it
is a DVC output, so it must exist, and it must never be the user's dataset: ingest rewrites it).
A celeba root in the CelebAMask-HQ release layout (cocoins.data.celeba_hq) is detected automatically; its
part masks are composed into one subject mask per image in data/world/subject_masks/<id>.png.
"""

from collections import Counter
from pathlib import Path

from cocoins.config import load_params
from cocoins.data.celeba import read_celeba, read_folder
from cocoins.data.celeba_hq import is_celeba_hq, read_celeba_hq
from cocoins.io import atomic_dir, write_json, write_parquet
from cocoins.runtime import UserError, print_summary, run_stage
from cocoins.world.people import WorldConfig, write_world

WORLD = Path("data/world")
OUT = Path("data/images.parquet")


def main() -> None:
    p = load_params().data
    extra = {"source": p.source, "root": p.root}
    if p.source == "synthetic":
        if Path(p.root) != WORLD:
            raise UserError(f"data.root = {p.root!r}: the synthetic world is written to {WORLD} (a DVC output); "
                            f"set data.root: {WORLD}")
        cfg = WorldConfig(seed=p.seed, identities=p.identities, images_per_identity=p.images_per_identity,
                          two_person_images=p.two_person_images, image_size=p.image_size)
        with atomic_dir(WORLD) as tmp:
            counts = write_world(tmp, cfg)
        extra.update({f"world {k}": v for k, v in counts.items()})
        table = read_celeba(p.root, limit=p.limit)
    else:
        root = Path(p.root).resolve()
        if root == WORLD.resolve() or root.is_relative_to(WORLD.resolve()):
            raise UserError(f"data.root = {p.root!r} is inside {WORLD}, which ingest rewrites; move the dataset "
                            "elsewhere and point data.root at it")
        hq = p.source == "celeba" and is_celeba_hq(p.root)
        with atomic_dir(WORLD) as tmp:
            if hq:
                extra["layout"] = "CelebAMask-HQ"
                table = read_celeba_hq(p.root, mask_dir=tmp / "subject_masks",
                                       mask_ref=f"{WORLD.as_posix()}/subject_masks", split=p.split, limit=p.limit)
            else:
                table = read_celeba(p.root, split=p.split, limit=p.limit) if p.source == "celeba" \
                    else read_folder(p.root, limit=p.limit)
            write_json({"source": p.source, "root": p.root, **({"layout": "CelebAMask-HQ"} if hq else {})},
                       tmp / "SOURCE.json")
    write_parquet(table, OUT)
    kept = int(table["kept"].sum())
    skipped = Counter(table.loc[~table["kept"], "reason"])
    extra["identities"] = int(table.loc[table["kept"] & (table["identity"] >= 0), "identity"].nunique())
    extra["with masks"] = int(table["mask_path"].notna().sum())
    print_summary("ingest", kept, skipped, extra)


if __name__ == "__main__":
    run_stage(main)

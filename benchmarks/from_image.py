"""A character from a photo, measured where the truth is known (issue 25).

For held-out people of the mini-world (world seeds 6000 + s, s = 0..seeds-1: neither the corpus's, the ingest
world's, the classifier's nor the diagnose stage's 5000), one rendered portrait each is the photo (with the
renderer's subject mask). Its code is fitted (cocoins.method.code_inversion, base and mapper frozen), then
rendered with other prompts (other scenes than the photo's) and other noises, and read by the trait classifier:

- true-trait agreement of those renders (mean over images and identity traits of read == drawn), beside the
  plain prompt on the same people and the diagnose stage's rows (plain, textual inversion, names);
- identity Sim: cosine between the photo's trait embedding and each render's, recovered code vs the plain
  prompt (the base drawing anyone of that gender);
- seconds per character for the fit, with the thread count.

    nice -n 10 python benchmarks/from_image.py                     # 16 people x 3 seeds, writes results/
    python benchmarks/from_image.py --people 4 --seeds 1 --out /tmp/fi

Writes benchmarks/results/from_image-<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def photo_of(world_seed: int, identity: int, size: int):
    import numpy as np
    import torch

    from cocoins.world.people import SCENES, ImageSpec, WorldConfig, draw_traits, render

    traits = draw_traits(world_seed, identity)
    scene = random.Random(world_seed * 7919 + identity).choice(list(SCENES))
    image, mask = render(ImageSpec("photo", (identity,), scene, identity), {identity: traits},
                         WorldConfig(seed=world_seed, image_size=size))
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    return image, pixels, torch.from_numpy(np.asarray(mask) >= 128).float(), traits, scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(ROOT / "models/base"))
    ap.add_argument("--mapper", default=str(ROOT / "models/mapper"))
    ap.add_argument("--identity", default=str(ROOT / "models/identity"))
    ap.add_argument("--diagnose", default=str(ROOT / "reports/diagnose/metrics.json"))
    ap.add_argument("--people", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--renders", type=int, default=6, help="renders per person and row")
    ap.add_argument("--fit-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="mini")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = ap.parse_args()

    import dataclasses

    import numpy as np
    import torch

    from cocoins.method.code_inversion import CodeInversionConfig, CodeInverter
    from cocoins.pipeline import CoCoInsPipeline
    from cocoins.world.oracles import PORTRAIT, score
    from cocoins.world.people import SCENE_PHRASES
    from cocoins.world.traits import TraitClassifier

    torch.set_num_threads(args.threads)
    pipe = CoCoInsPipeline.from_pretrained(args.base, mapper=args.mapper)
    pipe.sdxl.set_progress_bar_config(disable=True)
    classifier = TraitClassifier.load(args.identity)
    size = pipe.default_size
    cfg = CodeInversionConfig()
    if args.fit_steps is not None:
        cfg = dataclasses.replace(cfg, steps=args.fit_steps)
    inverter = CodeInverter(pipe.sdxl, pipe.encoder, pipe.mapper)
    steps, guidance = 20, 5.0

    per_seed, fit_seconds = [], []
    for s in range(args.seeds):
        world_seed = 6000 + s
        truths, photos, codes, prompts_rec, prompts_plain, owners, seeds = {}, {}, {}, [], [], [], []
        for ident in range(1, args.people + 1):
            image, pixels, mask, traits, scene = photo_of(world_seed, ident, size)
            truths[ident], photos[ident] = traits, image
            noun = "man" if traits.male else "woman"
            t0 = time.perf_counter()
            fit = inverter.fit(pixels, mask, PORTRAIT.format(s=f"<subj1>{noun}</subj1>"), cfg, seed=s, progress=False)
            fit_seconds.append(time.perf_counter() - t0)
            codes[ident] = fit.z
            others = [sc for sc in SCENE_PHRASES if sc != scene]
            for k in range(args.renders):
                phrase = SCENE_PHRASES[others[k % len(others)]]
                prompts_rec.append(f"a photo of a <subj1>{noun}</subj1> {phrase}")
                prompts_plain.append(f"a photo of a {noun} {phrase}")
                owners.append(ident)
                seeds.append(100_000 + 1000 * s + 10 * ident + k)   # noises the fit never saw
        stacked = torch.stack([codes[o] for o in owners])[:, None, :]
        rec_images = pipe.render(prompts_rec, stacked, seeds, steps, guidance, size, size, batch_size=64)
        plain_images = pipe.render(prompts_plain, None, seeds, steps, guidance, size, size, batch_size=64)
        rows = {}
        for name, images in (("recovered", rec_images), ("plain", plain_images)):
            row = score(classifier, images, owners, truths)
            emb = classifier.embed(images).numpy()
            ref = classifier.embed([photos[o] for o in owners]).numpy()
            photo_sim = float(np.mean(np.sum(emb * ref, axis=1)))
            rows[name] = {"true_trait_agreement": row.true_trait_agreement, "photo_sim": photo_sim,
                          "identity_sim": row.identity_sim, "per_trait": row.per_trait}
        photo_read = score(classifier, [photos[i] for i in truths], list(truths), truths).true_trait_agreement
        rows["photo_itself"] = {"true_trait_agreement": photo_read}
        per_seed.append({"world_seed": world_seed, **rows})
        print(f"seed {s}: recovered traits {rows['recovered']['true_trait_agreement']:.3f} "
              f"photo-Sim {rows['recovered']['photo_sim']:.3f} | plain traits {rows['plain']['true_trait_agreement']:.3f} "
              f"photo-Sim {rows['plain']['photo_sim']:.3f} | the photo read back {photo_read:.3f}", flush=True)

    def stat(row, key):
        v = [r[row][key] for r in per_seed]
        return {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4), "per_seed": [round(x, 4) for x in v]}

    diagnose = {}
    if Path(args.diagnose).is_file():
        d = json.loads(Path(args.diagnose).read_text())
        diagnose = {k: d[k]["true_trait_agreement"] for k in ("plain", "describe", "textual_inversion", "names") if k in d}
    summary = {
        "people_per_seed": args.people, "seeds": args.seeds, "renders_per_person": args.renders,
        "fit": dataclasses.asdict(cfg), "threads": args.threads,
        "seconds_per_character": {"mean": round(float(np.mean(fit_seconds)), 2), "max": round(float(np.max(fit_seconds)), 2)},
        "recovered": {"true_trait_agreement": stat("recovered", "true_trait_agreement"),
                      "photo_sim": stat("recovered", "photo_sim"), "identity_sim": stat("recovered", "identity_sim")},
        "plain": {"true_trait_agreement": stat("plain", "true_trait_agreement"), "photo_sim": stat("plain", "photo_sim"),
                  "identity_sim": stat("plain", "identity_sim")},
        "photo_itself": {"true_trait_agreement": stat("photo_itself", "true_trait_agreement")},
        "diagnose_true_trait_agreement": diagnose,
        "per_seed": per_seed,
        "command": "python benchmarks/from_image.py " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"from_image-{args.tag}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(path)
    r, p = summary["recovered"], summary["plain"]
    print(f"true traits: recovered {r['true_trait_agreement']['mean']:.3f} ± {r['true_trait_agreement']['std']:.3f}, "
          f"plain {p['true_trait_agreement']['mean']:.3f} ± {p['true_trait_agreement']['std']:.3f}; diagnose {diagnose}")
    print(f"photo Sim: recovered {r['photo_sim']['mean']:.3f} ± {r['photo_sim']['std']:.3f}, plain "
          f"{p['photo_sim']['mean']:.3f} ± {p['photo_sim']['std']:.3f} (target plain + 0.15)")
    print(f"fit: {summary['seconds_per_character']['mean']:.1f} s per character on {args.threads} threads "
          f"(max {summary['seconds_per_character']['max']:.1f}); wrote {path}")


if __name__ == "__main__":
    main()

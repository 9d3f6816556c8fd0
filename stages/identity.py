"""Stage `identity`: the synthetic world's exact identity metric (a trait classifier), for `evaluate`.

The classifier learns every drawn trait, and the scene (background) each image was drawn in, from fresh renders
of random identities, part of each batch shown through the base model's VAE (what generated images look like).
The scene head is evaluate's prompt-fidelity metric (`scene_fidelity`); it never enters the identity embedding.
Its held-out accuracy (every head, the scene included), and the two checks that the base model is SDXL-like (it
follows trait words; it draws a new person per noise for "a man"), go to reports/identity/metrics.json. With `identity.backend: none`, or data that is not the synthetic world,
models/identity/ holds only none.json saying why, and evaluate writes null.
"""

from collections import Counter
from pathlib import Path

import torch

from cocoins.config import load_params
from cocoins.io import atomic_dir, write_json
from cocoins.runtime import UserError, print_summary, run_stage, seed_everything
from cocoins.sdxl.load import REFERENCE, load_pipeline
from cocoins.world.base_check import check_base
from cocoins.world.traits import TRAIT_CLASSES, render_portraits, train_trait_classifier, vae_round_trip

OUT = Path("models/identity")
METRICS = Path("reports/identity/metrics.json")
BASE = Path("models/base")
HELD_OUT_SEED_OFFSET = 1


def main() -> None:
    params = load_params()
    p = params.identity
    why_not = ("identity.backend: none" if p.backend == "none" else
               f"data.source: {params.data.source}: the trait classifier reads the synthetic world only"
               if params.data.source != "synthetic" else "")
    with atomic_dir(OUT) as tmp:
        if why_not:
            write_json({"reason": why_not}, tmp / "none.json")
            write_json({"null_reasons": {"identity": why_not}}, METRICS)
            print_summary("identity", 0, Counter({why_not: 1}))
            return
        seed_everything(p.seed)
        torch.set_num_threads(p.cpu_threads)   # fixed: the same weights, bit for bit, on any CPU
        reconstruct, pipe = None, None
        if not (BASE / REFERENCE).is_file():   # a real SDXL is not loaded here: it cannot draw this world
            pipe = load_pipeline(BASE)
            reconstruct = vae_round_trip(pipe.vae)   # the base model sees images at its own resolution
        classifier = train_trait_classifier(seed=p.seed, steps=p.steps, train_images=p.train_images,
                                            batch_size=p.batch_size, image_size=p.image_size,
                                            reconstruct=reconstruct, reconstruct_share=p.reconstruct_share)
        # Held out: identities of another world seed, clean and through the VAE.
        images, labels = render_portraits(p.seed + HELD_OUT_SEED_OFFSET, range(1, 501), p.image_size)
        accuracy = {"clean": classifier.accuracy(images, labels)}
        if reconstruct is not None:
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
            with torch.no_grad():
                accuracy["vae"] = classifier.accuracy(reconstruct(x).clamp(0, 1), labels)
        judged = accuracy.get("vae", accuracy["clean"])
        readable = [name for name in TRAIT_CLASSES if judged[name] >= p.min_accuracy]
        if not readable:
            raise UserError(f"the trait classifier reads no trait with held-out accuracy >= identity.min_accuracy "
                            f"({p.min_accuracy}): {judged}; raise identity.steps or lower identity.min_accuracy")
        classifier = classifier.with_identity_traits(readable)
        classifier.save(tmp)
        metrics = {"identity_traits": list(classifier.identity_traits),
                   "left_out": sorted(set(TRAIT_CLASSES) - set(readable))}
        metrics.update({f"held_out_{kind}": {k: round(v, 4) for k, v in acc.items()} for kind, acc in accuracy.items()})
        if pipe is not None and p.check_images:
            check = check_base(pipe, classifier, seed=p.seed, images_per_value=p.check_images,
                               class_only_images=4 * p.check_images)
            metrics["base_word_following"] = {k: round(v, 4) for k, v in check.word_following.items()}
            metrics["base_word_following_mean"] = round(check.word_following_mean, 4)
            metrics["base_class_only_identity_div"] = (None if check.class_only_div is None
                                                       else round(check.class_only_div, 4))
    write_json(metrics, METRICS)
    extra = {f"held-out accuracy ({kind})": " ".join(f"{k} {v:.2f}" for k, v in acc.items())
             for kind, acc in accuracy.items()}
    extra["identity embedding"] = (f"{len(metrics['identity_traits'])} traits; left out (held-out accuracy < "
                                   f"{p.min_accuracy}): {', '.join(metrics['left_out']) or 'none'}")
    if "base_word_following" in metrics:
        extra["base follows trait words"] = " ".join(f"{k} {v:.2f}" for k, v in metrics["base_word_following"].items())
        extra["base, class-only prompts: identity Div"] = metrics["base_class_only_identity_div"]
    print_summary("identity", 1, Counter(), extra)


if __name__ == "__main__":
    run_stage(main)

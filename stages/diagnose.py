"""Stage `diagnose`: how much of a person one token can carry in the base model (cocoins/world/oracles.py).

Rows, each on the same fresh identities with known traits, read by the identity stage's trait classifier:
plain prompt, describing caption, textual inversion (one free pseudo-word per identity), and the corpus's
named people. Writes reports/diagnose/metrics.json; with no trait classifier (not the mini-world) it writes
why instead.
"""

from collections import Counter
from dataclasses import asdict, fields
from pathlib import Path

import torch

from cocoins.config import load_params
from cocoins.io import write_json
from cocoins.runtime import print_summary, run_stage, seed_everything
from cocoins.sdxl.load import load_pipeline
from cocoins.world.oracles import OracleConfig, read_names, run_oracles
from cocoins.world.traits import TraitClassifier, identity_model_status

BASE, IDENTITY = Path("models/base"), Path("models/identity")
METRICS = Path("reports/diagnose/metrics.json")


def main() -> None:
    params = load_params()
    p = params.diagnose
    available, why = identity_model_status(str(IDENTITY))
    if not available:
        write_json({"null_reasons": {"diagnose": why}}, METRICS)
        print_summary("diagnose", 0, Counter({why: 1}))
        return
    seed_everything(p.world_seed)
    torch.set_num_threads(p.cpu_threads)   # fixed: the same numbers on any machine of this kind
    pipe = load_pipeline(BASE)
    pipe.set_progress_bar_config(disable=True)
    classifier = TraitClassifier.load(IDENTITY)
    cfg = OracleConfig(resolution=pipe.unet.config.sample_size * pipe.vae_scale_factor,
                       **{f.name: getattr(p, f.name) for f in fields(OracleConfig) if hasattr(p, f.name)})
    rows = run_oracles(pipe, classifier, cfg, names=read_names(BASE), corpus_seed=params.mini.corpus_seed,
                       corpus_images=params.mini.corpus_images)
    metrics = {name: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(row).items()}
               for name, row in rows.items()}
    metrics["identity_traits"] = list(classifier.identity_traits)
    write_json(metrics, METRICS)
    shown = {name: f"true traits {r.true_trait_agreement:.3f} +/- {r.true_trait_agreement_std:.3f}, "
                   f"Sim {r.identity_sim if r.identity_sim is None else round(r.identity_sim, 3)}, "
                   f"Div {r.identity_div if r.identity_div is None else round(r.identity_div, 3)}, "
                   f"per-image Div {r.per_image_div if r.per_image_div is None else round(r.per_image_div, 3)}"
             for name, r in rows.items()}
    print_summary("diagnose", sum(r.images for r in rows.values()), Counter(), shown)


if __name__ == "__main__":
    run_stage(main)

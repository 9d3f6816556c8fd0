"""evaluate: render every identity's code on the prompt sets, score consistency, draw grids.

Also renders the same jobs without a pseudo-word (the base model drawing "a man" anew every time): the
baseline that the method's Sim must beat.
"""

from pathlib import Path

import pandas as pd
import torch

from cocoins.config import load_params
from cocoins.eval.consistency import center_ellipse_mask, sim_div, subject_vectors
from cocoins.eval.grids import image_grid
from cocoins.eval.protocol import make_jobs, render
from cocoins.io import atomic_dir, read_parquet, write_json, write_parquet
from cocoins.method.mapper import Mapper
from cocoins.runtime import print_summary, run_stage, seed_everything
from cocoins.sdxl.encode import PromptEncoder
from cocoins.sdxl.load import load_pipeline

OUT = Path("reports/eval")


def score(rendered, rows: pd.Series) -> dict:
    latents = rendered.latents[torch.from_numpy(rows.to_numpy(dtype=bool).copy())]
    mask = center_ellipse_mask(*latents.shape[-2:])
    result = sim_div(subject_vectors(latents, mask), rendered.jobs.loc[rows, "identity_id"].tolist())
    return {"latent_sim": round(result.sim, 6), "latent_div": round(result.div, 6)}


def main() -> None:
    params = load_params()
    e = params.eval
    seed_everything(e.seed)
    pipe = load_pipeline("models/base", device="cuda" if torch.cuda.is_available() else "cpu")
    encoder = PromptEncoder.from_pipeline(pipe)
    mapper = Mapper.load("models/mapper", device=pipe.unet.device).eval()
    identities = read_parquet("data/eval/identities.parquet", "prompts")
    sets = {name: read_parquet(f"data/eval/{name}.parquet", "prompts") for name in ("portraits", "scenes")}

    metrics, per_subject, grids = {}, [], {}
    all_jobs = []
    for name, prompts in sets.items():
        jobs = make_jobs(identities, prompts, e.seeds_per_prompt, e.seed)
        method = render(pipe, encoder, mapper, jobs, e.steps, e.guidance, e.resolution, e.batch_size, f"{name}")
        base = render(pipe, encoder, None, jobs, e.steps, e.guidance, e.resolution, e.batch_size, f"{name} (base)")
        everything = pd.Series(True, index=jobs.index)
        m, b = score(method, everything), score(base, everything)
        metrics[name] = {**m, **{f"base_{k}": v for k, v in b.items()},
                         "consistency_gap": round(m["latent_sim"] - b["latent_sim"], 6), "images": len(jobs)}
        for subject in prompts.subject.unique():
            rows = jobs.subject == subject
            ms, bs = score(method, rows), score(base, rows)
            per_subject.append({"set": name, "subject": subject, **ms,
                                "base_latent_sim": bs["latent_sim"],
                                "consistency_gap": round(ms["latent_sim"] - bs["latent_sim"], 6)})
            # Grid: rows = identities of this subject; columns = its prompts x seeds.
            sub = jobs[rows]
            grids[f"{name}_{subject}"] = [[method.images[i] for i in sub.index[sub.identity_id == ident]]
                                          for ident in sub.identity_id.unique()]
        all_jobs.append(jobs.assign(set=name))
    metrics["overall"] = {k: round(sum(metrics[s][k] for s in sets) / len(sets), 6)
                          for k in ("latent_sim", "latent_div", "base_latent_sim", "consistency_gap")}

    write_json(metrics, OUT / "metrics.json")
    write_json(per_subject, OUT / "plots" / "per_subject.json")
    write_parquet(pd.concat(all_jobs, ignore_index=True), OUT / "samples.parquet")
    with atomic_dir(OUT / "grids") as tmp:
        for key, rows in grids.items():
            image_grid(rows).save(tmp / f"{key}.png", optimize=False)
    print_summary("evaluate", sum(m["images"] for k, m in metrics.items() if k != "overall"), {},
                  {name: metrics[name] for name in metrics})


if __name__ == "__main__":
    run_stage(main)

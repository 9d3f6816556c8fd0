"""evaluate: render every identity's code on the prompt sets, save the images, score them, draw grids.

Also renders the same jobs without a pseudo-word (the base model drawing "a man" anew every time): the
baseline the method's Sim must beat, the reference of FID and of Div (each of its images its own person), and
of scene fidelity. Each job has its own initial noise unless `eval.noise: shared`. Images land in
reports/eval/images/ with JSON sidecars; reports/eval/samples.parquet is their manifest (the same format
`cocoins.eval.score_folder` takes).

Runs unchanged under `accelerate launch --num_processes N` (`eval.device`: each process its own GPU, or gloo on
CPU): each process renders its share of the render batches (`cocoins.eval.sharding`), the main process gathers
them in the one-process order and scores; images, latents and metrics are the same bits as one process.
"""

import json
from pathlib import Path

import pandas as pd
import torch

from cocoins.config import EvalParams, load_params
from cocoins.data.workdir import Dist, stage_device
from cocoins.eval.figures import draw_latent_space_figures
from cocoins.eval.grids import image_grid
from cocoins.eval.metrics.bootstrap import Bootstrap
from cocoins.eval.protocol import make_jobs, render
from cocoins.eval.renders import dir_sha256, mapper_record, write_images
from cocoins.eval.report import dvc_metrics, plot_tables
from cocoins.eval.scoring import Backends, MetricConfig, extract, load_rgb, score_table
from cocoins.eval.sharding import ShardedRender
from cocoins.io import atomic_dir, read_parquet, write_json, write_parquet
from cocoins.method.mapper import Mapper
from cocoins.runtime import print_summary, run_stage, seed_everything
from cocoins.sdxl.encode import PromptEncoder
from cocoins.sdxl.load import load_pipeline

OUT = Path("reports/eval")
WORK = Path("data/work/evaluate")  # other processes' renders until the main process gathers them
BASE, MAPPER, IDENTITY = "models/base", "models/mapper", "models/identity"
PRIMARY, REFERENCE = "cocoins", "base"
CHUNK = 256                        # images rendered, written and dropped at a time
GRID_ROWS, GRID_COLUMNS = 4, 8     # identities x images per grid (Figs. 3-4 show 4 images of each subject)
SHOWN = ("latent_sim", "base_latent_sim", "face_sim", "face_div", "face_detection_rate", "clip", "fid",
         "consistency_gap", "identity_sim", "base_identity_sim", "identity_div", "identity_div_ci_low",
         "identity_div_ci_high", "base_identity_div", "trait_agreement", "scene_fidelity", "base_scene_fidelity",
         "scene_fidelity_ratio")


def grid_images(table: pd.DataFrame) -> dict:
    """Grid of a (set, subject, method): rows = its first identities (codes), columns = their prompts x seeds.
    Read back from the written images (PNG is lossless), so every process's renders can be in it."""
    grids = {}
    for job in table.itertuples():
        by_identity = grids.setdefault((job.set, job.subject, job.method), {})
        if job.identity not in by_identity and len(by_identity) >= GRID_ROWS:
            continue
        row = by_identity.setdefault(job.identity, [])
        if len(row) < GRID_COLUMNS:
            row.append(load_rgb(job.path))
    return grids


def metric_config(e: EvalParams, device: str) -> MetricConfig:
    return MetricConfig(face_backend=e.face_backend, arcface_dir=e.arcface_dir, clip_model=e.clip_model,
                        dreamsim_cache=e.dreamsim_cache, dreamsim_type=e.dreamsim_type, fid_weights=e.fid_weights,
                        identity_model=IDENTITY, fid_reference=REFERENCE, bootstrap_resamples=e.bootstrap_resamples,
                        bootstrap_seed=e.seed, strict=e.strict, batch_size=e.batch_size, device=device)


def bootstrap(config: MetricConfig) -> Bootstrap:
    return Bootstrap(resamples=config.bootstrap_resamples, seed=config.bootstrap_seed)


def true_subjects(attributes: pd.Series) -> list[str]:
    """"man" / "woman" of each image from its CelebA `Male` attribute (exact in the synthetic world); "" where
    the source has no attributes."""
    def subject(text) -> str:
        male = json.loads(text).get("Male") if isinstance(text, str) and text else None
        return "" if male is None else "man" if male == 1 else "woman"
    return [subject(a) for a in attributes]


def data_identity_metrics(backends: Backends, config: MetricConfig) -> dict:
    """Identity Sim / Div of the mapper's training images themselves, grouped by their true identity, with
    intervals over identities and within each true sex: the paper's CelebA row of Table 1 (what real,
    different people score)."""
    train = read_parquet("data/train.parquet", "precompute")
    images = read_parquet("data/images.parquet", "ingest").set_index("image_id")
    rows = images.loc[train["image_id"]]
    attributes = rows["attributes"] if "attributes" in rows.columns else pd.Series([""] * len(rows))
    table = pd.DataFrame({"path": rows["path"].to_numpy(), "method": "data",
                          "identity": train["identity"].astype(str).to_numpy(), "prompt": "",
                          "subject": true_subjects(attributes), "setting": "", "set": "data"})
    per = extract(table, lambda i: load_rgb(table.at[i, "path"]), backends, config.batch_size, desc="training data")
    scores = score_table(table, per, backends, REFERENCE, boot=bootstrap(config))
    return {k: v for k, v in dvc_metrics(scores, "data", None)["data"].items()
            if k in ("images", "trait_agreement") or k.startswith(("identity_sim", "identity_div"))}


def main() -> None:
    params = load_params()
    e = params.eval
    seed_everything(e.seed)
    dist = Dist(e.device)
    device = stage_device(e.device, dist)
    if device.type == "cpu":
        # Tiny models on a shared 2-core CPU ran ~30x faster on one thread (no OpenMP spinning), and a fixed
        # thread count keeps every rendered bit the same on any machine.
        torch.set_num_threads(e.cpu_threads)
    pipe = load_pipeline(BASE, device=device)
    pipe.set_progress_bar_config(disable=True)
    encoder = PromptEncoder.from_pipeline(pipe)
    mapper = Mapper.load(MAPPER, device=pipe.unet.device).eval()
    identities = read_parquet("data/eval/identities.parquet", "prompts")
    sets = {name: read_parquet(f"data/eval/{name}.parquet", "prompts") for name in ("portraits", "scenes")}
    base_sha256, mapper_rec = dir_sha256(BASE), mapper_record(MAPPER)
    per_subject = {"portraits": None, "scenes": e.scene_identities_per_subject}
    protocol = {"noise": e.noise, "seeds_per_prompt": e.seeds_per_prompt, "bootstrap_resamples": e.bootstrap_resamples,
                "ci_level": Bootstrap().level}

    shard = ShardedRender(dist, WORK)
    with shard.output_dir(OUT / "images") as tmp:
        for name, prompts in sets.items():
            jobs = make_jobs(identities, prompts, e.seeds_per_prompt, e.seed, e.noise, per_subject[name])
            protocol[f"{name}_identities_per_subject"] = int(jobs.groupby("subject")["identity_id"].nunique().min())
            for method, m in ((PRIMARY, mapper), (REFERENCE, None)):
                # Batches of CHUNK-job chunks (the order evaluate always rendered in: the same bits), each written
                # and dropped at once, so a full-scale run never holds every image in memory.
                for index, rows in shard.batches(len(jobs), CHUNK, e.batch_size, f"{name} ({method})"):
                    out = render(pipe, encoder, m, jobs.iloc[rows], e.steps, e.guidance, e.resolution,
                                 e.batch_size, "", progress=False)
                    shard.keep(index, write_images(tmp, name, method, out.jobs, out.images, e.steps, e.guidance,
                                                   e.resolution, BASE, base_sha256,
                                                   mapper_rec if m is not None else None, f"{OUT}/images",
                                                   device.type), out.latents)
        gathered = shard.gather()
    if gathered is None:
        print(f"[evaluate] process {dist.rank}/{dist.world}: rendered {shard.rendered} batches; "
              "the main process scores")
        return
    rows, latents = gathered
    table = pd.DataFrame(rows)

    config = metric_config(e, str(device))
    backends = Backends.load(config)
    per = extract(table, lambda i: load_rgb(table.at[i, "path"]), backends, e.batch_size)
    scores = score_table(table, per, backends, REFERENCE, torch.cat(latents), bootstrap(config))
    metrics = {"protocol": protocol, **dvc_metrics(scores, PRIMARY, REFERENCE)}
    if backends.identity is not None:
        metrics["data"] = data_identity_metrics(backends, config)

    write_json(metrics, OUT / "metrics.json")
    with atomic_dir(OUT / "plots") as tmp:
        for key, plot_rows in plot_tables(scores).items():
            write_json(plot_rows, tmp / f"{key}.json")
    if per.faces is not None:
        table["face_found"] = [v is not None for v in per.faces]
    if per.clip is not None:
        table["clip"] = per.clip
    write_parquet(table, OUT / "samples.parquet")
    with atomic_dir(OUT / "grids") as tmp:
        for (name, subject, method), by_identity in grid_images(table).items():
            image_grid(list(by_identity.values())).save(tmp / f"{name}_{subject}_{method}.png", optimize=False)
        figures = draw_latent_space_figures(pipe, encoder, mapper, e, tmp)
    shown = {k: {m: v for m, v in s.items() if m in SHOWN} for k, s in metrics.items() if k != "protocol"}
    print_summary("evaluate", len(table), {}, {"protocol": protocol, **shown, "figures": figures,
                                                "null metrics": scores.unavailable})


if __name__ == "__main__":
    run_stage(main)

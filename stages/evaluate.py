"""evaluate: render every identity's code on the prompt sets, score them with the base model's renders, draw grids.

The base model's renders (no pseudo-word: the baseline the method's Sim must beat, the reference of FID and of
Div, each of its images its own person, and of scene fidelity) come from the `render_base` stage
(data/renders/base), so a change of the mapper renders only these. Each job has its own initial noise unless
`eval.noise: shared`. Images land in reports/eval/images/ with JSON sidecars; reports/eval/samples.parquet is
the manifest of both methods (the format `cocoins.eval.score_folder` takes).

Before the first render: the preflight (`cocoins.eval.preflight_eval`; with `eval.strict: true` a missing
metric model stops the stage in seconds, else the metrics that will be null are named) and every metric model
loaded. Rendering is restartable (`data/work/evaluate/`: a killed run resumes from its last finished batch,
same bits) and runs unchanged under `accelerate launch --num_processes N` (each process its share of the
batches, `cocoins.eval.sharding`); the main process scores, streaming the latents from the render caches a
batch at a time, and prints the peak host memory of scoring.
"""

import json
import shutil

import pandas as pd

from cocoins.checks import require
from cocoins.config import EvalParams, load_params
from cocoins.eval.figures import draw_latent_space_figures
from cocoins.eval.grids import image_grid
from cocoins.eval.host_memory import PeakRSS
from cocoins.eval.metrics.bootstrap import Bootstrap
from cocoins.eval.preflight_eval import evaluate_problems, null_metrics
from cocoins.eval.render_run import PRIMARY, REFERENCE, interleave, job_tables, load_renderer, render_method
from cocoins.eval.renders import mapper_record
from cocoins.eval.report import dvc_metrics, plot_tables
from cocoins.eval.scoring import Backends, MetricConfig, extract, load_rgb, score_table
from cocoins.eval.sharding import RenderedBatches
from cocoins.io import atomic_dir, read_parquet, write_json, write_parquet
from cocoins.method.mapper import Mapper
from cocoins.runtime import print_summary, run_stage, seed_everything

OUT = "reports/eval"
WORK = "data/work/evaluate"        # the restart cache of the renders
BASE_RENDERS = "data/renders/base/batches"
BASE, MAPPER, IDENTITY = "models/base", "models/mapper", "models/identity"
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
    require("evaluate", evaluate_problems(e, params.models.sdxl))
    for name, reason in null_metrics(e).items():
        print(f"[evaluate] {name} will be null (eval.strict: false): {reason}")
    seed_everything(e.seed)
    r = load_renderer(e, BASE, params.launch.barrier_timeout_s)
    config = metric_config(e, str(r.device))
    # Every metric model loads before the first render: a broken one costs seconds, not the renders.
    backends = Backends.load(config) if r.dist.is_main else None
    mapper = Mapper.load(MAPPER, device=r.device).eval()
    jobs = job_tables(e)
    renders = render_method(r, e, jobs, PRIMARY, mapper, mapper_record(MAPPER), WORK, f"{OUT}/images", BASE)
    if renders.batches is None:
        print(f"[evaluate] process {r.dist.rank}/{r.dist.world}: rendered {renders.shard.rendered} batches; "
              "the main process scores")
        return
    renders.shard.publish(f"{OUT}/images")
    base = RenderedBatches(BASE_RENDERS)
    spans, start = {}, 0
    for name in jobs:
        count = sum(1 for row in base.rows if row["set"] == name)
        spans[name], start = (start, count), start + count
    table, latents = interleave([(renders.batches, renders.set_rows), (base, spans)])
    protocol = {"noise": e.noise, "seeds_per_prompt": e.seeds_per_prompt, "bootstrap_resamples": e.bootstrap_resamples,
                "ci_level": Bootstrap().level}
    for name, set_jobs in jobs.items():
        protocol[f"{name}_identities_per_subject"] = int(set_jobs.groupby("subject")["identity_id"].nunique().min())

    with PeakRSS() as scoring_memory:
        per = extract(table, lambda i: load_rgb(table.at[i, "path"]), backends, e.batch_size,
                      store=f"{WORK}/features")
        scores = score_table(table, per, backends, REFERENCE, latents, bootstrap(config))
    shutil.rmtree(f"{WORK}/features", ignore_errors=True)     # scratch embeddings: GBs at full scale
    metrics = {"protocol": protocol, **dvc_metrics(scores, PRIMARY, REFERENCE)}
    if backends.identity is not None:
        metrics["data"] = data_identity_metrics(backends, config)

    write_json(metrics, f"{OUT}/metrics.json")
    with atomic_dir(f"{OUT}/plots") as tmp:
        for key, plot_rows in plot_tables(scores).items():
            write_json(plot_rows, tmp / f"{key}.json")
    if per.has_faces():
        table["face_found"] = per.face_found()
    if per.clip is not None:
        table["clip"] = per.clip
    write_parquet(table, f"{OUT}/samples.parquet")
    with atomic_dir(f"{OUT}/grids") as tmp:
        for (name, subject, method), by_identity in grid_images(table).items():
            image_grid(list(by_identity.values())).save(tmp / f"{name}_{subject}_{method}.png", optimize=False)
        figures = draw_latent_space_figures(r.pipe, r.encoder, mapper, e, tmp)
    shown = {k: {m: v for m, v in s.items() if m in SHOWN} for k, s in metrics.items() if k != "protocol"}
    print_summary("evaluate", len(table), {}, {
        "protocol": protocol, "dtype": str(r.dtype), "sliced VAE decoding": r.sliced, **shown, "figures": figures,
        "null metrics": scores.unavailable,
        "batches": {"rendered now": renders.shard.rendered, "kept from a killed run": renders.shard.reused,
                    "total": renders.shard.batches_seen},
        "scoring peak host memory": scoring_memory.summary()})


if __name__ == "__main__":
    run_stage(main)

"""The evaluation's render loop, shared by `render_base` (the no-pseudo-word baseline) and `evaluate` (CoCoIns).

Both render the same job tables (`protocol.make_jobs`) in the same batches, through `sharding.ShardedRender`:
restartable and split across `accelerate launch` processes with the bits of one process. Each stage renders
one method; the base model's renders are their own stage so that an experiment that changes only the mapper
does not render them again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from cocoins.config import EvalParams
from cocoins.data.workdir import Dist, stage_device
from cocoins.eval.protocol import fit_decoding, make_jobs, render, render_dtype
from cocoins.eval.renders import dir_sha256, write_images
from cocoins.eval.sharding import RenderedBatches, ShardedRender
from cocoins.io import read_parquet

CHUNK = 256                        # images rendered, written and dropped at a time
SETS = ("portraits", "scenes")
PRIMARY, REFERENCE = "cocoins", "base"


@dataclass
class Renderer:
    pipe: object
    encoder: object
    device: torch.device
    dtype: torch.dtype
    dist: Dist
    base_sha256: str
    sliced: bool


def load_renderer(e: EvalParams, base: str, barrier_timeout_s: int | None = None) -> Renderer:
    """The base SDXL on this process's device in `eval.dtype`, decoding sliced on a GPU."""
    from cocoins.sdxl.encode import PromptEncoder
    from cocoins.sdxl.load import load_pipeline

    dist = Dist(e.device, barrier_timeout_s)   # the main process scores alone while the others wait
    device = stage_device(e.device, dist)
    if device.type == "cpu":
        # Tiny models on a shared 2-core CPU ran ~30x faster on one thread (no OpenMP spinning), and a fixed
        # thread count keeps every rendered bit the same on any machine.
        torch.set_num_threads(e.cpu_threads)
    dtype = render_dtype(e.dtype, device)
    pipe = load_pipeline(base, device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    sliced = fit_decoding(pipe, device)
    return Renderer(pipe, PromptEncoder.from_pipeline(pipe), device, dtype, dist, dir_sha256(base), sliced)


def job_tables(e: EvalParams) -> dict[str, pd.DataFrame]:
    """Every set's jobs: each identity's code on its subject's prompts (Scenes: each subject's first codes)."""
    identities = read_parquet("data/eval/identities.parquet", "prompts")
    per_subject = {"portraits": None, "scenes": e.scene_identities_per_subject}
    return {name: make_jobs(identities, read_parquet(f"data/eval/{name}.parquet", "prompts"), e.seeds_per_prompt,
                            e.seed, e.noise, per_subject[name]) for name in SETS}


def render_fingerprint(e: EvalParams, r: Renderer, jobs: dict[str, pd.DataFrame], mapper: Optional[dict]) -> dict:
    """What decides a render's bits: models, jobs, steps, batch cut, precision, device type, CPU threads."""
    tables = hashlib.sha256("".join(t.to_json(orient="records") for t in jobs.values()).encode()).hexdigest()
    return {"base_sha256": r.base_sha256, "mapper": mapper, "jobs_sha256": tables, "steps": e.steps,
            "guidance": e.guidance, "resolution": e.resolution, "batch_size": e.batch_size, "chunk": CHUNK,
            "dtype": str(r.dtype), "device": r.device.type, "sliced_decoding": r.sliced,
            "cpu_threads": e.cpu_threads if r.device.type == "cpu" else None}


@dataclass
class MethodRenders:
    shard: ShardedRender
    batches: Optional[RenderedBatches]          # None on processes other than the main one
    set_rows: dict = field(default_factory=dict)   # set -> (first row, row count) within batches.rows


def render_method(r: Renderer, e: EvalParams, jobs: dict[str, pd.DataFrame], method: str, mapper,
                  mapper_rec: Optional[dict], work: str | Path, prefix: str, base_dir: str) -> MethodRenders:
    """Render every set's jobs with `mapper` (None: the plain prompt), keeping each batch in `work` as it
    finishes; image paths in the rows start with `prefix` (where `publish` will put them)."""
    shard = ShardedRender(r.dist, work, render_fingerprint(e, r, jobs, mapper_rec))
    spans, start = {}, 0
    for name, table in jobs.items():
        for index, rows in shard.batches(len(table), CHUNK, e.batch_size, f"{name} ({method})"):
            out = render(r.pipe, r.encoder, mapper, table.iloc[rows], e.steps, e.guidance, e.resolution,
                         e.batch_size, "", progress=False)
            shard.keep(index, write_images(shard.images, name, method, out.jobs, out.images, e.steps, e.guidance,
                                           e.resolution, base_dir, r.base_sha256, mapper_rec, prefix,
                                           r.device.type), out.latents)
        spans[name], start = (start, len(table)), start + len(table)
    return MethodRenders(shard, shard.gather(), spans)


def interleave(methods: list[tuple[RenderedBatches, dict]]) -> tuple[pd.DataFrame, object]:
    """The manifest table in evaluate's order (per set, each method's rows) and `Batches` of its final latents
    in that row order, read from the render caches one batch at a time."""
    order, sources = [], []
    for name in SETS:
        for batches, spans in methods:
            first, count = spans[name]
            order.append(batches.rows[first:first + count])
            sources.append((batches, first, count))
    table = pd.DataFrame([row for part in order for row in part])

    def latents():
        offset = 0
        for batches, first, count in sources:
            for start, lat in batches.latents_between(first, first + count):
                yield offset + np.arange(start - first, start - first + len(lat)), lat
            offset += count
    return table, latents

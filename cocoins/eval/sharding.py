"""Evaluation rendering: restartable, split across `accelerate launch` processes, with the bits of one process.

An image depends on the batch it is rendered in, not only on its own seeds: CPU BLAS (and GPU kernels) pick
their reduction order by row count, so the same job in another batch can differ in low bits. The unit of
work is therefore a whole render batch of the single-process order (the jobs cut into chunks of `chunk`,
each chunk cut into batches of `batch_size`): batch k of that order goes to process k % W, which renders
exactly the batch one process would render.

Every finished batch is kept in the work dir (`data/work/<stage>/`, git-ignored, not a DVC output) as it is
rendered: its images with their JSON sidecars under `images/`, then its final latents and manifest rows under
`batches/` (written atomically, the rows last: they mark the batch done). A killed run loses at most the
batches in flight; the next run renders only the batches that are not done, in the same batches, so the same
bits (any process count). `fingerprint.json` hashes what decides the bits (models, jobs, steps, batch, dtype,
device type): when it changes the work dir is cleared. At the end the main process checks every batch is
there and links the images into the stage's output folder (hard links: no second copy on disk).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Optional

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from cocoins.data.workdir import Dist, WorkDir
from cocoins.io import atomic_dir, atomic_path
from cocoins.runtime import UserError


def batch_spans(n_jobs: int, chunk: int, batch_size: int) -> list[slice]:
    """The render batches of one process, in order: chunks of `chunk` jobs, each cut into `batch_size`."""
    if chunk < 1 or batch_size < 1:
        raise ValueError(f"chunk and batch_size must be >= 1, got {chunk} and {batch_size}")
    return [slice(start + b, min(start + b + batch_size, start + chunk, n_jobs))
            for start in range(0, n_jobs, chunk) for b in range(0, min(chunk, n_jobs - start), batch_size)]


class RenderedBatches:
    """The gathered renders: every batch's manifest rows in order, and their latents read one batch at a time
    (a full-scale run's latents are tens of GB; nothing holds them all)."""

    def __init__(self, folder: str | Path, count: Optional[int] = None):
        self.folder = Path(folder)
        self.count = len(list(self.folder.glob("batch-*.json"))) if count is None else count
        parts = [json.loads(self._path(i, ".json").read_text()) for i in range(self.count)]
        self.sizes = [len(p) for p in parts]
        self.rows = [row for part in parts for row in part]

    def _path(self, index: int, suffix: str) -> Path:
        return self.folder / f"batch-{index:06d}{suffix}"

    def latents(self) -> Iterator[torch.Tensor]:
        """Each batch's final latents [b, 4, h, w], in row order."""
        for _, lat in self.latents_between(0, len(self.rows)):
            yield lat

    def latents_between(self, first: int, stop: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, latents) of rows first..stop-1, loading only the batches that hold them."""
        start = 0
        for i, size in enumerate(self.sizes):
            lo, hi = max(first, start), min(stop, start + size)
            if lo < hi:
                lat = load_file(str(self._path(i, ".safetensors")))["latents"]
                yield lo, lat[lo - start:hi - start]
            start += size


class ShardedRender:
    """This process's share of the render batches not yet done, and the main process's gathering of all."""

    def __init__(self, dist: Dist, work: str | Path, config: dict):
        self.dist = dist
        self.work = WorkDir.open(work, config, dist).root
        self.images = self.work / "images"
        self.done_dir = self.work / "batches"
        if dist.is_main:
            self.images.mkdir(exist_ok=True)
            self.done_dir.mkdir(exist_ok=True)
        dist.barrier()
        self.batches_seen = 0                    # batches of all processes so far (the same count on each)
        self.rendered = 0                        # batches this process rendered in this run
        self.reused = 0                          # batches of this process found done in the work dir

    def _path(self, index: int, suffix: str) -> Path:
        return self.done_dir / f"batch-{index:06d}{suffix}"

    def is_done(self, index: int) -> bool:
        return self._path(index, ".json").is_file()

    def batches(self, n_jobs: int, chunk: int, batch_size: int, desc: str) -> list[tuple[int, slice]]:
        """(batch index, rows) of the batches this process still has to render, for a job table of `n_jobs`
        rows. Every process must call this for the same tables in the same order."""
        spans = batch_spans(n_jobs, chunk, batch_size)
        first, self.batches_seen = self.batches_seen, self.batches_seen + len(spans)
        mine = [(first + k, span) for k, span in enumerate(spans) if (first + k) % self.dist.world == self.dist.rank]
        todo = [(i, span) for i, span in mine if not self.is_done(i)]
        self.reused += len(mine) - len(todo)
        if self.dist.world > 1:
            desc = f"{desc} [{self.dist.rank}/{self.dist.world}]"
        return tqdm(todo, desc=desc, unit="batch", disable=not todo)

    def keep(self, index: int, rows: list[dict], latents: torch.Tensor) -> None:
        """Mark batch `index` done: its final latents (one per row), then its manifest rows (JSON-able dicts).
        Its images must already be written under `self.images`."""
        if len(rows) != len(latents):
            raise ValueError(f"batch {index}: {len(rows)} rows but {len(latents)} latents")
        with atomic_path(self._path(index, ".safetensors")) as tmp:
            save_file({"latents": latents.float().contiguous()}, str(tmp))
        with atomic_path(self._path(index, ".json")) as tmp:
            tmp.write_text(json.dumps(rows))
        self.rendered += 1

    def gather(self) -> Optional[RenderedBatches]:
        """Main process: every batch, checked to be there. Other processes: None, once all have finished."""
        self.dist.barrier()
        if not self.dist.is_main:
            return None
        missing = [i for i in range(self.batches_seen) if not self.is_done(i)]
        if missing:
            raise UserError(f"{self.work}: {len(missing)} of {self.batches_seen} render batches are missing after "
                            "the run (did a process die?); run the stage again (done batches are kept)")
        return RenderedBatches(self.done_dir, self.batches_seen)

    def publish(self, dest: str | Path, with_batches: bool = False) -> int:
        """Link (or, across file systems, copy) every rendered image and sidecar into `dest` (with_batches:
        into `dest/images`, and the batches' rows and latents into `dest/batches`, for another stage to read),
        replacing it atomically; the work dir keeps its copy, so a rerun that changes only scoring renders
        nothing. Returns the number of images."""
        count = 0
        parts = ((self.images, "images"), (self.done_dir, "batches")) if with_batches else ((self.images, ""),)
        with atomic_dir(dest) as tmp:
            for folder, name in parts:
                for src in sorted(p for p in folder.rglob("*") if p.is_file()):
                    target = tmp / name / src.relative_to(folder)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(src, target)
                    except OSError:
                        shutil.copy2(src, target)
                    count += src.suffix == ".png"
        return count

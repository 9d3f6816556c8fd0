"""Evaluation rendering split across `accelerate launch` processes, with the bits of a single process.

An image depends on the batch it is rendered in, not only on its own seeds: CPU BLAS (and GPU kernels) pick
their reduction order by row count, so the same job in another batch can differ in low bits. The unit of
work is therefore a whole render batch of the single-process order (the jobs cut into chunks of `chunk`,
each chunk cut into batches of `batch_size`): batch k of that order goes to process k % W, which renders
exactly the batch one process would render.

Each process writes its images (with their JSON sidecars) as it renders. The main process writes into the
stage's atomic temp folder; the others into `<work>/rank-<r>/images`, and at `gather` also their manifest
rows (JSON) and final latents (safetensors). After a barrier the main process moves their images into its
temp folder and returns every batch's rows and latents in the single-process order; the others get None and
should exit. With one process nothing goes through the work dir: the stage runs as it did before sharding.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Iterator, Optional

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from cocoins.data.workdir import Dist
from cocoins.io import atomic_dir, atomic_path
from cocoins.runtime import UserError

ROWS, LATENTS = "rows.json", "latents.safetensors"


def batch_spans(n_jobs: int, chunk: int, batch_size: int) -> list[slice]:
    """The render batches of one process, in order: chunks of `chunk` jobs, each cut into `batch_size`."""
    if chunk < 1 or batch_size < 1:
        raise ValueError(f"chunk and batch_size must be >= 1, got {chunk} and {batch_size}")
    return [slice(start + b, min(start + b + batch_size, start + chunk, n_jobs))
            for start in range(0, n_jobs, chunk) for b in range(0, min(chunk, n_jobs - start), batch_size)]


class ShardedRender:
    """This process's share of the render batches, and the main process's gathering of all of them."""

    def __init__(self, dist: Dist, work: str | Path):
        self.dist, self.work = dist, Path(work)
        self.batches_seen = 0                    # batches of all processes so far (the same count on each)
        self._parts: dict[int, tuple[list[dict], torch.Tensor]] = {}
        self._images: Optional[Path] = None
        self.rendered = 0                        # batches this process rendered itself
        if dist.world > 1:
            if dist.is_main:
                shutil.rmtree(self.work, ignore_errors=True)   # what a killed run left
            dist.barrier()

    @property
    def rank_dir(self) -> Path:
        return self.work / f"rank-{self.dist.rank}"

    @contextlib.contextmanager
    def output_dir(self, path: str | Path) -> Iterator[Path]:
        """The folder this process writes its images into: on the main process an atomic temp folder that
        replaces `path` when the block ends (call `gather` inside it), elsewhere this process's work folder."""
        if self.dist.is_main:
            with atomic_dir(path) as tmp:
                self._images = tmp
                yield tmp
        else:
            self._images = self.rank_dir / "images"
            self._images.mkdir(parents=True, exist_ok=True)
            yield self._images

    def batches(self, n_jobs: int, chunk: int, batch_size: int, desc: str) -> list[tuple[int, slice]]:
        """(batch index, rows) of the batches this process renders, for a job table of `n_jobs` rows. Every
        process must call this for the same tables in the same order."""
        spans = batch_spans(n_jobs, chunk, batch_size)
        first, self.batches_seen = self.batches_seen, self.batches_seen + len(spans)
        mine = [(first + k, span) for k, span in enumerate(spans) if (first + k) % self.dist.world == self.dist.rank]
        if self.dist.world > 1:
            desc = f"{desc} [{self.dist.rank}/{self.dist.world}]"
        return tqdm(mine, desc=desc, unit="batch")

    def keep(self, index: int, rows: list[dict], latents: torch.Tensor) -> None:
        """Record batch `index`'s manifest rows (JSON-able dicts) and final latents (one per row)."""
        if len(rows) != len(latents):
            raise ValueError(f"batch {index}: {len(rows)} rows but {len(latents)} latents")
        self._parts[index] = (rows, latents)
        self.rendered += 1

    def gather(self) -> Optional[tuple[list[dict], list[torch.Tensor]]]:
        """Main process: every batch's rows and latents in the single-process order, the other processes'
        images moved into its output folder. Other processes: None, after handing their batches over."""
        if self._images is None:
            raise RuntimeError("gather() belongs inside the output_dir() block")
        if not self.dist.is_main:
            self._save_parts()
            self.dist.barrier()
            return None
        self.dist.barrier()
        for rank in range(1, self.dist.world):
            self._collect(self.work / f"rank-{rank}")
        missing = [i for i in range(self.batches_seen) if i not in self._parts]
        if missing:
            raise UserError(f"{self.work}: {len(missing)} of {self.batches_seen} render batches are missing after "
                            "the run (did a process die?); run the stage again")
        if self.dist.world > 1:
            shutil.rmtree(self.work, ignore_errors=True)
        order = range(self.batches_seen)
        return [row for i in order for row in self._parts[i][0]], [self._parts[i][1] for i in order]

    def _save_parts(self) -> None:
        self.rank_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.rank_dir / LATENTS) as tmp:
            save_file({str(i): lat.contiguous() for i, (_, lat) in self._parts.items()}, str(tmp))
        with atomic_path(self.rank_dir / ROWS) as tmp:
            tmp.write_text(json.dumps({str(i): rows for i, (rows, _) in self._parts.items()}))

    def _collect(self, rank_dir: Path) -> None:
        if not (rank_dir / ROWS).is_file():
            raise UserError(f"{rank_dir}/{ROWS} is missing after the run (did a process die?); run the stage again")
        latents = load_file(str(rank_dir / LATENTS))
        for key, rows in json.loads((rank_dir / ROWS).read_text()).items():
            self._parts[int(key)] = (rows, latents[key])
        images = rank_dir / "images"
        for src in sorted(p for p in images.rglob("*") if p.is_file()):
            dest = self._images / src.relative_to(images)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dest)

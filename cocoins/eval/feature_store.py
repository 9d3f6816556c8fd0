"""Per-image embeddings of the metric models kept on disk, one safetensors shard per scoring batch.

At full scale the embeddings are ~100K rows per family (FID's 2048-d Inception features alone are 0.8 GB in
float32); scoring reads each group's rows back one shard at a time (`simdiv.Batches`), so host memory stays a
batch. Families: `face` (zeros where no face was found; `found` says where), `dreamsim`, `fid`, `identity`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cocoins.simdiv import Batches


class FeatureStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        shutil.rmtree(self.root, ignore_errors=True)    # shards of an earlier scoring of other images
        self.root.mkdir(parents=True)
        self.sizes: list[int] = []

    def _path(self, index: int) -> Path:
        return self.root / f"batch-{index:06d}.safetensors"

    def add(self, rows: int, vectors: dict[str, torch.Tensor]) -> None:
        """The next `rows` table rows' vectors, one [rows, d] tensor per family."""
        for name, v in vectors.items():
            if len(v) != rows:
                raise ValueError(f"{name}: {len(v)} vectors for {rows} rows")
        save_file({k: v.float().contiguous() for k, v in vectors.items()}, str(self._path(len(self.sizes))))
        self.sizes.append(rows)

    def batches(self, name: str, keep: np.ndarray | None = None) -> Batches:
        """`Batches` of family `name` in table order (only the rows where `keep`, if given)."""
        def read():
            start = 0
            for index, size in enumerate(self.sizes):
                rows = np.arange(start, start + size)
                with safe_open(str(self._path(index)), framework="pt") as shard:
                    vectors = shard.get_tensor(name)
                if keep is not None:
                    inside = keep[rows]
                    rows, vectors = rows[inside], vectors[torch.from_numpy(inside)]
                start += size
                if len(rows):
                    yield rows, vectors
        return read

"""Host memory of scoring does not grow with the number of images beyond what the bootstrap needs.

Scores a synthetic protocol (a method with codes, the base model with every image its own person) from final
latents read one batch at a time, as evaluate reads them from the render caches, in a fresh process per size,
and compares the peak resident memory each run adds. Run as a script to print the numbers:
`python tests/test_eval_scoring_memory.py 500 4000`.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
LATENT = (4, 32, 32)          # 4096 values per image: a full-scale latent has 65,536
BATCH, RESAMPLES = 64, 200


def synthetic(n_images: int):
    """A table of n_images per method and `Batches` that makes each batch's latents when asked (seeded)."""
    from cocoins.eval.scoring import check_manifest

    codes = max(2, n_images // 8)
    rows = [{"path": f"{method}/{i}.png", "method": method, "identity": f"c{i % codes}", "prompt": f"p{i // codes}",
             "subject": "man" if i % 2 else "woman", "set": "portraits"}
            for method in ("cocoins", "base") for i in range(n_images)]
    table = check_manifest(pd.DataFrame(rows))

    def latents():
        for start in range(0, len(table), BATCH):
            rows = np.arange(start, min(start + BATCH, len(table)))
            g = torch.Generator().manual_seed(start)
            yield rows, torch.randn(len(rows), *LATENT, generator=g)
    return table, latents


def measure(n_images: int) -> dict:
    from cocoins.eval.host_memory import PeakRSS
    from cocoins.eval.metrics.bootstrap import Bootstrap
    from cocoins.eval.scoring import Backends, PerImage, score_table

    torch.set_num_threads(1)
    table, latents = synthetic(n_images)
    with PeakRSS(interval_s=0.001) as memory:
        scores = score_table(table, PerImage(), Backends(), "base", latents, Bootstrap(RESAMPLES, seed=0))
    base = scores.sets["portraits"]["base"]
    assert base["latent_div"] is not None and base["latent_div_ci_low"] is not None
    return {"images": len(table), "added_mib": memory.added / 2**20, "peak_mib": memory.peak / 2**20}


def run(n_images: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, str(n_images)], capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow   # two scoring runs in fresh processes: 210 s measured with load ~10 on 2 shared cores
def test_scoring_memory_does_not_grow_with_the_images():
    small, large = run(500), run(4000)
    # Holding the larger run's latents alone would add 8000 x 4096 x 4 B = 125 MiB (float32), their float64
    # copy 250 MiB, and the base's 4000 x 4000 cosine matrix 122 MiB. What grows here is the bootstrap's
    # counts, [200 resamples, 4000 images] float64 = 6 MiB, and the per-identity sums (500 codes x 4096 x 8 B
    # = 16 MiB).
    assert large["added_mib"] - small["added_mib"] < 48, (small, large)


if __name__ == "__main__":
    for size in sys.argv[1:]:
        print(json.dumps(measure(int(size))), flush=True)

"""Stage `base`: write models/base/ -- the mini SDXL trained here, the tiny one built from configs, or a
reference.json to a real SDXL."""

from __future__ import annotations

import json
import time
from dataclasses import fields
from collections import Counter
from pathlib import Path

import torch

from cocoins.config import load_params
from cocoins.io import atomic_dir, write_json
from cocoins.runtime import print_summary, run_stage, seed_everything
from cocoins.sdxl.load import REFERENCE, load_pipeline, resolve_base
from cocoins.sdxl.tiny import parameter_counts

OUT = Path("models/base")
TRAINING_SUMMARY = "mini_training.json"


def main() -> None:
    params = load_params()
    models = params.models
    extra = {"models.sdxl": models.sdxl, "written": str(OUT)}
    with atomic_dir(OUT) as tmp:
        if models.sdxl == "mini":
            from cocoins.world.mini_sdxl import MiniArchitecture
            from cocoins.world.pretrain import MiniTrainConfig, train_mini_sdxl

            m = params.mini
            seed_everything(models.seed)
            torch.set_num_threads(m.cpu_threads)   # fixed: the same weights, bit for bit, on any CPU
            # The params group and the library config share field names (the library's extra knobs keep
            # their defaults; cpu_threads is the stage's own).
            cfg = MiniTrainConfig(seed=models.seed, **{f.name: getattr(m, f.name) for f in fields(MiniTrainConfig)
                                                       if hasattr(m, f.name)})
            start = time.perf_counter()
            summary = train_mini_sdxl(tmp, cfg, MiniArchitecture(text_context=m.text_context))
            write_json({k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in summary.items()},
                       tmp / TRAINING_SUMMARY)
            extra.update({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in summary.items()})
            extra["training time"] = f"{time.perf_counter() - start:.0f} s"
        else:
            resolve_base(models.sdxl, tmp, models.seed)
    if (OUT / REFERENCE).is_file():
        # Loading a real SDXL (~7 GB) just to count its parameters is not worth it here.
        extra["reference"] = f"{OUT / REFERENCE} -> {json.loads((OUT / REFERENCE).read_text())['sdxl']}"
    else:
        pipe = load_pipeline(OUT)  # proves the directory loads the way downstream stages load it
        for name, count in parameter_counts(pipe).items():
            extra[f"params {name}"] = f"{count:,}"
    print_summary("base", kept=1, skipped=Counter(), extra=extra)


if __name__ == "__main__":
    run_stage(main)

"""Stage `base`: write models/base/ — the tiny SDXL built from configs, or a reference.json to the real one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from cocoins.config import load_params
from cocoins.io import atomic_dir
from cocoins.runtime import print_summary, run_stage
from cocoins.sdxl.load import REFERENCE, load_pipeline, resolve_base
from cocoins.sdxl.tiny import parameter_counts

OUT = Path("models/base")


def main() -> None:
    params = load_params().models
    with atomic_dir(OUT) as tmp:
        resolve_base(params.sdxl, tmp, params.seed)
    extra = {"models.sdxl": params.sdxl, "written": str(OUT)}
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

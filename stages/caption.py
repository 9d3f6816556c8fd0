"""caption: two captions per kept image (data/captions.parquet), Sec. 4.2 / Appendix D.

Backends (`caption.backend`): attributes (offline), llava (LLaVA-Next via transformers), ollama (a vision
model). Restartable and shardable with `accelerate launch`: chunks go to data/work/caption/.
"""

from collections import Counter
from pathlib import Path

import pandas as pd

from cocoins.backends.captioners import make_captioner
from cocoins.backends.preflight_data import caption_problems
from cocoins.checks import require
from cocoins.config import load_params
from cocoins.data.workdir import KEY, Dist, WorkDir, result_config, row_keys, run_chunked, stage_device
from cocoins.io import read_parquet, write_parquet
from cocoins.runtime import print_summary, run_stage

OUT, WORK = Path("data/captions.parquet"), Path("data/work/caption")
COLUMNS = ["image_id", "caption1", "caption2", "backend", "model", "kept", "reason"]


def caption_rows(captioner, images: pd.DataFrame) -> pd.DataFrame:
    """One output row per image row, captions or the reason there are none."""
    rows = []
    for (c1, c2, reason), image_id, key in zip(captioner.caption_batch(images), images["image_id"], images[KEY]):
        rows.append({"image_id": image_id, "caption1": c1, "caption2": c2, "backend": captioner.backend,
                     "model": captioner.model, "kept": reason == "", "reason": reason, KEY: key})
    return pd.DataFrame(rows, columns=COLUMNS + [KEY])


def main() -> None:
    params = load_params()
    p = params.caption
    require("caption", caption_problems(p))   # models, packages, the ollama server: seconds now rather than at the first row
    dist = Dist(p.device, params.launch.barrier_timeout_s)
    images = read_parquet("data/images.parquet", "ingest")
    upstream = int((~images["kept"]).sum())
    images = images[images["kept"]].reset_index(drop=True)
    images[KEY] = row_keys(images, ["image_id", "path", "width", "height", "attributes"])
    work = WorkDir.open(WORK, result_config(p), dist)
    captioner = make_captioner(p, stage_device(p.device, dist))   # model backends load on first use

    run = run_chunked(images, lambda chunk: caption_rows(captioner, chunk), work, p.chunk_size, "captioning",
                      dist)
    if run.table is None:
        return
    table = run.table[COLUMNS].astype({c: str for c in ["image_id", "caption1", "caption2", "backend", "model",
                                                        "reason"]} | {"kept": bool})
    write_parquet(table, OUT)
    print_summary("caption", int(table["kept"].sum()), Counter(table.loc[~table["kept"], "reason"]),
                  {"backend": captioner.backend, "model": captioner.model,
                   "processed now / reused from data/work/caption": f"{run.processed} / {run.reused}",
                   "skipped upstream (ingest)": upstream})


if __name__ == "__main__":
    run_stage(main)

"""caption: two captions per kept image (data/captions.parquet), Sec. 4.2 / Appendix D."""

import json
from collections import Counter
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from cocoins.backends.captioners import CaptionSkip, make_captioner
from cocoins.config import load_params
from cocoins.io import read_parquet, write_parquet
from cocoins.runtime import print_summary, run_stage

OUT = Path("data/captions.parquet")


def main() -> None:
    p = load_params().caption
    images = read_parquet("data/images.parquet", "ingest")
    upstream = int((~images["kept"]).sum())
    images = images[images["kept"]]
    captioner = make_captioner(p.backend, seed=p.seed)
    rows = []
    for row in tqdm(images.itertuples(index=False), total=len(images), desc="captioning", unit="img"):
        try:
            c1, c2 = captioner.caption(row.image_id, row.path, json.loads(row.attributes))
            reason = ""
        except CaptionSkip as skip:
            c1, c2, reason = "", "", str(skip)
        rows.append({"image_id": row.image_id, "caption1": c1, "caption2": c2, "backend": captioner.backend,
                     "model": captioner.model, "kept": reason == "", "reason": reason})
    table = pd.DataFrame(rows, columns=["image_id", "caption1", "caption2", "backend", "model", "kept", "reason"])
    table = table.astype({c: str for c in ["image_id", "caption1", "caption2", "backend", "model", "reason"]}
                         | {"kept": bool})
    write_parquet(table, OUT)
    print_summary("caption", int(table["kept"].sum()), Counter(table.loc[~table["kept"], "reason"]),
                  {"backend": captioner.backend, "skipped upstream (ingest)": upstream})


if __name__ == "__main__":
    run_stage(main)

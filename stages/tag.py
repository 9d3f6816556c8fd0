"""tag: subject tags in both captions of every kept caption row (data/tagged.parquet), Appendix D."""

from collections import Counter
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from cocoins.backends.taggers import make_tagger, validate_pair
from cocoins.config import load_params
from cocoins.io import read_parquet, write_parquet
from cocoins.runtime import print_summary, run_stage

OUT = Path("data/tagged.parquet")
COLUMNS = ["image_id", "tagged1", "tagged2", "backend", "attempts", "kept", "reason"]


def main() -> None:
    p = load_params().tag
    captions = read_parquet("data/captions.parquet", "caption")
    upstream = int((~captions["kept"]).sum())
    captions = captions[captions["kept"]]
    tagger = make_tagger(p.backend)
    rows = []
    for row in tqdm(captions.itertuples(index=False), total=len(captions), desc="tagging", unit="pair"):
        result = tagger.tag(row.caption1, row.caption2)
        reason = validate_pair(row.caption1, row.caption2, result)
        rows.append({"image_id": row.image_id, "tagged1": result.tagged1, "tagged2": result.tagged2,
                     "backend": tagger.backend, "attempts": result.attempts, "kept": reason == "",
                     "reason": reason})
    table = pd.DataFrame(rows, columns=COLUMNS).astype(
        {"image_id": str, "tagged1": str, "tagged2": str, "backend": str, "attempts": "int64", "kept": bool,
         "reason": str})
    write_parquet(table, OUT)
    print_summary("tag", int(table["kept"].sum()), Counter(table.loc[~table["kept"], "reason"]),
                  {"backend": tagger.backend, "skipped upstream (caption)": upstream})


if __name__ == "__main__":
    run_stage(main)

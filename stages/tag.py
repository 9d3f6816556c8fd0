"""tag: subject tags in both captions of every kept caption row (data/tagged.parquet), Appendix D.

Backends (`tag.backend`): rules (offline), ollama, transformers (cocoins/backends/llm_taggers.py).
Restartable: results go chunk by chunk to data/work/tag/ (cocoins/data/workdir.py).
"""

from collections import Counter
from pathlib import Path

import pandas as pd

from cocoins.backends.tagger_factory import make_tagger
from cocoins.backends.taggers import validate_pair
from cocoins.backends.preflight_data import tag_problems
from cocoins.checks import require
from cocoins.config import load_params
from cocoins.data.workdir import KEY, Dist, WorkDir, result_config, row_keys, run_chunked, stage_device
from cocoins.io import read_parquet, write_parquet
from cocoins.runtime import print_summary, run_stage

OUT, WORK = Path("data/tagged.parquet"), Path("data/work/tag")
COLUMNS = ["image_id", "tagged1", "tagged2", "backend", "attempts", "kept", "reason", "llm_error"]


def tag_rows(tagger, captions: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """One output row per caption row: the tags, who made them, and why a row is unusable."""
    rows = []
    for start in range(0, len(captions), batch_size):
        batch = captions.iloc[start:start + batch_size]
        pairs = list(zip(batch["caption1"], batch["caption2"]))
        for (c1, c2), image_id, key, result in zip(pairs, batch["image_id"], batch[KEY], tagger.tag_batch(pairs)):
            reason = result.llm_error if result.failed else validate_pair(c1, c2, result)
            rows.append({"image_id": image_id, "tagged1": result.tagged1, "tagged2": result.tagged2,
                         "backend": result.backend or tagger.backend, "attempts": result.attempts,
                         "kept": reason == "", "reason": reason, "llm_error": result.llm_error, KEY: key})
    return pd.DataFrame(rows, columns=COLUMNS + [KEY])


def main() -> None:
    params = load_params()
    p = params.tag
    require("tag", tag_problems(p))   # models, packages, the ollama server: seconds now rather than at the first row
    dist = Dist(p.device, params.launch.barrier_timeout_s)
    captions = read_parquet("data/captions.parquet", "caption")
    upstream = int((~captions["kept"]).sum())
    captions = captions[captions["kept"]].reset_index(drop=True)
    captions[KEY] = row_keys(captions, ["image_id", "caption1", "caption2"])
    # tag.retries is no transport setting here: it is how many answers a pair may give before the fallback.
    work = WorkDir.open(WORK, result_config(p) | {"retries": p.retries}, dist)
    tagger = None

    def process(chunk: pd.DataFrame) -> pd.DataFrame:
        nonlocal tagger
        if len(chunk) and tagger is None:
            tagger = make_tagger(p, stage_device(p.device, dist))  # loaded only if there is work
        return tag_rows(tagger, chunk, p.batch_size)

    run = run_chunked(captions, process, work, p.chunk_size, "tagging", dist)
    if run.table is None:
        return
    table = run.table[COLUMNS].astype({"image_id": str, "tagged1": str, "tagged2": str, "backend": str,
                                       "attempts": "int64", "kept": bool, "reason": str, "llm_error": str})
    write_parquet(table, OUT)
    fell_back = int((table["llm_error"] != "").sum())
    print_summary("tag", int(table["kept"].sum()), Counter(table.loc[~table["kept"], "reason"]),
                  {"backend": p.backend, "tags by": dict(Counter(table["backend"])),
                   "LLM answers not used (see llm_error)": fell_back,
                   "processed now / reused from data/work/tag": f"{run.processed} / {run.reused}",
                   "skipped upstream (caption)": upstream})


if __name__ == "__main__":
    run_stage(main)

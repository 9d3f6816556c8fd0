"""prompts: the Portraits and Scenes evaluation sets (Section 4.2) and the identities to render."""

from pathlib import Path

from cocoins.config import load_params
from cocoins.eval.prompt_sets import builtin_scene_prompts, identity_table, portrait_prompts
from cocoins.io import write_parquet
from cocoins.runtime import UserError, print_summary, run_stage

OUT = Path("data/eval")


def main() -> None:
    params = load_params()
    p = params.prompts
    if p.backend != "builtin":
        raise UserError(f"prompts.backend = {p.backend!r} is not available yet; use builtin")
    portraits = portrait_prompts(p.subjects)
    scenes = builtin_scene_prompts(p.subjects, p.scenes_per_subject)
    identities = identity_table(p.subjects, params.eval.identities_per_subject, params.eval.seed)
    write_parquet(portraits, OUT / "portraits.parquet")
    write_parquet(scenes, OUT / "scenes.parquet")
    write_parquet(identities, OUT / "identities.parquet")
    print_summary("prompts", len(portraits) + len(scenes), {},
                  {"portraits": len(portraits), "scenes": len(scenes), "identities": len(identities)})


if __name__ == "__main__":
    run_stage(main)

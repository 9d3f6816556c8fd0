"""prompts: the Portraits and Scenes evaluation sets (Section 4.2) and the identities to render."""

from pathlib import Path

from cocoins.config import load_params
from cocoins.eval.prompt_sets import builtin_scene_prompts, identity_table, portrait_prompts, world_scene_prompts
from cocoins.eval.scene_prompts import ollama_scene_prompts
from cocoins.io import write_json, write_parquet
from cocoins.runtime import print_summary, run_stage
from cocoins.world.people import SCENE_PHRASES

OUT = Path("data/eval")


def main() -> None:
    params = load_params()
    p = params.prompts
    portraits = portrait_prompts(p.subjects)
    dropped = {}
    if p.backend == "ollama":   # Appendix D instructions; stops with one line if the server fails
        generated = ollama_scene_prompts(p.subjects, p.scenes_per_setting, p.host, p.model, p.timeout, p.retries)
        scenes, dropped = generated.scenes, dict(generated.dropped)
        write_json({"backend": "ollama", "model": p.model, "dropped": dropped}, OUT / "scenes_dropped.json")
    elif p.backend == "world":
        scenes = world_scene_prompts(p.subjects, SCENE_PHRASES)
    else:
        scenes = builtin_scene_prompts(p.subjects, p.scenes_per_subject)
    identities = identity_table(p.subjects, params.eval.identities_per_subject, params.eval.seed)
    write_parquet(portraits, OUT / "portraits.parquet")
    write_parquet(scenes, OUT / "scenes.parquet")
    write_parquet(identities, OUT / "identities.parquet")
    print_summary("prompts", len(portraits) + len(scenes), dropped,
                  {"portraits": len(portraits), "scenes": len(scenes), "identities": len(identities)})


if __name__ == "__main__":
    run_stage(main)

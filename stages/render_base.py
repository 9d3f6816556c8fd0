"""render_base: the base model's renders of every evaluation job, without a pseudo-word.

The baseline the method's Sim must beat, the reference of FID and of Div (each of its images its own person)
and of scene fidelity. A stage of its own whose deps leave out the mapper, so an experiment that changes only
the mapper (`dvc exp run -S loss.gamma=...`) does not render these again. The same jobs, noises and batches as
evaluate's renders (`cocoins.eval.render_run`); restartable (a killed run resumes from its last finished
batch, `data/work/render_base/`) and split across `accelerate launch` processes with the bits of one.

Writes data/renders/base/images/ (PNG + JSON sidecars) and data/renders/base/batches/ (each batch's manifest
rows and final latents), which evaluate reads.
"""

from cocoins.checks import require
from cocoins.config import load_params
from cocoins.eval.preflight_eval import evaluate_problems
from cocoins.eval.render_run import REFERENCE, job_tables, load_renderer, render_method
from cocoins.runtime import print_summary, run_stage, seed_everything

OUT = "data/renders/base"
WORK = "data/work/render_base"
BASE = "models/base"


def main() -> None:
    params = load_params()
    e = params.eval
    require("render_base", evaluate_problems(e, params.models.sdxl, metrics=False))
    seed_everything(e.seed)
    r = load_renderer(e, BASE, params.launch.barrier_timeout_s)
    jobs = job_tables(e)
    renders = render_method(r, e, jobs, REFERENCE, None, None, WORK, f"{OUT}/images", BASE)
    if renders.batches is None:
        print(f"[render_base] process {r.dist.rank}/{r.dist.world}: rendered {renders.shard.rendered} batches; "
              "the main process publishes")
        return
    images = renders.shard.publish(OUT, with_batches=True)
    print_summary("render_base", images, {}, {
        "batches": {"rendered now": renders.shard.rendered, "kept from a killed run": renders.shard.reused,
                    "total": renders.shard.batches_seen},
        "dtype": str(r.dtype), "sliced VAE decoding": r.sliced, "per set": {k: len(v) for k, v in jobs.items()}})


if __name__ == "__main__":
    run_stage(main)

"""The GPU suite in one command: the full-size SDXL train step, generation through the project's path against
stock `StableDiffusionXLPipeline`, and the data-prep models at real sizes, all with random weights. Writes
one JSON and one Markdown table to --out. Nothing is asserted: the targets are reported as met or not.

    python benchmarks/gpu_suite.py --out gpu_suite            # one H100 / H200, about 8 minutes with --budget-s 430 (see benchmarks/README.md)
    python benchmarks/gpu_suite.py --tiny --out /tmp/suite     # tiny configs on the CPU, about a minute (the test)
    python benchmarks/gpu_suite.py --prepare-wheels .whl      # here: the wheels the lent GPU machine lacks

What it measures (the same numbers on any card; MFU against the card's dense bf16 peak from PEAK_BF16_TFLOPS,
and against an 8192^3 bf16 matrix product measured in the same run):
- train: `CocoinsStep` (benchmarks/train_step_fullsize.py: SDXL base's UNet and both text encoders from their
  published configs, bf16 frozen weights run without autocast as the train loop runs them, fp32 mapper) at 512
  and 1024 px over a batch sweep (or, --train-sweep before-after, three settings with and without the bf16
  autocast the step ran under before issue 26), with and without
  gradient checkpointing, SDPA against diffusers' plain attention processor, and `torch.compile` of the UNet
  at one setting when enough of the budget is left. FLOPs per step: torch.utils.flop_counter on one real step
  (model FLOPs: no recomputation; with checkpointing the recomputed FLOPs are reported as hardware FLOPs).
  Target: MFU >= 45% at 1024 px.
- generate: images/s at 1024 px, 30 steps, CFG, the published SDXL VAE decoding, through the project's
  evaluation path (`cocoins.eval.protocol.render`: pseudo-words from the mapper, prompt embeddings handed to
  the pipeline) against the same pipeline called stock with the plain prompt, same batch and seeds, in one
  process. Target: the project's path no slower than stock (ratio >= 0.97: timing noise).
- dataprep: benchmarks/data_prep.py at real sizes: the SDXL VAE encoding at 1024 px, Grounding DINO base +
  SAM 2.1 hiera-L, and the LLaVA-Next captioner at its 7B config (Mistral-7B + CLIP ViT-L/14-336) when the card
  has >= 40 GiB and the budget has >= 100 s left, else with 8 of Mistral's 32 layers (the reason is recorded).
Each part that fails (out of memory, a missing package) records its error and the suite goes on; each setting
that would overrun the budget is recorded as skipped.

The lent machine (Python 3.12, torch 2.11, transformers 5.17, accelerate; no diffusers, sam2 or open_clip, and
no network) gets the missing packages as wheels. Here, once, in the repository's root:

    echo /.whl/ >> .git/info/exclude
    python benchmarks/gpu_suite.py --prepare-wheels .whl     # pip download / pip wheel --no-deps, ~8 MiB

(the same as `pip download diffusers==0.42.1 --no-deps -d .whl` for each name in CARRIED_WHEELS; the ones
published only as source are built into pure-Python wheels with `pip wheel --no-deps`). Then the one prepared
command, carrying .whl (timeout 600 s):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SAM2_BUILD_CUDA=0 \
      && python3 benchmarks/gpu_suite.py --out $OUT/gpu_suite --budget-s 450

and commit $OUT/gpu_suite/* as benchmarks/results/gpu_suite-<card>.{json,md}.

A short session runs only the parts asked (--parts). Issue 26's before / after (the train step with and without
autocast in one process, its profile, generation against stock; about 4 minutes on an H200 once the wheels are
installed; timeout 480 s), results in benchmarks/results/step_casts.md:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 \
      && python3 benchmarks/gpu_suite.py --out $OUT/gpu_suite --parts train,profile,generate \
           --train-sweep before-after --budget-s 400

One job per file: this one runs the parts and writes the report; gpu_train.py (train step, profile),
gpu_generate.py (generation) and gpu_device.py (peaks, memory, budget) hold the parts; data prep is
benchmarks/data_prep.py.
"""


from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import data_prep  # noqa: E402
from gpu_device import PEAK_BF16_TFLOPS, Budget, datasheet_peak, measure_matmul, release  # noqa: E402,F401
from gpu_generate import bench_generate  # noqa: E402
from gpu_train import (BEFORE_AFTER, FULL_COMPILE, FULL_TRAIN, TINY_BEFORE_AFTER, TINY_TRAIN,  # noqa: E402,F401
                       TrainBench, TrainSetting, bench_profile, bench_train, setting_fields)

# What the lent machine lacks, pinned as in pyproject.toml / the venv (open_clip: only its CLIP BPE file).
CARRIED_WHEELS = ("diffusers==0.42.1", "importlib_metadata==10.2.0", "sam2==1.1.0", "hydra-core==1.3.8",
                  "omegaconf==2.3.1", "antlr4-python3-runtime==4.9.3", "iopath==0.1.10", "open-clip-torch==3.3.0")


# ---- data prep --------------------------------------------------------------------------------------------------
def captioner_choice(args, device: torch.device, budget: Budget) -> tuple[int, str]:
    """Mistral decoder layers for the LLaVA-Next captioner (32: the 7B config) and why."""
    if args.tiny:
        return 0, "tiny config (CPU test run)"
    if args.captioner_layers:
        return args.captioner_layers, "--captioner-layers"
    memory = torch.cuda.get_device_properties(device).total_memory / 2**30
    if memory < 40:
        return 8, f"8 of 32 Mistral layers: the card has {memory:.0f} GiB (< 40 GiB for 7B + activations)"
    if budget.left() < 100:
        return 8, f"8 of 32 Mistral layers: {budget.left():.0f} s of the time budget left (< 100 s)"
    return 32, "the 7B config"


def bench_dataprep(args, device: torch.device, budget: Budget) -> dict:
    layers, reason = captioner_choice(args, device, budget)
    argv = ["--device", str(device.type), "--stages", "precompute,mask,caption"]
    if args.tiny:
        argv += ["--tiny", "--images", "2", "--batch", "2", "--new-tokens", "3"]
    else:
        argv += ["--gpu", "--detector", "base", "--sam2", "l", "--images", str(args.prep_images), "--batch", "8",
                 "--captioner-layers", str(layers)]
    report = data_prep.main(argv)
    report["models"] = {"precompute": "SDXL VAE encoder at 1024 px" if not args.tiny else "tiny VAE",
                        "mask": "Grounding DINO base (Swin-B) + SAM 2.1 hiera-L" if not args.tiny else "tiny configs",
                        "caption": ("LLaVA-Next, CLIP ViT-L/14-336 + Mistral-7B width, "
                                    f"{layers} of 32 layers" if not args.tiny else "tiny LLaVA-Next")}
    report["captioner_reason"] = reason
    report["argv"] = argv
    release()
    return report


# ---- the run ----------------------------------------------------------------------------------------------------
def run_part(results: dict, name: str, fn):
    """A part that fails records its error; the others still run."""
    start = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as err:   # noqa: BLE001 -- recorded in the report, not hidden
        where = traceback.extract_tb(err.__traceback__)[-3:]
        results[name] = {"error": f"{type(err).__name__}: {err}",
                         "where": [f"{f.filename}:{f.lineno} {f.name}" for f in where]}
        print(f"{name} failed: {type(err).__name__}: {err}", flush=True)
        traceback.print_exc()
    results.setdefault("part_seconds", {})[name] = round(time.perf_counter() - start, 1)
    release()


def targets(results: dict, tiny: bool) -> list[dict]:
    rows = [r for r in results.get("train", {}).get("rows", [])
            if r.get("resolution") == (32 if tiny else 1024) and not r.get("autocast")]   # the project's path
    mfus = [r["mfu"] for r in rows if r.get("mfu") is not None]
    ratio = results.get("generate", {}).get("project_over_stock")
    return [{"name": "train step MFU at 1024 px (best setting)", "target": ">= 0.45",
             "value": max(mfus) if mfus else None, "met": (max(mfus) >= 0.45) if mfus else None},
            {"name": "generation, project path / stock images/s", "target": ">= 0.97 (no slower, timing noise)",
             "value": ratio, "met": None if ratio is None or tiny else ratio >= 0.97}]


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(report: dict) -> str:
    d, p = report["device"], report["peaks"]
    lines = [f"# GPU suite: {d['name']}", "",
             f"`{report['command']}` | torch {report['versions']['torch']}, "
             f"diffusers {report['versions']['diffusers']}, "
             f"transformers {report['versions']['transformers']} | {report['mode']} | {report['seconds']:.0f} s", "",
             f"Peak: datasheet dense bf16 {fmt(p['datasheet_bf16_dense_tflops'])} TFLOP/s ({p['datasheet_source']}); "
             f"measured {p['matmul']}: {fmt(p['measured_matmul_tflops'])} TFLOP/s.", "",
             "## Targets", "", "| target | wanted | measured | met |", "|---|---|---|---|"]
    lines += [f"| {t['name']} | {t['target']} | {fmt(t['value'])} | {fmt(t['met'])} |" for t in report["targets"]]
    train = report["parts"].get("train", {})
    lines += ["", "## Train step (CocoinsStep, frozen bf16 SDXL, fp32 mapper)", ""]
    if "error" in train:
        lines.append(f"error: {train['error']}")
    else:
        lines += ["| px | batch | checkpointing | attention | compile | autocast | samples/s | s/step | "
                  "model TFLOP/step | TFLOP/s | MFU | MFU vs matmul | peak GiB | note |", "|" + "---|" * 14]
        for r in train.get("rows", []):
            note = r.get("skipped") or ("out of memory" if r.get("out_of_memory") else
                                        (f"compile {r['compile_s']} s" if "compile_s" in r else ""))
            lines.append(f"| {r['resolution']} | {r['batch']} | {fmt(r['checkpointing'])} | {r['attention']} | "
                         f"{fmt(r['compile'])} | {fmt(r.get('autocast', False))} | {fmt(r.get('samples_per_s'))} | {fmt(r.get('step_s'))} | "
                         f"{fmt(r.get('model_tflop_per_step'))} | {fmt(r.get('achieved_tflops'))} | "
                         f"{fmt(r.get('mfu'))} | {fmt(r.get('mfu_vs_measured_matmul'))} | "
                         f"{fmt(r.get('peak_memory_gib'))} | {note} |")
    prof = report["parts"].get("profile", {})
    if prof:
        lines += ["", "## Where a train step's time goes (torch.profiler)", ""]
        if "error" in prof:
            lines.append(f"error: {prof['error']}")
        else:
            st = prof["setting"]
            lines += [f"{st['resolution']} px, batch {st['batch']}, {st['attention']}: wall {fmt(prof['wall_ms_per_step'])} ms "
                      f"per step, {prof['clock']} busy {fmt(prof['busy_ms_per_step'])} ms "
                      f"({fmt(prof['busy_share_of_wall'])} of the wall clock).", "",
                      "| kind | share of busy time |", "|---|---|"]
            lines += [f"| {k} | {fmt(v)} |" for k, v in prof["share_by_kind"].items()]
            lines += ["", "| top op / kernel | calls per step | ms per step |", "|---|---|---|"]
            lines += [f"| `{t['name']}` | {fmt(t['calls_per_step'])} | {fmt(t['ms_per_step'])} |" for t in prof["top"]]
    gen = report["parts"].get("generate", {})
    lines += ["", "## Generation", ""]
    if "error" in gen:
        lines.append(f"error: {gen['error']}")
    elif gen:
        lines += [f"{gen['resolution']} px, {gen['steps']} steps, guidance {gen['guidance']}, batch {gen['batch']}, "
                  f"{gen['images']} images, {fmt(gen['tflop_per_image'])} TFLOP per image (counted); project / "
                  f"stock = {fmt(gen['project_over_stock'])}", "",
                  "| path | images/s | TFLOP/s | MFU | peak GiB |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {fmt(v['images_per_s'])} | {fmt(v['achieved_tflops'])} | {fmt(v['mfu'])} | "
                  f"{fmt(v['peak_memory_gib'])} |" for name, v in gen["paths"].items()]
    prep = report["parts"].get("dataprep", {})
    lines += ["", "## Data prep (benchmarks/data_prep.py)", ""]
    if "error" in prep:
        lines.append(f"error: {prep['error']}")
    elif prep:
        lines += [f"captioner: {prep['captioner_reason']}", "",
                  "| stage | models | images | images/s | peak GiB |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {prep['models'].get(name, '')} | {s['images']} | {fmt(s['images_per_s'])} | "
                  f"{fmt(s.get('peak_gib'))} |" for name, s in prep["stages"].items()]
    return "\n".join(lines) + "\n"


def prepare_wheels(folder: Path) -> None:
    """Download (or, for the source-only releases, build here) the wheels in CARRIED_WHEELS into `folder`.
    No build isolation: sam2's build wants torch, which this venv has (an isolated build would fetch it)."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(folder),
           *CARRIED_WHEELS]
    subprocess.run(cmd, check=True, env={**os.environ, "SAM2_BUILD_CUDA": "0"})
    wheels = sorted(folder.glob("*.whl"))
    print(f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 2**20:.1f} MiB in {folder}")


def versions() -> dict:
    import importlib.metadata as md

    found = {}
    for name in ("torch", "diffusers", "transformers", "sam2"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    return found


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (tests this script)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    parser.add_argument("--parts", default="train,profile,generate,dataprep,compile",
                        help="the parts to run, comma-separated (e.g. train,generate for a short session)")
    parser.add_argument("--train-sweep", choices=("full", "before-after"), default="full",
                        help="train settings: the batch sweep, or before-after: 1024 px batch 4 and 6 and 512 px "
                             "batch 16, each with bf16 autocast (the path before issue 26) and without (the loop's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 with --tiny: two threads on busy cores spin)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget for the whole suite")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the card (default: the table)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed steps per train setting (2 warm-ups)")
    parser.add_argument("--gen-steps", type=int, default=30)
    parser.add_argument("--gen-resolution", type=int, default=1024)
    parser.add_argument("--gen-batch", type=int, default=4)
    parser.add_argument("--gen-images", type=int, default=8)
    parser.add_argument("--prep-images", type=int, default=16)
    parser.add_argument("--captioner-layers", type=int, default=0, help="Mistral layers (default: 32 if it fits)")
    parser.add_argument("--prepare-wheels", type=Path, metavar="DIR", help="only fetch the wheels to carry")
    args = parser.parse_args(argv)
    if args.prepare_wheels:
        prepare_wheels(args.prepare_wheels)
        return {}
    if args.out is None:
        parser.error("--out DIR is required")
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run the suite on a GPU, or add --tiny to test it on the CPU")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.threads or args.tiny:
        torch.set_num_threads(args.threads or 1)
    budget = Budget(args.budget_s)
    parts = args.parts.split(",")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    datasheet, source = (args.peak_tflops, "--peak-tflops") if args.peak_tflops else datasheet_peak(device)
    n = 256 if args.tiny else 8192
    peaks = {"datasheet_bf16_dense_tflops": datasheet, "datasheet_source": source,
             "matmul": f"{n}^3 {str(dtype).removeprefix('torch.')} matmul",
             "measured_matmul_tflops": measure_matmul(device, dtype, n, 3 if args.tiny else 10)}
    print(f"device {name}, peaks {json.dumps(peaks)}", flush=True)
    results: dict = {}
    command = " ".join(["python benchmarks/gpu_suite.py", *(argv if argv is not None else sys.argv[1:])])
    info = {"suite": "benchmarks/gpu_suite.py", "command": command,
            "mode": "tiny configs, CPU" if args.tiny else "full size, random weights",
            "device": {"name": name, "type": device.type, "dtype": str(dtype),
                       "memory_gib": (round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
                                      if device.type == "cuda" else None)},
            "versions": versions(), "python": platform.python_version(), "peaks": peaks, "budget_s": args.budget_s}

    def write_report() -> dict:
        """After every part, so that a run stopped from outside still leaves what it measured."""
        report = {**info, "parts": results, "targets": targets(results, args.tiny), "seconds": budget.elapsed()}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "gpu_suite.md").write_text(markdown(report))
        return report

    steps, warmup = (1, 1) if args.tiny else (args.train_steps, 2)
    benches: dict = {}

    def train_bench() -> TrainBench:   # one set of full-size towers for train, profile and compile
        if "bench" not in benches:
            benches["bench"] = TrainBench(args.tiny, device, dtype, steps, warmup)
        return benches["bench"]

    sweeps = {"full": TINY_TRAIN if args.tiny else FULL_TRAIN,
              "before-after": TINY_BEFORE_AFTER if args.tiny else BEFORE_AFTER}
    if "train" in parts:   # leaves 150 s of the budget to the parts after it
        run_part(results, "train", lambda: {"rows": bench_train(train_bench(), sweeps[args.train_sweep], budget,
                                                                 0.0 if args.tiny else 150.0, peaks)})
        write_report()
    if "profile" in parts:
        setting = TINY_TRAIN[0] if args.tiny else TrainSetting(1024, 4)
        run_part(results, "profile", lambda: bench_profile(train_bench(), setting))
        write_report()
    benches.clear()   # the train towers leave the card before generation and data prep load theirs
    release()
    if "generate" in parts:
        run_part(results, "generate", lambda: bench_generate(args, device, dtype, peaks))
        write_report()
    if "dataprep" in parts:
        run_part(results, "dataprep", lambda: bench_dataprep(args, device, budget))
        write_report()
    if "compile" in parts:   # last: compiling the UNet and its backward takes minutes; only with 300 s left
        if args.tiny:
            rows = [{**setting_fields(TrainSetting(32, 2, compile=True)), "skipped": "tiny CPU run: compile not timed"}]
        else:
            run_part(results, "compile", lambda: {"rows": bench_train(train_bench(),
                                                                       [FULL_COMPILE], budget, 300.0, peaks)})
            compiled = results.pop("compile")
            rows = compiled.get("rows") or [{**setting_fields(FULL_COMPILE), "error": compiled.get("error")}]
        results.setdefault("train", {}).setdefault("rows", []).extend(rows)
    report = write_report()
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()

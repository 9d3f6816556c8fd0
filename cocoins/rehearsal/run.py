"""The rehearsal: the full-scale profile through the real `dvc repro`, on models of the real architectures.

    python -m cocoins.rehearsal.run --out /tmp/rehearsal                         # CPU, reduced depth, 2 processes
    python -m cocoins.rehearsal.run --out /tmp/r --depth full --device cuda --resolution 1024 --images 16

What it does, in a scratch copy of this project (its tracked files, a fresh git repo):
1. builds random-weight models into `OUT/models` (cocoins/rehearsal/architectures.py; `--depth reduced`:
   real widths, vocabularies and processors with fewer blocks; `full`: the published configs; `tiny`: the
   test suite's tiny models, for checking this script itself) and writes `--images` CelebA-HQ-format
   portraits (cocoins/rehearsal/portraits.py);
2. starts a stand-in ollama server on loopback (ollama_standin.py) for the tag and prompts stages;
3. applies `profiles/full-scale.yaml` with only counts and steps cut (images, train steps, evaluation
   identities, denoising steps) and the paths of the built models, and `--resolution` (1024 at full scale);
4. runs `cocoins preflight`, then `dvc repro -s STAGE` for each stage in order under the profile's launchers
   (`accelerate launch --num_processes N`), timing each and recording the peak resident memory of its
   largest process and, on CUDA, the peak GPU memory seen by nvidia-smi;
5. writes `OUT/rehearsal.json` and `OUT/rehearsal.md`, with each stage's time, memory and counts and, on a
   GPU, a linear extrapolation to the paper's run (upper bound: model loading is counted as per-item work).
ArcFace and DreamSim are left out (face_backend none, no DreamSim): no package here ships their
architectures to build offline; the evaluate stage reports them null, as it says up front.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import string
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "full-scale.yaml"
TAGGER_MODEL = "llama3.1:8b"
SUMMARY = re.compile(r"^\[(\w+)\] kept (\d+), skipped (\d+)", re.M)
SKIPPED = re.compile(r"Stage '[\w@-]+' (didn't change, skipping|is cached - skipping run)")   # DVC's two skips
# The paper's run (Section 4.2, Table 7), for the extrapolation: what each stage processes.
PAPER_ITEMS = {"caption": 20000, "tag": 20000, "mask": 20000, "precompute": 20000, "train": 5000}


@dataclass
class RehearsalConfig:
    out: Path
    depth: str = "reduced"        # tiny | reduced | full
    device: str = "cpu"           # cpu | cuda
    processes: int = 2
    images: int = 4
    resolution: int = 256         # SDXL px for precompute, train and evaluate (the paper's: 1024)
    train_steps: int = 2
    seed: int = 0
    resume: bool = False          # keep OUT/project and go on from its first stage that is not up to date


@dataclass
class StageRun:
    stage: str
    seconds: float
    peak_rss_gib: float
    peak_gpu_gib: float | None
    kept: int | None
    skipped: int | None
    returncode: int
    tail: str = field(default="", repr=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(config: RehearsalConfig) -> str:
    """The profile's `accelerate launch`, with the process count and, on CPU, gloo across processes."""
    if config.processes == 1:
        return "python"
    parts = ["accelerate launch", f"--num_processes {config.processes}", "--num_machines 1",
             "--dynamo_backend no", f"--main_process_port {free_port()}"]
    if config.device == "cpu":
        parts.insert(1, "--multi_gpu")   # with every device set to cpu, accelerate runs MULTI_CPU over gloo
    return " ".join(parts)


def _grounding_input(model_dir: Path, size: dict) -> None:
    """Resize what a saved Grounding DINO processor feeds its model. The tiny detector's own 64 px leaves a square
    portrait a 1 x 1 map at the extra feature level, where GroupNorm(32) has one value per group and refuses."""
    from transformers import GroundingDinoProcessor

    processor = GroundingDinoProcessor.from_pretrained(model_dir)
    processor.image_processor.size = size
    processor.save_pretrained(model_dir)


def build_models(config: RehearsalConfig) -> dict:
    """{name: path or setting} of every model the profile names, built once into OUT/models."""
    target = config.out / "models"
    record = target / "models.json"
    if record.is_file():
        built = json.loads(record.read_text())
        if built.get("_depth") == config.depth:
            return built
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    if config.depth == "tiny":
        from cocoins.backends.tiny import (GROUNDING_WORDS, SAM2_CONFIG, SAM2_TINY_OVERRIDES, build_tiny_grounding_dino,
                                           build_tiny_llava)
        from cocoins.sdxl.tiny import save_tiny_sdxl

        # The tiny LLaVA's random captions are byte pieces, so the stand-in tagger marks a piece such as "g" as the
        # subject: with single letters in its vocabulary the tiny detector can ground it (else every image is
        # dropped at mask as "no subject box" and nothing after mask runs).
        letters = tuple(c for c in string.ascii_lowercase + string.digits if c not in GROUNDING_WORDS)
        detector = build_tiny_grounding_dino(target / "grounding-dino", config.seed, words=GROUNDING_WORDS + letters)
        _grounding_input(detector, {"shortest_edge": 128, "longest_edge": 192})
        built = {"sdxl": str(save_tiny_sdxl(target / "sdxl", config.seed)),
                 "llava": str(build_tiny_llava(target / "llava", config.seed)),
                 "grounding_dino": str(detector),
                 "sam2_checkpoint": "random", "sam2_config": SAM2_CONFIG, "sam2_overrides": list(SAM2_TINY_OVERRIDES),
                 "clip": None, "fid": None}
    else:
        from cocoins.rehearsal.architectures import sam2_overrides
        from cocoins.rehearsal.build import build_all

        built = dict(build_all(target, config.depth, config.seed, device=config.device))
        built["fid"] = built.pop("fid_weights")
        built["sam2_overrides"] = sam2_overrides(config.depth)
    built["_depth"] = config.depth
    record.write_text(json.dumps(built, indent=2))
    return built


def write_portraits(config: RehearsalConfig) -> Path:
    root = config.out / "celeba-hq"
    if not root.is_dir():
        from cocoins.rehearsal.portraits import write_celeba_hq

        write_celeba_hq(root, config.images, config.seed)
    return root


def overrides(config: RehearsalConfig, models: dict, data_root: Path, host: str) -> dict:
    """What the rehearsal changes in the full-scale profile: counts, steps, built models' paths, devices."""
    from cocoins.runtime import threads_per_process   # torch: imported when used, as the rest of this module does

    device, run = config.device, launcher(config)
    chunk = max(1, config.images // max(1, config.processes))
    return {
        "data": {"root": str(data_root), "limit": config.images},
        "caption": {"model": models["llava"], "max_new_tokens": 8, "batch_size": 2, "chunk_size": chunk,
                    "device": device},
        "tag": {"host": host, "model": TAGGER_MODEL, "retry_wait": 0.1, "batch_size": 2, "chunk_size": chunk},
        # Random Grounding DINO weights find about 150 distinct "faces" per portrait (CPU probe, reduced depth);
        # max_faces lets those images through, so that the stages after mask run on them. The counter itself
        # runs as at full scale (same model, prompt, thresholds and NMS).
        "mask": {"detector": models["grounding_dino"], "sam2_checkpoint": models["sam2_checkpoint"], "max_faces": 100000,
                 "sam2_overrides": models.get("sam2_overrides"), "batch_size": 2, "chunk_size": chunk,
                 **({"sam2_config": models["sam2_config"]} if models.get("sam2_config") else {}),
                 "device": device},
        "models": {"sdxl": models["sdxl"]},
        "precompute": {"resolution": config.resolution, "batch_size": 2, "device": device},
        "train": {"steps": config.train_steps, "batch_size": 2 * config.processes, "micro_batch_size": 1,
                  "warmup_steps": 1, "checkpoint_every": 1, "device": device},
        "prompts": {"host": host, "model": TAGGER_MODEL, "subjects": ["man", "woman"], "scenes_per_setting": 2},
        "eval": {"identities_per_subject": 1, "scene_identities_per_subject": 1, "seeds_per_prompt": 2,
                 "steps": 2, "resolution": config.resolution, "batch_size": 2, "bootstrap_resamples": 20,
                 "neighbor_codes": 2, "interpolation_steps": 2, "face_backend": "none", "arcface_dir": None,
                 "dreamsim_cache": None, "clip_model": models.get("clip"), "fid_weights": models.get("fid"),
                 "strict": False, "device": device,   # ArcFace and DreamSim cannot be built here: null
                 # On the CPU each process renders on its share of the cores (the profile's 2 threads per
                 # process ran the tiny evaluate 5x as long as one process alone: four threads on two cores).
                 **({"cpu_threads": threads_per_process(config.processes)} if device == "cpu" else {})},
        "launch": {"data": run, "train": run, "evaluate": run},
    }


def scratch_project(dest: Path, env: dict) -> None:
    """This project's tracked files (as in the working tree) in a fresh git repo at `dest`."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    subprocess.run("git init -q && git add -A && git commit -qm rehearsal", shell=True, cwd=dest, env=env,
                   check=True)


def _earlier_stages(record: Path) -> list[dict]:
    """The stage rows of an earlier run's rehearsal.json (none if there is none)."""
    return json.loads(record.read_text())["stages"] if record.is_file() else []


def dvc_stages(project: Path) -> list[str]:
    return list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])


class GpuMemoryPeak:
    """Peak used GPU memory (GiB, the most on any GPU) sampled with nvidia-smi every 0.2 s while running."""

    def __init__(self):
        self.peak, self._stop = None, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                used = max(float(x) for x in out.split()) / 1024
                self.peak = used if self.peak is None else max(self.peak, used)
            except (OSError, ValueError, subprocess.SubprocessError):
                return
            self._stop.wait(0.2)

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def run_stage(stage: str, project: Path, env: dict, cuda: bool) -> StageRun:
    """`dvc repro -s STAGE` in a wrapper process whose RUSAGE_CHILDREN peak is this stage's largest process."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print('REHEARSAL_MAXRSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.exit(r.returncode)")
    start = time.monotonic()
    with GpuMemoryPeak() as gpu:
        proc = subprocess.run([sys.executable, "-c", wrapper, "dvc", "repro", "-s", stage], cwd=project, env=env,
                              capture_output=True, text=True)
    seconds = time.monotonic() - start
    output = proc.stdout + proc.stderr
    rss = re.search(r"REHEARSAL_MAXRSS_KIB (\d+)", proc.stdout)
    found = [m for m in SUMMARY.finditer(output) if m.group(1) == stage]
    return StageRun(stage, round(seconds, 1), round(int(rss.group(1)) / 2**20, 2) if rss else 0.0,
                    round(gpu.peak, 1) if cuda and gpu.peak is not None else None,
                    int(found[-1].group(2)) if found else None, int(found[-1].group(3)) if found else None,
                    proc.returncode, output[-4000:])


def extrapolate(runs: list[StageRun], config: RehearsalConfig, gpus: tuple[int, ...] = (4, 8)) -> list[dict]:
    """Seconds of the paper's run per stage on `gpus` GPUs, linear in items from this run (upper bound)."""
    rows = []
    for run in runs:
        items = {"train": config.train_steps}.get(run.stage, config.images if run.stage in PAPER_ITEMS else None)
        if not items or run.stage not in PAPER_ITEMS or run.returncode:
            continue
        per_item = run.seconds * config.processes / items   # one process's time per item
        if run.stage == "train":   # a step's time is set by the global batch: 128 samples against this run's
            per_item = run.seconds / items * 128 / (2 * config.processes)
        rows.append({"stage": run.stage, "measured_items": items, "measured_s": run.seconds,
                     **{f"paper_h_{n}gpu": round(PAPER_ITEMS[run.stage] * per_item / n / 3600, 2) for n in gpus}})
    return rows


def markdown(report: dict) -> str:
    c = report["config"]
    lines = [f"# Rehearsal: {c['depth']} depth, {c['device']}, {c['processes']} process(es), {c['images']} images, "
             f"{c['resolution']} px", "", f"`{report['command']}`", "",
             f"Preflight: {report['preflight']}", "",
             "| stage | rc | s | peak RSS GiB (largest process) | peak GPU GiB | kept | skipped |",
             "|---|---|---|---|---|---|---|"]
    for r in report["stages"]:
        lines.append(f"| {r['stage']} | {r['returncode']} | {r['seconds']} | {r['peak_rss_gib']} | "
                     f"{r['peak_gpu_gib'] if r['peak_gpu_gib'] is not None else '-'} | "
                     f"{r['kept'] if r['kept'] is not None else '-'} | {r['skipped'] if r['skipped'] is not None else '-'} |")
    if report.get("extrapolation"):
        lines += ["", "Extrapolated to the paper's run (20K images, 5,000 steps at batch 128), hours, linear in "
                  "items from the times above (model loading counted as per-item work, so an upper bound):", "",
                  "| stage | measured items | measured s | 4 GPUs (h) | 8 GPUs (h) |", "|---|---|---|---|---|"]
        for r in report["extrapolation"]:
            lines.append(f"| {r['stage']} | {r['measured_items']} | {r['measured_s']} | {r['paper_h_4gpu']} | "
                         f"{r['paper_h_8gpu']} |")
    return "\n".join(lines) + "\n"


def rehearse(config: RehearsalConfig) -> dict:
    from cocoins.rehearsal.ollama_standin import OllamaStandIn
    from cocoins.tools.profile import apply_mapping, merge, read_profile

    config.out = config.out.resolve()
    config.out.mkdir(parents=True, exist_ok=True)
    project = config.out / "project"
    resume = config.resume and (project / "dvc.yaml").is_file()
    # Resuming, the stand-in serves on the port the project's params name, so that no stage's params change.
    before = yaml.safe_load((project / "params.yaml").read_text()) if resume else {}
    port = urlparse(before["tag"]["host"]).port if resume else 0
    earlier = {r["stage"]: r for r in _earlier_stages(config.out / "rehearsal.json")} if resume else {}
    if not resume:
        shutil.rmtree(project, ignore_errors=True)
        project.mkdir()
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYTHONPATH": str(project),
           "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(config.out / "hf"),
           "TOKENIZERS_PARALLELISM": "false", "GIT_AUTHOR_NAME": "r", "GIT_AUTHOR_EMAIL": "r@r",
           "GIT_COMMITTER_NAME": "r", "GIT_COMMITTER_EMAIL": "r@r"}
    if config.device == "cpu":
        from cocoins.runtime import threads_per_process

        env.update(OMP_NUM_THREADS=str(threads_per_process(config.processes)), CUDA_VISIBLE_DEVICES="")
    models = build_models(config)
    data_root = write_portraits(config)
    if not resume:
        scratch_project(project, env)
    with OllamaStandIn(TAGGER_MODEL, scenes_per_turn=2, port=port) as ollama:
        changes = overrides(config, models, data_root, ollama.host)
        if resume:   # the launchers name a free port; a new one would change every launched stage's params
            changes["launch"] = {k: before["launch"][k] for k in changes["launch"]}
        apply_mapping(merge(read_profile(PROFILE), changes), project / "params.yaml")
        pre = subprocess.run([sys.executable, "-m", "cocoins.preflight"], cwd=project, env=env,
                             capture_output=True, text=True)
        runs: list[StageRun] = []
        if pre.returncode == 0:
            for stage in dvc_stages(project):
                runs.append(run_stage(stage, project, env, config.device == "cuda"))
                if SKIPPED.search(runs[-1].tail) and stage in earlier:   # done before: keep what it measured
                    runs[-1] = StageRun(**{k: earlier[stage].get(k) for k in StageRun.__dataclass_fields__
                                           if k != "tail"}, tail=runs[-1].tail)
                print(f"[rehearsal] {stage}: rc {runs[-1].returncode}, {runs[-1].seconds} s, "
                      f"peak RSS {runs[-1].peak_rss_gib} GiB", flush=True)
                if runs[-1].returncode:
                    print(runs[-1].tail, file=sys.stderr)
                    break
    report = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
              "command": "python -m cocoins.rehearsal.run " + " ".join(sys.argv[1:]),
              "preflight": pre.stdout.strip().splitlines()[-1] if pre.stdout.strip() else pre.stderr.strip(),
              "preflight_problems": pre.stdout.strip().splitlines()[:-1] if pre.returncode else [],
              "stages": [{k: v for k, v in asdict(r).items() if k != "tail"} for r in runs],
              "ok": pre.returncode == 0 and bool(runs) and all(r.returncode == 0 for r in runs)}
    if config.device == "cuda":
        report["extrapolation"] = extrapolate(runs, config)
    (config.out / "rehearsal.json").write_text(json.dumps(report, indent=2) + "\n")
    (config.out / "rehearsal.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cocoins.rehearsal.run", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--depth", choices=["tiny", "reduced", "full"], default="reduced")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--resume", action="store_true",
                        help="keep OUT/project and go on from its first stage that is not up to date")
    args = parser.parse_args(argv)
    report = rehearse(RehearsalConfig(args.out, args.depth, args.device, args.processes, args.images,
                                      args.resolution, args.train_steps, resume=args.resume))
    print(markdown(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Rendered evaluation images on disk, each with a JSON sidecar that is enough to render it again.

Layout: `<root>/<set>/<method>/<identity>/<prompt_id>_n<noise_seed>.png` + `.json` beside it. The sidecar is
the `cocoins generate` sidecar (prompt, seed, steps, guidance, height, width, model, codes, mapper with the
sha256 of its weights), so `cocoins generate --sidecar X.json --out again.png` renders any evaluation image
again; the `eval` key adds where it belongs (method, set, identity, ...) and the base model folder's sha256.
Re-rendered images match to within 1/255 per pixel: the evaluation renders in batches, and batch size
changes the order of float sums.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import pandas as pd

from cocoins.data.tags import strip_tags

SIDECAR_KEYS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "height", "width", "model", "device",
                "codes", "mapper", "command", "eval")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dir_sha256(path: str | os.PathLike) -> str:
    """sha256 over a folder's files (relative path and content sha256, sorted by path)."""
    root = Path(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(root).as_posix()}\0{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def mapper_record(mapper_dir: str) -> dict:
    """The `mapper` entry of a sidecar, as `cocoins generate` writes and checks it."""
    from cocoins.method.mapper import WEIGHTS_NAME
    return {"dir": Path(mapper_dir).as_posix(), "sha256": file_sha256(Path(mapper_dir) / WEIGHTS_NAME)}


def image_relpath(set_name: str, method: str, job) -> str:
    return f"{set_name}/{method}/{job.identity_id}/{job.prompt_id}_n{int(job.noise_seed)}.png"


def sidecar(set_name: str, method: str, job, steps: int, guidance: float, resolution: int, model_dir: str,
            model_sha256: str, mapper: Optional[dict], device: str, json_path: str) -> dict:
    return {"prompt": job.tagged, "negative_prompt": None, "seed": int(job.noise_seed), "steps": steps,
            "guidance": guidance, "height": resolution, "width": resolution, "model": model_dir, "device": device,
            "codes": [{"code_seed": int(job.code_seed)}] if mapper is not None else [], "mapper": mapper,
            "command": f"cocoins generate --sidecar {json_path} --out again.png",
            "eval": {"method": method, "set": set_name, "identity": job.identity_id, "subject": job.subject,
                     "setting": job.setting, "prompt_id": job.prompt_id, "plain_prompt": strip_tags(job.tagged),
                     "model_sha256": model_sha256}}


def write_images(root: Path, set_name: str, method: str, jobs: pd.DataFrame, images: list, steps: int,
                 guidance: float, resolution: int, model_dir: str, model_sha256: str, mapper: Optional[dict],
                 prefix: str, device: str = "cpu") -> list[dict]:
    """Save each image + sidecar under `root` (to be moved to `prefix`); return manifest rows with paths
    under `prefix` (the score_folder manifest columns, plus prompt_id, code_seed, noise_seed)."""
    rows = []
    for job, image in zip(jobs.itertuples(), images):
        rel = image_relpath(set_name, method, job)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / rel, optimize=False)
        json_rel = f"{prefix}/{rel[:-len('.png')]}.json"
        meta = sidecar(set_name, method, job, steps, guidance, resolution, model_dir, model_sha256, mapper, device,
                       json_rel)
        (root / rel).with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        rows.append({"path": f"{prefix}/{rel}", "method": method, "identity": job.identity_id,
                     "prompt": meta["eval"]["plain_prompt"], "subject": job.subject, "set": set_name,
                     "setting": job.setting, "prompt_id": job.prompt_id,
                     "code_seed": int(job.code_seed) if mapper is not None else None,
                     "noise_seed": int(job.noise_seed)})
    return rows


def reproduce(meta: dict, pipe, encoder, mapper=None, check_models: bool = True):
    """Render the image a sidecar describes again (a PIL image). With `check_models`, refuse a base model or
    mapper whose sha256 differs from the recorded one."""
    from cocoins.eval.protocol import render

    if (meta["mapper"] is None) != (mapper is None):
        raise ValueError("this sidecar was rendered " + ("without" if meta["mapper"] is None else "with") +
                         " a mapper; pass mapper=" + ("None" if meta["mapper"] is None else "Mapper.load(...)"))
    if len(meta["codes"]) > 1:
        raise ValueError("evaluation sidecars have one subject; use `cocoins generate --sidecar` for more")
    if check_models:
        if dir_sha256(meta["model"]) != meta["eval"]["model_sha256"]:
            raise ValueError(f"{meta['model']} differs from the model this image was rendered with (sha256 "
                             "mismatch); check out the matching revision (`dvc checkout`) or pass check_models=False")
        if meta["mapper"] is not None and mapper_record(meta["mapper"]["dir"])["sha256"] != meta["mapper"]["sha256"]:
            raise ValueError(f"{meta['mapper']['dir']} is not the mapper this image was rendered with")
    e = meta["eval"]
    code_seed = meta["codes"][0]["code_seed"] if meta["codes"] else 0
    job = pd.DataFrame([{"identity_id": e["identity"], "subject": e["subject"], "code_seed": code_seed,
                         "prompt_id": e["prompt_id"], "setting": e["setting"], "tagged": meta["prompt"],
                         "noise_seed": meta["seed"]}])
    return render(pipe, encoder, mapper, job, meta["steps"], meta["guidance"], meta["height"], 1, "reproduce").images[0]

"""Evaluation rendering under `accelerate launch --num_processes 2` (gloo on CPU): the same image bytes, job
order and latents as one process, and one process the same as evaluate rendered before sharding.

Run as a script (`accelerate launch tests/test_eval_sharding.py OUT`), this file renders a tiny job table
through `cocoins.eval.sharding` exactly as stages/evaluate.py does.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from cocoins.data.workdir import Dist
from cocoins.eval.prompt_sets import identity_table, portrait_prompts
from cocoins.eval.protocol import make_jobs, render
from cocoins.eval.renders import write_images
from cocoins.eval.sharding import ShardedRender, batch_spans
from cocoins.method.mapper import Mapper, MapperConfig
from cocoins.sdxl.encode import PromptEncoder
from cocoins.sdxl.tiny import build_tiny_sdxl

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")
CHUNK, BATCH, STEPS = 3, 2, 2      # chunks of 3 cut into batches of 2: batches of 2, 1, 2, 1, 2
MAPPER_RECORD = {"dir": "models/mapper", "sha256": "0" * 64}


def tiny_setup():
    pipe = build_tiny_sdxl(0)      # seeded: identical weights in every process
    pipe.set_progress_bar_config(disable=True)
    encoder = PromptEncoder.from_pipeline(pipe)
    torch.manual_seed(0)
    mapper = Mapper(MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=encoder.pseudo_word_dims)).eval()
    subjects = ("man", "woman")
    jobs = make_jobs(identity_table(subjects, 2, seed=7), portrait_prompts(subjects), 2, 7)   # 8 jobs
    return pipe, encoder, mapper, jobs


def methods(mapper):
    return (("cocoins", mapper), ("base", None))


def render_sharded(out: Path) -> None:
    """evaluate's render loop on the tiny job table; the main process saves the gathered rows and latents."""
    torch.set_num_threads(1)
    pipe, encoder, mapper, jobs = tiny_setup()
    shard = ShardedRender(Dist("cpu"), out / "work", {"test": "tiny"})
    for method, m in methods(mapper):
        for index, rows in shard.batches(len(jobs), CHUNK, BATCH, method):
            r = render(pipe, encoder, m, jobs.iloc[rows], STEPS, 5.0, 32, BATCH, "", progress=False)
            shard.keep(index, write_images(shard.images, "portraits", method, r.jobs, r.images, STEPS, 5.0, 32,
                                           "models/base", "0" * 64, MAPPER_RECORD if m is not None else None,
                                           "imgs"), r.latents)
    gathered = shard.gather()
    if gathered is not None:
        shard.publish(out / "images")
        (out / "rows.json").write_text(json.dumps(gathered.rows))
        save_file({"latents": torch.cat(list(gathered.latents()))}, str(out / "latents.safetensors"))
    print(json.dumps({"rank": shard.dist.rank, "world": shard.dist.world, "rendered": shard.rendered}), flush=True)


def files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_batch_spans_cut_chunks_like_one_render_call_each():
    assert batch_spans(12, 5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5), slice(5, 7), slice(7, 9),
                                     slice(9, 10), slice(10, 12)]
    assert batch_spans(4, 256, 64) == [slice(0, 4)] and batch_spans(0, 5, 2) == []
    with pytest.raises(ValueError, match="batch_size"):
        batch_spans(3, 5, 0)


@pytest.mark.slow   # ~45 s on a shared 2-core machine: three renders of 16 tiny images, two under accelerate
@pytest.mark.skipif(not ACCELERATE.is_file(), reason="accelerate CLI not in the venv")
def test_two_processes_render_the_bits_of_one(tmp_path):
    threads = torch.get_num_threads()
    try:
        render_sharded(tmp_path / "one")
        # What evaluate did before sharding: one render() call per chunk, batches cut inside it.
        torch.set_num_threads(1)
        pipe, encoder, mapper, jobs = tiny_setup()
        before = {method: [render(pipe, encoder, m, jobs.iloc[s:s + CHUNK], STEPS, 5.0, 32, BATCH, "")
                           for s in range(0, len(jobs), CHUNK)] for method, m in methods(mapper)}
    finally:
        torch.set_num_threads(threads)
    one = tmp_path / "one"
    rows = json.loads((one / "rows.json").read_text())
    latents = load_file(str(one / "latents.safetensors"))["latents"]
    assert len(jobs) == 8 and len(rows) == len(latents) == 16
    assert torch.equal(latents, torch.cat([r.latents for method in before.values() for r in method]))
    images = [r for method in before.values() for part in method for r in part.images]
    for row, image in zip(rows, images):
        with Image.open(one / "images" / row["path"].removeprefix("imgs/")) as png:
            assert png.convert("RGB").tobytes() == image.tobytes(), row["path"]

    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port.getsockname()[1]),
           str(Path(__file__)), str(tmp_path / "two")]
    port.close()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    reports = sorted(json.loads(line)["rendered"] for line in proc.stdout.splitlines() if line.startswith("{"))
    assert reports == [5, 5]       # 10 batches (5 per method), alternating between the two processes
    two = tmp_path / "two"
    assert json.loads((two / "rows.json").read_text()) == rows
    assert torch.equal(load_file(str(two / "latents.safetensors"))["latents"], latents)
    assert files(two / "images") == files(one / "images") and len(files(one / "images")) == 32   # PNG + JSON


if __name__ == "__main__":
    render_sharded(Path(sys.argv[1]))

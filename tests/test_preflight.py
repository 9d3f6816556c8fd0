"""`cocoins preflight`: the full-scale profile with a missing model, a stopped ollama and a missing extra gives one
line for each (the stopped server once per setting naming it), in seconds, and exit 1; the embedded default is ready."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cocoins.tools.profile import merge, read_profile

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]   # nothing listens once the socket is closed


def model_dir(path: Path, marker: str = "config.json") -> str:
    path.mkdir(parents=True)
    (path / marker).write_text("{}")
    (path / "model.safetensors").write_bytes(b"")   # checked for, never loaded
    return str(path)


def run_preflight(params: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "cocoins.preflight", "--params", str(params)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - start


def test_full_scale_profile_with_three_problems_prints_three_lines(tmp_path):
    host = f"http://127.0.0.1:{closed_port()}"
    (tmp_path / "celeba").mkdir()
    (tmp_path / "sam2.pt").write_bytes(b"")
    (tmp_path / "fid.pth").write_bytes(b"")
    clip = model_dir(tmp_path / "clip")
    (tmp_path / "clip" / "preprocessor_config.json").write_text("{}")
    dreamsim = tmp_path / "dreamsim"
    for name in ("dino_vitb16_pretrain.pth", "open_clip_vitb16_pretrain.pth.tar", "clip_vitb16_pretrain.pth.tar",
                 "ensemble_lora", "facebookresearch_dino_main"):
        (dreamsim / name).parent.mkdir(exist_ok=True)
        (dreamsim / name).mkdir() if "." not in name else (dreamsim / name).write_bytes(b"")
    fixes = {
        "data": {"root": str(tmp_path / "celeba")},
        "caption": {"model": model_dir(tmp_path / "llava"), "device": "cpu"},
        "tag": {"host": host},
        "prompts": {"host": host},
        "mask": {"detector": model_dir(tmp_path / "gdino"), "sam2_checkpoint": str(tmp_path / "sam2.pt"),
                 "device": "cpu", "face_counter": "grounding"},
        "models": {"sdxl": str(tmp_path / "missing-sdxl")},            # problem 1: a missing model
        "precompute": {"device": "cpu"},
        "train": {"device": "cpu"},
        "eval": {"arcface_dir": str(tmp_path), "clip_model": clip,
                 "dreamsim_cache": str(dreamsim), "fid_weights": str(tmp_path / "fid.pth"), "device": "cpu",
                 "face_backend": "arcface"},                            # problem 3: insightface is not installed
        "launch": {"data": "python", "train": "python", "evaluate": "python"},
    }
    raw = merge(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), read_profile(ROOT / "profiles/full-scale.yaml")),
                fixes)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc, seconds = run_preflight(tmp_path / "params.yaml")
    lines = proc.stdout.strip().splitlines()
    problems = lines[:-1]
    assert proc.returncode == 1 and seconds < 60, (proc.stdout, proc.stderr)
    text = "\n".join(problems)
    assert "missing-sdxl does not exist" in text
    assert f"no ollama server at {host}" in text or f"ollama at {host}" in text        # problem 2: ollama stopped
    assert "insightface" in text
    # One line per distinct problem, naming the stages it stops (the missing SDXL stops three).
    assert sum("missing-sdxl" in line for line in problems) == 1, text
    # The stopped server is named once per setting that points at it (tag.host, prompts.host): two lines.
    assert [line.split(":")[0] for line in problems if host in line] == ["tag", "prompts"], text
    assert len(problems) == 4, text
    assert lines[-1].startswith("preflight: 4 problem(s)")


def test_embedded_default_is_ready():
    proc, seconds = run_preflight(ROOT / "params.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "preflight: 0 problem(s)" in proc.stdout

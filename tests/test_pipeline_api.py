"""CoCoInsPipeline: diffusers-shaped API on the tiny SDXL; the CLI renders through it, pixel for pixel; user
errors of the CLI are one line, exit status 1, no traceback; the model's own size is the default."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from front_models import SIZE, write_models
from PIL import Image

from cocoins.characters.codes import code_from_seed, write_code_file
from cocoins.cli import main
from cocoins.pipeline import CoCoInsPipeline
from cocoins.runtime import UserError

ONE = "a photo of a <subj1>man</subj1> smiling"
TWO = "a <subj1>man</subj1> and a <subj2>woman</subj2> on a sofa"
KW = dict(num_inference_steps=2, guidance_scale=5.0, height=SIZE, width=SIZE)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def pipe(dirs):
    return CoCoInsPipeline.from_pretrained(dirs / "model", mapper=dirs / "mapper").to("cpu")


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else Image.open(image))


def cli(dirs, out, *extra):
    assert main(["generate", "--model", str(dirs / "model"), "--mapper", str(dirs / "mapper"), "--steps", "2",
                 "--height", str(SIZE), "--width", str(SIZE), "--device", "cpu", "--out", str(out), *extra]) == 0
    return pixels(out)


def test_api_and_cli_render_the_same_pixels_and_report_the_codes(dirs, pipe, tmp_path):
    out = pipe(TWO, subjects=[1, code_from_seed(2, 8)], seed=3, **KW)
    assert len(out.images) == 1 and out.images[0].size == (SIZE, SIZE)
    assert out.codes.shape == (1, 2, 8) and torch.equal(out.codes[0, 0], code_from_seed(1, 8))
    write_code_file(tmp_path / "z2.safetensors", code_from_seed(2, 8))
    via_cli = cli(dirs, tmp_path / "c.png", "--prompt", TWO, "--seed", "3", "--code-seed", "1",
                  "--code-file", str(tmp_path / "z2.safetensors"))
    assert np.array_equal(pixels(out.images[0]), via_cli)
    side = json.loads((tmp_path / "c.json").read_text())
    assert side["mapper"]["sha256"] == pipe.mapper_sha256 == out.sidecars[0]["mapper"]["sha256"]
    assert side["codes"][0] == {"code_seed": 1} and side["codes"][1]["z"] == out.sidecars[0]["codes"][1]["z"]
    # A list of prompts shares the subjects; each image depends on its own seed only.
    both = pipe([ONE, ONE], subjects=[5], seed=[3, 4], batch_size=2, **KW)
    alone = pipe(ONE, subjects=[5], seed=4, **KW)
    assert np.abs(pixels(both.images[1]).astype(int) - pixels(alone.images[0]).astype(int)).max() <= 1
    assert not np.array_equal(pixels(both.images[0]), pixels(both.images[1]))


def test_default_size_is_the_models_own(dirs, pipe, tmp_path):
    assert pipe.default_size == pipe.sdxl.default_sample_size * pipe.sdxl.vae_scale_factor == 64
    assert pipe(ONE, subjects=[1], num_inference_steps=1).images[0].size == (64, 64)
    assert main(["generate", "--model", str(dirs / "model"), "--prompt", "a man", "--steps", "1", "--device", "cpu",
                 "--out", str(tmp_path / "d.png")]) == 0
    assert Image.open(tmp_path / "d.png").size == (64, 64)
    assert json.loads((tmp_path / "d.json").read_text())["height"] == 64


def test_bad_arguments_are_user_errors_before_rendering(pipe, tmp_path):
    cases = [
        (dict(prompt=ONE, subjects=[1], height=33), "height=33 .--height.: use a multiple of 8"),
        (dict(prompt=ONE, subjects=[1], num_inference_steps=0), "num_inference_steps=0 .--steps."),
        (dict(prompt=ONE, subjects=[1], num_inference_steps=10**6), "from 1 to 1000"),
        (dict(prompt=ONE, subjects=[1, 2]), r"1 subject\(s\); give exactly one code per subject"),
        (dict(prompt="a <subj1>man", subjects=[1]), "never closed"),
        (dict(prompt=ONE, subjects=[torch.zeros(5)]), "c = 8"),
        (dict(prompt=ONE, subjects=[str(tmp_path / "missing.safetensors")]), "not found"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError, match=message):
            pipe(**kwargs)
    (tmp_path / "text.safetensors").write_text("not a tensor file")
    with pytest.raises(UserError, match="not a safetensors file"):
        pipe(ONE, subjects=[str(tmp_path / "text.safetensors")])
    write_code_file(tmp_path / "big.safetensors", torch.zeros(9))
    with pytest.raises(UserError, match=r"shape \(8,\)"):
        pipe(ONE, subjects=[str(tmp_path / "big.safetensors")])


def one_line_error(*args: str) -> str:
    """Run the CLI in-process: a user error is SystemExit with a one-line message (exit status 1, no traceback)."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    message = done.value.code
    assert isinstance(message, str) and "\n" not in message and message.startswith("error: "), message
    return message


def test_cli_user_errors_are_one_line_exit_1_no_traceback(dirs, tmp_path):
    out = str(tmp_path / "x.png")
    # Through the installed console script once: the hub-id case printed a traceback at 0883a6f.
    proc = subprocess.run([str(Path(sys.executable).with_name("cocoins")), "generate", "--model", "someone/not-cached",
                           "--prompt", "a man", "--device", "cpu", "--out", out], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: --model someone/not-cached: the hub id someone/not-cached is not in the "
                                  "Hugging Face cache")
    model, mapper = str(dirs / "model"), str(dirs / "mapper")
    assert one_line_error("generate", "--model", model, "--prompt", "a man", "--height", "33", "--device", "cpu",
                          "--out", out) == "error: height=33 (--height): use a multiple of 8 between 8 and 4096"
    assert "no character 'alice' in the library" in one_line_error(
        "generate", "--model", model, "--mapper", mapper, "--prompt", "<alice>woman</alice> reading", "--library",
        str(tmp_path / "lib"), "--device", "cpu", "--out", out)
    assert "argument --steps: invalid int value" in one_line_error("generate", "--steps", "many", "--out", out)
    assert "--code-seed" in one_line_error("generate", "--model", model, "--mapper", mapper, "--prompt",
                                           "a <subj1>man</subj1>", "--code-file", str(tmp_path / "none.safetensors"),
                                           "--code-seed", "1", "--device", "cpu", "--out", out)
    assert "not found" in one_line_error("generate", "--model", model, "--mapper", mapper, "--prompt",
                                         "a <subj1>man</subj1>", "--code-file", str(tmp_path / "none.safetensors"),
                                         "--device", "cpu", "--out", out)
    assert "--prompt: malformed tag" in one_line_error("generate", "--model", model, "--mapper", mapper, "--prompt",
                                                       "a <subj1>man", "--code-seed", "1", "--out", out)
    assert not Path(out).exists()

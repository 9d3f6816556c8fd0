"""The `cocoins` command on a tiny SDXL saved to disk and a saved mapper: generate, sidecars, code files,
two subjects (Fig. 7), interpolate (Fig. 8), neighbors (Fig. 9), and clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from PIL import Image
from safetensors.torch import load_file

from cocoins.cli import code_from_seed, main
from cocoins.method.latent_space import neighbor_order
from cocoins.method.mapper import Mapper, MapperConfig
from cocoins.sdxl.tiny import save_tiny_sdxl

SIZE = 32
ONE = "a photo of a <subj1>man</subj1> smiling"
TWO = "a <subj1>man</subj1> and a <subj2>woman</subj2> on a sofa"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    save_tiny_sdxl(root / "model", seed=0)
    torch.manual_seed(0)
    # Pseudo-words several times larger than the tiny encoders' token embeddings, so codes visibly matter.
    mapper = Mapper(MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=(32, 32)))
    with torch.no_grad():
        mapper.net[-1].weight.mul_(20)
    mapper.save(root / "mapper")
    return root


def run(dirs, out, *extra, model=True):
    base = ["--model", str(dirs / "model")] if model else []
    args = [*extra[:1], *base, "--steps", "2", "--height", str(SIZE), "--width", str(SIZE), "--device", "cpu",
            "--out", str(out), *extra[1:]]
    assert main(args) == 0
    return np.asarray(Image.open(out))


def gen(dirs, out, prompt, *codes, seed=1):
    return run(dirs, out, "generate", "--prompt", prompt, "--seed", str(seed),
               *(["--mapper", str(dirs / "mapper")] if codes else []), *codes)


def test_generate_without_mapper_equals_the_stock_pipeline(dirs, tmp_path):
    ours = gen(dirs, tmp_path / "plain.png", ONE, seed=3)
    stock = StableDiffusionXLPipeline.from_pretrained(dirs / "model", add_watermarker=False)
    stock.set_progress_bar_config(disable=True)
    image = stock("a photo of a man smiling", num_inference_steps=2, guidance_scale=5.0, height=SIZE, width=SIZE,
                  generator=torch.Generator().manual_seed(3)).images[0]
    assert np.array_equal(ours, np.asarray(image))
    side = json.loads((tmp_path / "plain.json").read_text())
    assert side["mapper"] is None and side["codes"] == [] and side["seed"] == 3


def test_generate_with_a_code_writes_a_sidecar_that_reproduces_the_image(dirs, tmp_path):
    image = gen(dirs, tmp_path / "a.png", ONE, "--code-seed", "7")
    side = json.loads((tmp_path / "a.json").read_text())
    assert side["prompt"] == ONE and side["codes"] == [{"code_seed": 7}] and side["seed"] == 1
    assert len(side["mapper"]["sha256"]) == 64 and "--code-seed 7" in side["command"]
    assert main(["generate", "--sidecar", str(tmp_path / "a.json"), "--out", str(tmp_path / "again.png"),
                 "--device", "cpu"]) == 0
    assert np.array_equal(image, np.asarray(Image.open(tmp_path / "again.png")))
    other = gen(dirs, tmp_path / "b.png", ONE, "--code-seed", "8")
    plain = gen(dirs, tmp_path / "p.png", ONE)
    assert not np.array_equal(image, other) and not np.array_equal(image, plain)


def test_sample_code_and_code_file_round_trip(dirs, tmp_path):
    assert main(["sample-code", "--seed", "7", "--dim", "8", "--out", str(tmp_path / "z.safetensors")]) == 0
    z = load_file(str(tmp_path / "z.safetensors"))["z"]
    assert z.shape == (8,) and torch.equal(z, code_from_seed(7, 8))
    from_file = gen(dirs, tmp_path / "f.png", ONE, "--code-file", str(tmp_path / "z.safetensors"))
    assert np.array_equal(from_file, gen(dirs, tmp_path / "s.png", ONE, "--code-seed", "7"))
    # The sidecar carries the code's values: it reproduces the image after the file is gone.
    (tmp_path / "z.safetensors").unlink()
    assert main(["generate", "--sidecar", str(tmp_path / "f.json"), "--out", str(tmp_path / "f2.png"),
                 "--device", "cpu"]) == 0
    assert np.array_equal(from_file, np.asarray(Image.open(tmp_path / "f2.png")))


def test_two_subjects_take_one_code_each_in_order(dirs, tmp_path):
    main(["sample-code", "--seed", "2", "--dim", "8", "--out", str(tmp_path / "z2.safetensors")])
    a = gen(dirs, tmp_path / "12.png", TWO, "--code-seed", "1", "--code-seed", "2")
    assert [c["code_seed"] for c in json.loads((tmp_path / "12.json").read_text())["codes"]] == [1, 2]
    # Codes go to subjects in command-line order, whether seeds or files.
    mixed = gen(dirs, tmp_path / "f1.png", TWO, "--code-file", str(tmp_path / "z2.safetensors"), "--code-seed", "1")
    assert np.array_equal(mixed, gen(dirs, tmp_path / "21.png", TWO, "--code-seed", "2", "--code-seed", "1"))
    assert not np.array_equal(a, mixed)
    assert not np.array_equal(a, gen(dirs, tmp_path / "13.png", TWO, "--code-seed", "1", "--code-seed", "3"))


def test_wrong_number_of_codes_is_a_clear_error(dirs, tmp_path):
    with pytest.raises(SystemExit, match=r"the prompt has 2 subject\(s\); give exactly one --code-seed or "
                                         r"--code-file per subject, in <subjN> order \(got 1\)"):
        gen(dirs, tmp_path / "x.png", TWO, "--code-seed", "1")
    with pytest.raises(SystemExit, match="need --mapper"):
        main(["generate", "--model", str(dirs / "model"), "--prompt", ONE, "--code-seed", "1", "--out", "x.png"])
    # Through the installed console script: exit status 1, one line on stderr, no traceback, no image.
    proc = subprocess.run([str(Path(sys.executable).with_name("cocoins")), "generate", "--model", str(dirs / "model"),
                           "--mapper", str(dirs / "mapper"), "--prompt", ONE, "--out", str(tmp_path / "y.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: the prompt has 1 subject(s); give exactly one --code-seed or "
                                   "--code-file per subject, in <subjN> order (got 0)")
    assert not (tmp_path / "y.png").exists()


def frames(strip: np.ndarray, n: int, gap: int = 4) -> list[np.ndarray]:
    assert strip.shape[1] == n * SIZE + (n - 1) * gap
    return [strip[:, i * (SIZE + gap):i * (SIZE + gap) + SIZE] for i in range(n)]


def test_interpolate_strip_runs_from_code_a_to_code_b(dirs, tmp_path):
    strip = run(dirs, tmp_path / "i.png", "interpolate", "--mapper", str(dirs / "mapper"), "--prompt", ONE,
                "--code-seed", "7", "--code-seed", "8", "--frames", "3", "--seed", "1", "--batch-size", "1")
    side = json.loads((tmp_path / "i.json").read_text())
    assert side["t"] == [0.0, 0.5, 1.0] and side["mode"] == "slerp" and len(side["codes"]) == 2
    first, middle, last = frames(strip, 3)
    assert np.array_equal(first, gen(dirs, tmp_path / "a.png", ONE, "--code-seed", "7"))
    assert np.array_equal(last, gen(dirs, tmp_path / "b.png", ONE, "--code-seed", "8"))
    assert not np.array_equal(middle, first) and not np.array_equal(middle, last)


def test_neighbors_strip_is_ordered_by_pseudo_word_cosine(dirs, tmp_path):
    strip = run(dirs, tmp_path / "n.png", "neighbors", "--mapper", str(dirs / "mapper"), "--prompt", ONE,
                "--count", "6", "--first-code-seed", "10", "--query", "2", "--show", "3", "--seed", "1",
                "--batch-size", "1")
    side = json.loads((tmp_path / "n.json").read_text())
    ranking = side["neighbors"]
    assert side["query_code_seed"] == 12 and ranking[0]["code_seed"] == 12 and ranking[0]["cosine"] == 1.0
    cosines = [r["cosine"] for r in ranking[1:]]
    assert len(ranking) == 6 and cosines == sorted(cosines, reverse=True)
    assert [r["shown"] for r in ranking] == [True] * 3 + [False] * 3
    mapper = Mapper.load(dirs / "mapper")
    with torch.no_grad():
        words = mapper(torch.stack([code_from_seed(s, 8) for s in range(10, 16)]))
    assert [10 + i for i in neighbor_order(words, 2)[0]] == [r["code_seed"] for r in ranking]
    shown = frames(strip, 3)
    for r, image in zip(ranking[:3], shown):   # each frame is that code's image at the fixed noise seed
        assert np.array_equal(image, gen(dirs, tmp_path / "g.png", ONE, "--code-seed", str(r["code_seed"])))


def test_ablate_and_score_folder_are_cocoins_subcommands(capsys):
    from cocoins.cli import main

    for name in ("ablate", "score-folder"):
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        assert f"cocoins.eval.{name.replace('-', '_')}" in capsys.readouterr().out


def _help(capsys, *argv) -> str:
    from cocoins.cli import main

    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_command_once_under_what_a_user_came_to_do(capsys):
    from cocoins.cli import COMMAND_GROUPS, build_parser

    text = _help(capsys)
    titles = [title for title, _ in COMMAND_GROUPS]
    assert [line[:-1] for line in text.splitlines() if line[:-1] in titles] == titles   # in this order
    registered = set(build_parser()._subparsers._group_actions[0].choices)
    grouped = [name for _, names in COMMAND_GROUPS for name in names]
    assert registered == set(grouped) and len(grouped) == len(set(grouped))
    for name in grouped:     # each once, indented under its group, with its one-line help
        assert sum(line.startswith(f"  {name} ") for line in text.splitlines()) == 1, name
    assert text.index("make a character:") < text.index("  character ") < text.index("render:")
    assert text.index("research:") < text.index("  preflight ")


@pytest.mark.parametrize("argv", [("generate",), ("sample-code",), ("interpolate",), ("neighbors",), ("story",),
                                  ("app",), ("character",), ("character", "new"), ("character", "list"),
                                  ("character", "show"), ("character", "rm"), ("character", "export"),
                                  ("character", "import")])
def test_each_command_help_ends_with_a_one_line_example(capsys, argv):
    lines = _help(capsys, *argv).rstrip().splitlines()
    assert lines[-2] == "example:" and lines[-1].startswith(f"  cocoins {' '.join(argv)}"), lines[-3:]


def test_generate_reads_named_characters_from_the_default_library(dirs, tmp_path, monkeypatch):
    """The README's first render: `character new alice`, then a prompt naming alice with no --library."""
    monkeypatch.setenv("COCOINS_LIBRARY", str(tmp_path / "lib"))
    assert main(["character", "new", "alice", "--seed", "7", "--mapper", str(dirs / "mapper")]) == 0
    named = run(dirs, tmp_path / "named.png", "generate", "--prompt", "a photo of a <alice>man</alice> smiling",
                "--mapper", str(dirs / "mapper"), "--seed", "1")
    assert np.array_equal(named, gen(dirs, tmp_path / "seeded.png", ONE, "--code-seed", "7"))

"""Rendered images + JSON sidecars: batched rendering, and each image rendered again from its sidecar alone."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cocoins.eval.prompt_sets import builtin_scene_prompts, identity_table, portrait_prompts
from cocoins.eval.protocol import make_jobs, render
from cocoins.eval.renders import SIDECAR_KEYS, dir_sha256, mapper_record, reproduce, write_images
from cocoins.method.mapper import Mapper, MapperConfig
from cocoins.sdxl.encode import PromptEncoder
from cocoins.sdxl.load import load_pipeline
from cocoins.sdxl.tiny import save_tiny_sdxl


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    save_tiny_sdxl(root / "base", seed=0)
    pipe = load_pipeline(str(root / "base"), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    encoder = PromptEncoder.from_pipeline(pipe)
    torch.manual_seed(0)
    mapper = Mapper(MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=encoder.pseudo_word_dims)).eval()
    mapper.save(root / "mapper")
    prompts = pd.concat([portrait_prompts(("man",)), builtin_scene_prompts(("man",), 1)], ignore_index=True)
    jobs = make_jobs(identity_table(("man",), 2, seed=7), prompts, seeds_per_prompt=1, base_seed=7)
    return root, pipe, encoder, mapper, jobs


def test_sidecars_reproduce_every_image(setup, tmp_path):
    root, pipe, encoder, mapper, jobs = setup
    out = render(pipe, encoder, mapper, jobs, 2, 5.0, 32, 3, "test")   # batches of 3: rows 0-2, then 3
    rows = write_images(tmp_path, "mixed", "cocoins", out.jobs, out.images, 2, 5.0, 32, str(root / "base"),
                        dir_sha256(root / "base"), mapper_record(str(root / "mapper")), "imgs")
    assert len(rows) == 4 and rows[0]["path"].startswith("imgs/mixed/cocoins/man-0/")
    for row, image in zip(rows, out.images):
        png = tmp_path / row["path"].removeprefix("imgs/")
        meta = json.loads(png.with_suffix(".json").read_text())
        assert set(meta) == set(SIDECAR_KEYS) and meta["codes"] == [{"code_seed": row["code_seed"]}]
        assert "<subj1>" in meta["prompt"] and "<subj1>" not in meta["eval"]["plain_prompt"] == row["prompt"]
        again = reproduce(meta, pipe, encoder, mapper)
        diff = np.abs(np.asarray(again, dtype=int) - np.asarray(image, dtype=int))
        assert diff.max() <= 1, f"{png.name} re-rendered from its sidecar differs by {diff.max()}"


def test_base_sidecars_have_no_code_and_models_are_checked(setup, tmp_path):
    root, pipe, encoder, mapper, jobs = setup
    out = render(pipe, encoder, None, jobs.iloc[:1], 2, 5.0, 32, 1, "base")
    row = write_images(tmp_path, "p", "base", out.jobs, out.images, 2, 5.0, 32, str(root / "base"),
                       dir_sha256(root / "base"), None, ".")[0]
    meta = json.loads((tmp_path / row["path"]).with_suffix(".json").read_text())
    assert meta["codes"] == [] and meta["mapper"] is None and row["code_seed"] is None
    assert np.array_equal(np.asarray(reproduce(meta, pipe, encoder)), np.asarray(out.images[0]))
    with pytest.raises(ValueError, match="without a mapper"):
        reproduce(meta, pipe, encoder, mapper)
    meta["eval"]["model_sha256"] = "0" * 64
    with pytest.raises(ValueError, match="sha256 mismatch"):
        reproduce(meta, pipe, encoder)


def test_cocoins_generate_renders_an_evaluation_image_from_its_sidecar(setup, tmp_path):
    """The sidecar is the CLI's: `cocoins generate --sidecar X.json` gives the same image back."""
    from cocoins.cli import main as cli

    root, pipe, encoder, mapper, jobs = setup
    out = render(pipe, encoder, mapper, jobs.iloc[1:2], 2, 5.0, 32, 1, "one")
    row = write_images(tmp_path, "s", "cocoins", out.jobs, out.images, 2, 5.0, 32, str(root / "base"),
                       dir_sha256(root / "base"), mapper_record(str(root / "mapper")), ".")[0]
    sidecar = (tmp_path / row["path"]).with_suffix(".json")
    assert cli(["generate", "--sidecar", str(sidecar), "--out", str(tmp_path / "again.png"), "--device", "cpu"]) == 0
    again = np.asarray(Image.open(tmp_path / "again.png").convert("RGB"))
    assert np.array_equal(again, np.asarray(out.images[0]))

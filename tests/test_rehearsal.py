"""The rehearsal: the full-scale profile through the real `dvc repro` under `accelerate launch` (2 CPU processes).

The fast tests check the stand-in ollama server through the real client and the rehearsal's overrides against
the params schema. The slow test runs the whole rehearsal at the tiny depth: the full-scale profile's every
stage through DVC under `accelerate launch --num_processes 2` on the suite's tiny models (2 portraits, 64 px),
about 2.5 minutes on 2 idle cores. At the reduced depth (real widths, processors and resolutions; `make
rehearse`) it took about 30 minutes of stage time on 2 loaded cores
(benchmarks/results/rehearsal-cpu-reduced-intel-xeon.md), too long for the suite's 30 minutes: the reduced
models' loaders and processors are tested one by one in test_rehearsal_models.py, and the bugs the rehearsal
found each have a test of their own.
"""

import json
from pathlib import Path

import pytest
import yaml

from cocoins.backends.chat import OllamaChat
from cocoins.backends.llm_taggers import SCHEMA, tag_messages
from cocoins.backends.taggers import TagResult, validate_pair
from cocoins.config import parse_params
from cocoins.eval.scene_prompts import SCENES_SCHEMA, first_instruction, parse_scenes, scene_problem
from cocoins.rehearsal.ollama_standin import OllamaStandIn, tag_first_word
from cocoins.rehearsal.run import PROFILE, RehearsalConfig, dvc_stages, overrides, rehearse
from cocoins.tools.profile import merge, read_profile

ROOT = Path(__file__).resolve().parents[1]


def test_standin_tags_through_the_real_client_and_passes_validation():
    with OllamaStandIn("llama3.1:8b") as server:
        chat = OllamaChat(server.host, "llama3.1:8b", timeout=10, retries=1)
        pair = ("zx 12 quorn blip", "  Quorn, blip zx")
        reply = json.loads(chat.chat(tag_messages(*pair), schema=SCHEMA))
        assert reply == {"caption1": "zx 12 quorn blip".replace("zx", "<subj1>zx</subj1>", 1),
                         "caption2": "  <subj1>Quorn</subj1>, blip zx"}
        assert validate_pair(*pair, TagResult(reply["caption1"], reply["caption2"], attempts=1)) == ""
        # The prompts stage's own first turn, whose tagging rule shows a blank "<subj1> </subj1>" before the
        # example that names the subject.
        scenes = parse_scenes(chat.chat([{"role": "user", "content": first_instruction("girl", 50)}],
                                        schema=SCENES_SCHEMA))
        assert len(scenes) == 2 and all(scene_problem(s) == "" and "<subj1>girl</subj1>" in s for s in scenes)
        # An unknown model answers 404, as ollama does for a model that is not pulled.
        assert "ollama pull other" in OllamaChat(server.host, "other", timeout=10, retries=1).chat(
            tag_messages(*pair)).reason
    assert tag_first_word("12 --") == "12 --"


def test_rehearsal_overrides_make_a_valid_full_scale_params(tmp_path):
    config = RehearsalConfig(tmp_path, processes=2, images=4)
    models = {"llava": "m/llava", "grounding_dino": "m/gd", "sam2_checkpoint": "m/sam2.pt", "sam2_overrides": None,
              "sdxl": "m/sdxl", "clip": "m/clip-openai", "fid": "m/fid.pth"}
    profile = merge(read_profile(PROFILE), overrides(config, models, tmp_path, "http://127.0.0.1:1"))
    p = parse_params(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), profile), ROOT, check_paths=False)
    assert (p.train.batch_size, p.train.micro_batch_size, p.train.mixed_precision, p.train.gradient_checkpointing) == \
        (4, 1, "bf16", True)          # 2 passes of 1 sample per process: accumulation is exercised
    assert p.launch.train.startswith("accelerate launch --multi_gpu --num_processes 2")
    assert (p.caption.backend, p.tag.backend, p.mask.backend, p.mapper.init) == ("llava", "ollama", "grounded_sam2",
                                                                                "pytorch")


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_tiny_rehearsal_runs_every_stage_of_the_full_scale_profile_under_two_processes(tmp_path):
    """The profile (accelerate launchers, LLaVA captions, the ollama tagger, Grounded SAM 2, ...) with counts cut, on the tiny models: every DVC stage ends with rc 0 and keeps what it should."""
    report = rehearse(RehearsalConfig(tmp_path / "rehearsal", depth="tiny", device="cpu", processes=2, images=2,
                                      resolution=64))
    project = tmp_path / "rehearsal" / "project"
    rows = {r["stage"]: r for r in report["stages"]}
    assert report["ok"] and list(rows) == dvc_stages(project), report
    params = yaml.safe_load((project / "params.yaml").read_text())
    for launcher in ("data", "train", "evaluate"):
        assert "accelerate launch" in params["launch"][launcher] and "--num_processes 2" in params["launch"][launcher]
    assert (params["caption"]["backend"], params["tag"]["backend"], params["mask"]["backend"]) == (
        "llava", "ollama", "grounded_sam2"), params
    # Both portraits through caption, tag, mask (the face counter and SAM 2) and precompute; the mapper trained.
    for stage in ("caption", "tag", "mask", "precompute"):
        assert (rows[stage]["kept"], rows[stage]["skipped"]) == (2, 0), rows[stage]
    assert (project / "models/mapper/diffusion_pytorch_model.safetensors").is_file()
    metrics = json.loads((project / "reports/eval/metrics.json").read_text())
    assert rows["evaluate"]["kept"] > 0 and {"portraits", "scenes"} <= set(metrics), metrics

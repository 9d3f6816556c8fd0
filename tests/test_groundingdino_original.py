"""Grounding DINO of the original groundingdino package (mask.detector_impl: groundingdino), on a tiny random model
built from the package's own config format with a tiny local BERT; the mask stage runs it next to transformers'."""

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cocoins.backends.grounded_sam2 import Sam2Boxes, make_detector
from cocoins.backends.groundingdino_original import (OriginalGroundingDino, build_from_config, load_weights,
                                                     read_checkpoint, read_config)
from cocoins.backends.tiny import (GROUNDINGDINO_TINY_CONFIG, SAM2_CONFIG, SAM2_TINY_OVERRIDES,
                                   build_tiny_grounding_dino)
from cocoins.config import MaskParams
from cocoins.runtime import UserError

from test_data_stages import run, write_params

CPU = torch.device("cpu")
needs_sam2 = pytest.mark.skipif(importlib.util.find_spec("sam2") is None,
                                reason="sam2 not installed: SAM2_BUILD_CUDA=0 pip install sam2==1.1.0")


class NotWeights:
    """A pickled object a checkpoint must not smuggle in."""


@pytest.fixture(scope="module")
def detector(tiny_groundingdino_package):
    """The tiny model through `make_detector`, as the mask stage builds it (loaded once: a 28M-parameter Swin-T)."""
    config, checkpoint, bert = tiny_groundingdino_package
    return make_detector(MaskParams(detector_impl="groundingdino", groundingdino_config=str(config),
                                    groundingdino_checkpoint=str(checkpoint), groundingdino_text_encoder=str(bert),
                                    groundingdino_min_size=64, groundingdino_max_size=96), CPU)


@pytest.fixture(scope="module")
def package_model(detector):
    return detector.model()


def test_config_is_parsed_never_run(tmp_path, tiny_groundingdino_package):
    assert read_config(str(tiny_groundingdino_package[0])) == GROUNDINGDINO_TINY_CONFIG
    bad = tmp_path / "cfg.py"
    bad.write_text('"""doc"""\nhidden_dim = 256\nimport os\n')
    with pytest.raises(UserError, match=r"cfg.py line 3: only `name = literal` lines"):
        read_config(str(bad))
    bad.write_text(f"marker = open({str(tmp_path / 'ran')!r}, 'w')\n")
    with pytest.raises(UserError, match="line 1"):
        read_config(str(bad))
    assert not (tmp_path / "ran").exists()
    with pytest.raises(UserError, match="mask.groundingdino_config: .*missing.py not found"):
        read_config(str(tmp_path / "missing.py"))


def test_released_checkpoint_shape_loads_exactly(tiny_groundingdino_package, package_model):
    """{"model": ..., "args": Namespace} with position_ids and label_enc (as released) loads with weights_only."""
    saved = torch.load(tiny_groundingdino_package[1], weights_only=False)["model"]
    for name, value in package_model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert {"label_enc.weight", "bert.embeddings.position_ids"} <= set(saved) - set(package_model.state_dict())
    fresh = build_from_config(str(tiny_groundingdino_package[0]), str(tiny_groundingdino_package[2]))
    assert not torch.equal(fresh.feat_map.weight, package_model.feat_map.weight)   # the weights come from the file


def test_checkpoint_with_missing_or_extra_keys_names_the_file(tmp_path, tiny_groundingdino_package, package_model):
    config, checkpoint, _ = tiny_groundingdino_package
    state = read_checkpoint(str(checkpoint))
    missing = tmp_path / "missing.pth"
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("transformer.")}}, missing)
    with pytest.raises(UserError, match=r"missing.pth does not fit .*GroundingDINO_Tiny.py: \d+ missing keys "
                                        r"\['transformer\..*0 unexpected keys"):
        load_weights(package_model, read_checkpoint(str(missing)), str(missing), str(config))
    extra = tmp_path / "extra.pth"
    torch.save({"module.head.extra": torch.zeros(1), **state}, extra)
    with pytest.raises(UserError, match=r"extra.pth does not fit .*: 0 missing keys \[\], 1 unexpected keys "
                                        r"\['head.extra'\]"):
        load_weights(package_model, read_checkpoint(str(extra)), str(extra), str(config))
    wrong = {**state, "feat_map.bias": torch.zeros(3)}
    with pytest.raises(UserError, match="wrong.pth does not fit .*size mismatch for feat_map.bias"):
        load_weights(package_model, wrong, "wrong.pth", str(config))


def test_checkpoint_reads_weights_only(tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save({"module.a": torch.ones(2)}, plain)
    assert list(read_checkpoint(str(plain))) == ["a"]
    from safetensors.torch import save_file

    save_file({"a": torch.ones(2)}, tmp_path / "w.safetensors")
    assert torch.equal(read_checkpoint(str(tmp_path / "w.safetensors"))["a"], torch.ones(2))
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {"a": torch.ones(2)}, "trainer": NotWeights()}, pickled)
    with pytest.raises(UserError, match="pickled.pth cannot be read with weights_only=True .*NotWeights"):
        read_checkpoint(str(pickled))
    torch.save({"model": [1, 2]}, plain)
    with pytest.raises(UserError, match="plain.pth holds no state dict"):
        read_checkpoint(str(plain))
    with pytest.raises(UserError, match="mask.groundingdino_checkpoint: .*none.pth not found"):
        read_checkpoint(str(tmp_path / "none.pth"))


def test_bert_stand_in_keeps_phrases_apart(package_model):
    """The package's per-phrase mask through BertModel: each phrase encoded as if alone."""
    from groundingdino.models.GroundingDINO.bertwarper import generate_masks_with_special_tokens_and_transfer_map

    tokens = package_model.tokenizer(["face. young man."], return_tensors="pt")
    masks, positions, _ = generate_masks_with_special_tokens_and_transfer_map(
        tokens, package_model.specical_tokens, package_model.tokenizer)
    with torch.no_grad():
        full = package_model.bert(input_ids=tokens["input_ids"], attention_mask=masks,
                                  token_type_ids=tokens["token_type_ids"], position_ids=positions).last_hidden_state
        alone = package_model.bert(input_ids=tokens["input_ids"][:, 3:6], attention_mask=torch.ones(1, 3, 3, dtype=bool),
                                   token_type_ids=torch.zeros(1, 3, dtype=torch.long),
                                   position_ids=positions[:, 3:6]).last_hidden_state
    assert positions[0, 3:6].tolist() == [0, 1, 2]   # "young man ." restarts the positions
    torch.testing.assert_close(full[:, 3:6], alone, atol=1e-5, rtol=1e-5)
    assert (full[:, 1] - package_model.bert(input_ids=tokens["input_ids"]).last_hidden_state[:, 1]).abs().max() > 1e-4


def test_boxes_scores_and_labels_from_the_outputs(tiny_groundingdino_package):
    """Known model outputs: cx, cy, w, h (normalised) -> pixel x0, y0, x1, y1; score = best token; label = tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_groundingdino_package[2]))
    assert tokenizer("man. face.")["input_ids"][1:5] == tokenizer.convert_tokens_to_ids(["man", ".", "face", "."])

    class Outputs:
        def __init__(self):
            self.tokenizer = tokenizer

        def __call__(self, samples, captions):
            logits = torch.full((len(captions), 2, 256), -float("inf"))
            logits[:, 0, 1], logits[:, 0, 3] = 3.0, -1.0     # "man" 0.95, "face" 0.27
            logits[:, 1, 3] = 0.0                            # "face" 0.5
            boxes = torch.tensor([[0.5, 0.25, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2]]).expand(len(captions), 2, 4)
            return {"pred_logits": logits, "pred_boxes": boxes}

    detector = OriginalGroundingDino("c.py", "w.pth", "bert", CPU, _model=Outputs(),
                                     _transform=lambda im, target: (torch.zeros(3, im.height, im.width), None))
    image = Image.new("RGB", (40, 20))
    (det,) = detector.detect([image], ["man. face."], 0.4, 0.3)
    assert det.boxes.tolist() == [[10, 0, 30, 10], [0, 0, 8, 4]]
    np.testing.assert_allclose(det.scores, [torch.sigmoid(torch.tensor(3.0)).item(), 0.5], rtol=1e-6)
    assert det.labels == ["man", "face"]
    (strict,) = detector.detect([image], ["man. face."], 0.6, 0.3)
    assert len(strict.boxes) == 1 and strict.labels == ["man"]
    assert detector.detect([image], ["man. face."], 0.4, 0.99)[0].labels == ["", ""]


def test_real_tiny_model_detects_in_pixels(detector):
    assert isinstance(detector, OriginalGroundingDino) and "GroundingDINO_Tiny.py" in detector.describe()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)) for size in [(48, 40, 3), (64, 80, 3)]]
    loose = detector.detect(images, ["man.", "face. person."], 0.0, 0.0)
    assert [d.boxes.shape for d in loose] == [(30, 4), (30, 4)]   # threshold 0: every query
    for det, image in zip(loose, images):
        cx, w = (det.boxes[:, 0] + det.boxes[:, 2]) / 2, det.boxes[:, 2] - det.boxes[:, 0]
        assert (w >= 0).all() and (cx >= 0).all() and (cx <= image.width).all()   # pixels, not normalised
    assert [len(d.boxes) for d in detector.detect(images, ["man.", "face."], 1.0, 0.0)] == [0, 0]
    with pytest.raises(UserError, match="mask.dtype: bf16 with mask.detector_impl: groundingdino"):
        make_detector(MaskParams(detector_impl="groundingdino", dtype="bf16"), CPU)
    with pytest.raises(UserError, match="unknown mask.detector_impl"):
        make_detector(MaskParams(detector_impl="detectron"), CPU)


@needs_sam2
@pytest.mark.parametrize("impl", ["transformers", "groundingdino"])
def test_mask_stage_with_either_detector(impl, tiny_groundingdino_package, tmp_path, monkeypatch, capsys):
    """The real stage, real tiny detectors, thresholds 0: every query box of every image reaches SAM 2."""
    config, checkpoint, bert = tiny_groundingdino_package
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, mask={
        "backend": "grounded_sam2", "face_counter": "grounding", "detector_impl": impl,
        "detector": str(build_tiny_grounding_dino(tmp_path / "hf-gdino")), "groundingdino_config": str(config),
        "groundingdino_checkpoint": str(checkpoint), "groundingdino_text_encoder": str(bert),
        "groundingdino_min_size": 64, "groundingdino_max_size": 96, "box_threshold": 0.0, "text_threshold": 0.0,
        "face_threshold": 0.0, "sam2_config": SAM2_CONFIG, "sam2_checkpoint": "random",
        "sam2_overrides": list(SAM2_TINY_OVERRIDES), "device": "cpu", "batch_size": 4, "chunk_size": 4})
    for name in ("ingest", "caption", "tag"):
        run(name)
    boxes_seen = []
    real_union = Sam2Boxes.union_masks
    monkeypatch.setattr(Sam2Boxes, "union_masks", lambda self, ims, boxes: boxes_seen.extend(len(b) for b in boxes)
                        or real_union(self, ims, boxes))
    run("mask")
    s = pd.read_parquet("data/subjects.parquet")
    assert len(s) == 10 and boxes_seen == [30] * 10   # 30 queries, all labelled with the subject word
    assert set(s["reason"]) <= {"empty mask", "30 faces (max 1)"}   # random SAM 2 may segment nothing
    counted = s[s["face_count"] >= 0]
    assert (counted["face_count"] == 30).all() and (counted["face_counter"] == "grounding").all()
    out = capsys.readouterr().out
    expected = "groundingdino package (GroundingDINO_Tiny.py, groundingdino_tiny.pth)" if impl == "groundingdino" \
        else "transformers ("
    assert f"[mask] detector: {expected}" in out

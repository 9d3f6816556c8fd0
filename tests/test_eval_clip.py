"""CLIP score with a tiny random CLIPModel: the math (cosine of projected embeddings), batching, local loading."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from cocoins.eval.metrics.clip import ClipScorer
from cocoins.sdxl.tokenizer import build_clip_tokenizer

TEXTS = ["A man is looking at the camera.", "A woman reads a newspaper at a sunny kitchen table.",
         "A man is looking at the camera.", "A boy hikes along a misty mountain trail at dawn.", "A girl."]


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    text = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                vocab_size=49408, max_position_embeddings=77)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
                  patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, build_clip_tokenizer(), processor


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in TEXTS]


def _features(out):
    return out if torch.is_tensor(out) else out.pooler_output


def test_score_is_the_cosine_of_projected_embeddings(parts, images):
    model, tokenizer, processor = parts
    scores = ClipScorer(model, tokenizer, processor, batch_size=8).scores(images, TEXTS)
    with torch.no_grad():
        for img, text, got in zip(images, TEXTS, scores):
            ids = tokenizer([text], return_tensors="pt")
            t = _features(model.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]))
            i = _features(model.get_image_features(pixel_values=processor([img], return_tensors="pt")["pixel_values"]))
            assert t.shape == (1, 16) and i.shape == (1, 16)   # projected, not the 32-d hidden state
            assert got.item() == pytest.approx(F.cosine_similarity(t, i).item(), abs=1e-5)
    assert scores.shape == (5,) and bool(((scores >= -1) & (scores <= 1)).all())


def test_batched_equals_one_by_one(parts, images):
    model, tokenizer, processor = parts
    batched = ClipScorer(model, tokenizer, processor, batch_size=3).scores(images, TEXTS)
    single = ClipScorer(model, tokenizer, processor, batch_size=1)
    one_by_one = torch.cat([single.scores([img], [text]) for img, text in zip(images, TEXTS)])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="one text per image"):
        single.scores(images, TEXTS[:2])


def test_loads_from_a_local_folder(parts, images, tmp_path):
    model, tokenizer, processor = parts
    assert not ClipScorer.available(str(tmp_path))[0]
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert ClipScorer.available(str(tmp_path)) == (True, "")
    loaded = ClipScorer.load(str(tmp_path))
    torch.testing.assert_close(loaded.scores(images, TEXTS),
                               ClipScorer(model, tokenizer, processor).scores(images, TEXTS), atol=1e-6, rtol=0)


def test_absent_model_reasons(tmp_path):
    ok, reason = ClipScorer.available(None)
    assert not ok and "eval.clip_model (--clip-model) is null" in reason
    ok, reason = ClipScorer.available("nobody-here/no-such-clip-model")
    assert not ok and "not in the local Hugging Face cache" in reason and "hf download" in reason
    ok, reason = ClipScorer.available(str(tmp_path))
    assert not ok and "missing config.json" in reason

"""Offline CLIP tokenizers: same ids as open_clip, SDXL's padding, loadable from written files."""

import pytest
from transformers import CLIPTokenizer

from cocoins.sdxl.tokenizer import (MAX_LENGTH, VOCAB_SIZE, build_clip_tokenizer, clip_vocab_and_merges,
                                    write_clip_tokenizer_files)

TEXTS = [
    "a photo of a man",
    "A Woman, smiling (at the camera); 2 dogs & 13 cats.",
    "an astronaut riding a horse on mars, highly detailed, 8k",
    "close-up portrait of a girl's face with freckles",
    "  multiple   spaces\tand\nnewlines  ",
]


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def test_vocab_matches_open_clip(open_clip_tokenizer):
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == VOCAB_SIZE == len(open_clip_tokenizer.encoder)
    # open_clip 3.x spells the two special tokens <start_of_text> / <end_of_text>; same ids.
    assert {t: i for t, i in vocab.items() if i < 49406} == \
        {t: i for t, i in open_clip_tokenizer.encoder.items() if i < 49406}
    assert vocab["<|startoftext|>"] == open_clip_tokenizer.sot_token_id == 49406
    assert vocab["<|endoftext|>"] == open_clip_tokenizer.eot_token_id == 49407


@pytest.mark.parametrize("second", [False, True])
def test_ids_match_open_clip(open_clip_tokenizer, second):
    tok = build_clip_tokenizer(second=second)
    for text in TEXTS:
        assert tok(text, add_special_tokens=False).input_ids == open_clip_tokenizer.encode(text), text


def test_padding_like_sdxl():
    tok, tok2 = build_clip_tokenizer(False), build_clip_tokenizer(True)
    assert tok.model_max_length == tok2.model_max_length == MAX_LENGTH
    ids = tok("a man", padding="max_length", max_length=MAX_LENGTH).input_ids
    ids2 = tok2("a man", padding="max_length", max_length=MAX_LENGTH).input_ids
    assert ids[:4] == ids2[:4] == [49406, 320, 786, 49407]
    assert ids[4:] == [49407] * (MAX_LENGTH - 4)  # tokenizer pads with <|endoftext|>
    assert ids2[4:] == [0] * (MAX_LENGTH - 4)     # tokenizer_2 pads with "!" (id 0)


def test_truncation_keeps_eos():
    ids = build_clip_tokenizer()(" ".join(["cat"] * 100), padding="max_length", max_length=MAX_LENGTH,
                                 truncation=True).input_ids
    assert len(ids) == MAX_LENGTH and ids[0] == 49406 and ids[-1] == 49407


@pytest.mark.parametrize("second", [False, True])
def test_written_files_load_offline(tmp_path, second):
    write_clip_tokenizer_files(tmp_path, second=second)
    assert {p.name for p in tmp_path.iterdir()} == {"vocab.json", "merges.txt", "tokenizer_config.json"}
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    built = build_clip_tokenizer(second=second)
    assert loaded.pad_token == built.pad_token and loaded.model_max_length == MAX_LENGTH
    for text in TEXTS:
        assert loaded(text, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids == \
            built(text, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids

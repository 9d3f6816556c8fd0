"""PromptEncoder: SDXL-exact plain encoding, pseudo-word insertion (Eq. 4) and its hook-based injection."""

import copy

import pytest
import torch

from cocoins.data.tags import strip_tags
from cocoins.sdxl.encode import PromptEncoder, SubjectTruncatedError

PROMPTS = [
    "a photo of a <subj1>man</subj1> smiling",
    "(<subj1>Woman</subj1>) and a <subj2>dog</subj2>!",
    "A   portrait,\tof a <subj1>Young Girl</subj1>'s face",
    "no subject at all",
    "super<subj1>man</subj1> flies; <subj1>he</subj1> waves",
    "wow!!! <subj1>man</subj1>",  # tokenizer_2 splits "!" off (its pad token): positions differ per tokenizer
]
D = 64  # d1 + d2 of the tiny encoders


def _plain(enc, prompts):
    return enc.tokenize(prompts, insert=False)


def _capture(module):
    """Record a module's forward outputs (hidden states of the text encoders)."""
    outputs = []
    handle = module.register_forward_hook(lambda m, a, out: outputs.append(out))
    return outputs, handle


def test_pseudo_word_dims(tiny_encoder):
    assert tiny_encoder.pseudo_word_dims == (32, 32)
    assert all(pid < 49407 for pid in tiny_encoder.placeholder_ids)


def test_plain_equals_diffusers_encode_prompt(tiny_sdxl, tiny_encoder):
    long = "a <subj1>cat</subj1> " + "very " * 90 + "long"
    prompts = PROMPTS + [long, ""]
    with torch.no_grad():
        ours = tiny_encoder.encode(_plain(tiny_encoder, prompts))
        embeds, _, pooled, _ = tiny_sdxl.encode_prompt([strip_tags(p) for p in prompts],
                                                       do_classifier_free_guidance=False)
    assert torch.equal(ours.prompt_embeds, embeds)
    assert torch.equal(ours.pooled_prompt_embeds, pooled)
    assert ours.prompt_embeds.shape == (len(prompts), 77, 64) and ours.pooled_prompt_embeds.shape == (len(prompts), 32)


def test_plain_ids_equal_tokenizer(tiny_sdxl, tiny_encoder):
    prompts = PROMPTS + ["x " * 200]
    tok = tiny_encoder.tokenize(prompts, insert=False)
    for tokenizer, seq in zip((tiny_sdxl.tokenizer, tiny_sdxl.tokenizer_2), tok.sequences):
        want = tokenizer([p.plain for p in tok.prompts], padding="max_length", max_length=77,
                         truncation=True, return_tensors="pt").input_ids
        assert torch.equal(seq.input_ids, want)


def test_positions_on_tricky_prompts(tiny_sdxl, tiny_encoder):
    plain = tiny_encoder.tokenize(PROMPTS, insert=False)
    ins = tiny_encoder.tokenize(PROMPTS, insert=True)
    assert plain.sequences[0].subjects == ((1,), (1, 2), (1,), (), (1, 1), (1,))
    assert plain.sequences[0].positions[5] != plain.sequences[1].positions[5]
    for seq_p, seq_i, pid, tokenizer in zip(plain.sequences, ins.sequences, tiny_encoder.placeholder_ids,
                                            (tiny_sdxl.tokenizer, tiny_sdxl.tokenizer_2)):
        assert seq_i.subjects == seq_p.subjects
        for b, prompt in enumerate(ins.prompts):
            ids_p, ids_i = seq_p.input_ids[b].tolist(), seq_i.input_ids[b].tolist()
            for k, (pos_p, pos_i, span) in enumerate(zip(seq_p.positions[b], seq_i.positions[b], prompt.spans)):
                assert pos_i == pos_p + k                       # earlier placeholders shift this one
                assert ids_i[pos_i] == pid
                assert ids_i[pos_i + 1] == ids_p[pos_p]          # the concept's first sub-token follows
                if prompt.plain[span.start - 1:span.start].isalpha():
                    continue  # span starts mid-word: the placeholder goes before the word's token
                # Word-aligned spans: the token count of the text before the span gives the same position.
                before = tokenizer(prompt.plain[:span.start], add_special_tokens=False).input_ids
                assert pos_p == 1 + len(before)
                first = tokenizer(prompt.plain[span.start:], add_special_tokens=False).input_ids[0]
                assert ids_p[pos_p] == first
            # Removing the placeholders gives back the plain ids (no truncation here).
            assert [t for j, t in enumerate(ids_i) if j not in seq_i.positions[b]][:77 - len(seq_i.positions[b])] \
                == ids_p[:77 - len(seq_i.positions[b])]


def test_placeholder_before_every_span_and_eos_kept(tiny_encoder):
    tok = tiny_encoder.tokenize(["<subj1>man</subj1> and <subj2>woman</subj2> and <subj1>man</subj1>"], True)
    seq = tok.sequences[0]
    assert seq.subjects == ((1, 2, 1),) and seq.positions == ((1, 4, 7),)
    ids = seq.input_ids[0].tolist()
    assert ids[0] == 49406 and ids[ids.index(49407) - 1] != 49407 and ids.index(49407) == 1 + 5 + 3


def _filler(n):
    return " ".join(["red"] * n)  # "red" is one token


def test_truncation_boundary(tiny_encoder):
    # Content fits 75 tokens. Without insertion the subject may be the 75th; with it the concept must be.
    fits_plain = tiny_encoder.tokenize([_filler(74) + " <subj1>man</subj1>"], insert=False)
    assert fits_plain.sequences[0].positions == ((75,),)
    fits = tiny_encoder.tokenize([_filler(73) + " <subj1>man</subj1> " + _filler(10)], insert=True)
    ids = fits.sequences[0].input_ids[0].tolist()
    assert fits.sequences[0].positions == ((74,),) and ids[74] == tiny_encoder.placeholder_ids[0]
    assert ids[75] == 786 and ids[76] == 49407 and len(ids) == 77  # "man", then EOS: content truncated
    with pytest.raises(SubjectTruncatedError, match="subj1"):
        tiny_encoder.tokenize([_filler(74) + " <subj1>man</subj1>"], insert=True)
    with pytest.raises(SubjectTruncatedError, match="shorten"):
        tiny_encoder.tokenize([_filler(80) + " <subj1>man</subj1>"], insert=False)


def test_truncated_subject_dropped_and_recorded(tiny_encoder):
    prompts = ["a <subj1>man</subj1> " + _filler(80) + " <subj2>dog</subj2>", "a <subj1>cat</subj1>"]
    tok = tiny_encoder.tokenize(prompts, insert=True, on_truncated="drop")
    assert tok.dropped == ((2,), ())
    assert tok.sequences[0].subjects == ((1,), (1,)) and tok.num_subjects == 1
    for seq in tok.sequences:
        assert seq.input_ids.shape == (2, 77) and (seq.input_ids[:, 0] == 49406).all()
        assert seq.input_ids[0, 76] == 49407
    out = tiny_encoder.encode(tok, torch.randn(2, 1, D))
    assert out.prompt_embeds.shape == (2, 77, 64)


def test_prefix_unchanged_suffix_and_pooled_changed(tiny_sdxl, tiny_encoder):
    prompt = ["a photo of a <subj1>man</subj1> smiling at the camera"]
    tok = tiny_encoder.tokenize(prompt, insert=True)
    pos = tok.sequences[0].positions[0][0]
    assert tok.sequences[1].positions[0][0] == pos
    g = torch.Generator().manual_seed(0)
    w_a, w_b = torch.randn(1, 1, D, generator=g), torch.randn(1, 1, D, generator=g)
    with torch.no_grad():
        a, b = tiny_encoder.encode(tok, w_a), tiny_encoder.encode(tok, w_b)
        plain = tiny_encoder.encode(_plain(tiny_encoder, prompt))
    for half in (slice(0, 32), slice(32, 64)):  # text_encoder, text_encoder_2
        # Causal attention: nothing before the pseudo-word sees it (equal to the plain prompt, too).
        assert torch.equal(a.prompt_embeds[0, :pos, half], b.prompt_embeds[0, :pos, half])
        assert torch.equal(a.prompt_embeds[0, :pos, half], plain.prompt_embeds[0, :pos, half])
        assert (a.prompt_embeds[0, pos:, half] - b.prompt_embeds[0, pos:, half]).abs().amax(-1).min() > 0
    assert not torch.allclose(a.pooled_prompt_embeds, b.pooled_prompt_embeds)


def test_pooled_follows_the_shifted_eos(tiny_sdxl, tiny_encoder):
    prompts = ["<subj1>man</subj1> and <subj2>woman</subj2>", "a <subj1>dog</subj1>"]
    plain, tok = _plain(tiny_encoder, prompts), tiny_encoder.tokenize(prompts, insert=True)
    eos_plain = (plain.sequences[1].input_ids == 49407).int().argmax(-1)
    eos = (tok.sequences[1].input_ids == 49407).int().argmax(-1)
    assert eos.tolist() == (eos_plain + torch.tensor([2, 1])).tolist()
    te2 = tiny_sdxl.text_encoder_2
    outputs, handle = _capture(te2)
    try:
        with torch.no_grad():
            out = tiny_encoder.encode(tok, torch.randn(2, 2, D))
    finally:
        handle.remove()
    last = outputs[0].last_hidden_state
    want = te2.text_projection(last[torch.arange(2), eos])
    torch.testing.assert_close(out.pooled_prompt_embeds, want, rtol=0, atol=1e-6)


def test_each_subject_gets_its_vector(tiny_sdxl, tiny_encoder):
    prompts = ["a <subj1>man</subj1> and a <subj2>woman</subj2>, the <subj1>man</subj1> waves",
               "a <subj2>cat</subj2>"]
    tok = tiny_encoder.tokenize(prompts, insert=True)
    w = torch.randn(2, 2, D)
    encoders = (tiny_sdxl.text_encoder, tiny_sdxl.text_encoder_2)
    captured = [_capture(e) for e in encoders]
    try:
        with torch.no_grad():
            tiny_encoder.encode(tok, w)
    finally:
        for _, handle in captured:
            handle.remove()
    for k, ((outputs, _), seq, encoder) in enumerate(zip(captured, tok.sequences, encoders)):
        embeddings = outputs[0].hidden_states[0]  # token embedding + position embedding
        # CLIPTextModel holds .embeddings itself; CLIPTextModelWithProjection wraps a .text_model.
        pos_table = getattr(encoder, "text_model", encoder).embeddings.position_embedding.weight
        for b in range(2):
            for pos, subject in zip(seq.positions[b], seq.subjects[b]):
                want = w[b, subject - 1, 32 * k:32 * (k + 1)]
                torch.testing.assert_close(embeddings[b, pos] - pos_table[pos], want, rtol=0, atol=1e-6)


def test_gradient_reaches_pseudo_words(tiny_encoder):
    tok = tiny_encoder.tokenize(["a <subj1>man</subj1> and a <subj2>dog</subj2>", "a <subj1>cat</subj1>"], True)
    w = torch.randn(2, 2, D, requires_grad=True)
    out = tiny_encoder.encode(tok, w)
    (out.prompt_embeds.square().mean() + out.pooled_prompt_embeds.square().mean()).backward()
    norms = w.grad.abs().sum(-1)
    assert (norms[0] > 0).all() and norms[1, 0] > 0
    assert norms[1, 1] == 0  # prompt 2 has no <subj2>
    assert w.grad[:, :, :32].abs().sum() > 0 and w.grad[:, :, 32:].abs().sum() > 0  # both encoders


def test_batch_equals_per_prompt(tiny_encoder):
    w = torch.randn(len(PROMPTS), 2, D)
    with torch.no_grad():
        batch = tiny_encoder.encode(tiny_encoder.tokenize(PROMPTS, True), w)
        singles = [tiny_encoder.encode(tiny_encoder.tokenize([p], True), w[i:i + 1, :2 if "subj2" in p else 1])
                   for i, p in enumerate(PROMPTS)]
    torch.testing.assert_close(batch.prompt_embeds, torch.cat([s.prompt_embeds for s in singles]),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(batch.pooled_prompt_embeds, torch.cat([s.pooled_prompt_embeds for s in singles]),
                               rtol=0, atol=1e-5)


def test_half_precision_encoders(tiny_sdxl):
    enc = PromptEncoder(tiny_sdxl.tokenizer, tiny_sdxl.tokenizer_2,
                        copy.deepcopy(tiny_sdxl.text_encoder).to(torch.bfloat16),
                        copy.deepcopy(tiny_sdxl.text_encoder_2).to(torch.bfloat16))
    w = torch.randn(1, 1, D, requires_grad=True)
    out = enc.encode(enc.tokenize(["a <subj1>man</subj1>"], True), w)
    assert out.prompt_embeds.dtype == out.pooled_prompt_embeds.dtype == torch.bfloat16
    out.pooled_prompt_embeds.float().sum().backward()
    assert w.grad.dtype == torch.float32 and w.grad.abs().sum() > 0


def test_hook_removed_even_on_error(tiny_sdxl, tiny_encoder):
    tok = tiny_encoder.tokenize(["a <subj1>man</subj1>"], True)
    tiny_encoder.encode(tok, torch.randn(1, 1, D))
    with pytest.raises((RuntimeError, NotImplementedError)):  # fails inside the hook: no data to copy
        tiny_encoder.encode(tok, torch.empty(1, 1, D, device="meta"))
    for encoder in (tiny_sdxl.text_encoder, tiny_sdxl.text_encoder_2):
        assert not encoder.get_input_embeddings()._forward_hooks


def test_bad_arguments(tiny_encoder):
    ins = tiny_encoder.tokenize(["a <subj1>man</subj1> and <subj2>dog</subj2>"], True)
    with pytest.raises(ValueError, match="insert=True"):
        tiny_encoder.encode(_plain(tiny_encoder, ["a <subj1>man</subj1>"]), torch.randn(1, 1, D))
    with pytest.raises(ValueError, match="no pseudo_words"):
        tiny_encoder.encode(ins, None)
    with pytest.raises(ValueError, match="S >= 2"):
        tiny_encoder.encode(ins, torch.randn(1, 1, D))
    with pytest.raises(ValueError, match=r"\[B=1, S, d1\+d2=64\]"):
        tiny_encoder.encode(ins, torch.randn(1, 2, D - 1))
    with pytest.raises(TypeError, match="sequence"):
        tiny_encoder.tokenize("a <subj1>man</subj1>", True)


def test_subject_kept_only_where_it_fits_in_both_tokenizers(tiny_encoder):
    # tokenizer_2 splits "!!!" into three tokens: the subject fits tokenizer's window but not tokenizer_2's.
    prompt = "wow!!! " + _filler(71) + " <subj1>man</subj1>"
    with pytest.raises(SubjectTruncatedError):
        tiny_encoder.tokenize([prompt], insert=True)
    tok = tiny_encoder.tokenize([prompt], insert=True, on_truncated="drop")
    assert tok.dropped == ((1,),) and tok.sequences[0].positions == tok.sequences[1].positions == ((),)
    assert tiny_encoder.placeholder_ids[0] not in tok.sequences[0].input_ids[0].tolist()
    shorter = tiny_encoder.tokenize(["wow!!! " + _filler(70) + " <subj1>man</subj1>"], insert=False)
    assert shorter.sequences[0].positions == ((73,),) and shorter.sequences[1].positions == ((75,),)

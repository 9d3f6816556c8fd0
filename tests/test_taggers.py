"""The offline rule tagger (cocoins.backends.taggers), Appendix D rules."""

import pytest

from cocoins.backends.tagger_factory import make_tagger
from cocoins.backends.taggers import RuleTagger, TagResult, rule_tag, validate, validate_pair
from cocoins.data.tags import parse_tagged, strip_tags
from cocoins.runtime import UserError


@pytest.mark.parametrize("plain, tagged", [
    ("a young man with glasses", "a young <subj1>man</subj1> with glasses"),
    ("A man and a woman on a bench", "A <subj1>man</subj1> and a <subj2>woman</subj2> on a bench"),
    ("a man waves. The man smiles", "a <subj1>man</subj1> waves. The <subj1>man</subj1> smiles"),
    ("a woman reads; the person smiles", "a <subj1>woman</subj1> reads; the <subj1>person</subj1> smiles"),
    ("a man and another man", "a <subj1>man</subj1> and another <subj2>man</subj2>"),
    ("He smiles at her", "He smiles at her"),                       # pronouns: never
    ("people in a park", "people in a park"),                        # collective nouns: never
    ("a man-made lake", "a man-made lake"),                          # part of a hyphenated word
    ("the woman's hat", "the <subj1>woman</subj1>'s hat"),
    ("Girl with a kite", "<subj1>Girl</subj1> with a kite"),
    ("a doctor talks to a nurse", "a <subj1>doctor</subj1> talks to a <subj2>nurse</subj2>"),
])
def test_rule_tag(plain, tagged):
    assert rule_tag(plain) == tagged
    assert strip_tags(rule_tag(plain)) == plain


def test_ambiguous_generic_reference_is_left_untagged():
    out = rule_tag("a man and a woman talk; the person laughs")
    assert out == "a <subj1>man</subj1> and a <subj2>woman</subj2> talk; the person laughs"


def test_round_trip_on_many_captions():
    texts = ["A photo of a young man with black hair, glasses and a smile.",
             "An older woman with gray hair faces the viewer.", "a boy, a girl and their mother",
             "  spaces   and\ttabs around a   person  ", "no one here", "", "Manhattan skyline",
             "a <b>man</b> in html", "the boy's dog and the boy"]
    for text in texts:
        tagged = rule_tag(text)
        assert parse_tagged(tagged).plain == text
    assert rule_tag("the boy's dog and the boy").count("<subj1>") == 2


def test_validate():
    assert validate("a man", "a <subj1>man</subj1>") == ""
    assert validate("a dog", "a dog") == "no tagged subject"
    assert validate("a man", "an <subj1>man</subj1>") == "tagging changed the caption text"
    assert validate("a man", "a <subj1>man").startswith("malformed tags")


def test_validate_pair():
    ok = RuleTagger().tag("a man smiles", "A photo of a man")
    assert ok.attempts == 1 and validate_pair("a man smiles", "A photo of a man", ok) == ""
    bad = RuleTagger().tag("a man smiles", "a bowl of fruit")
    assert validate_pair("a man smiles", "a bowl of fruit", bad) == "no tagged subject"
    two = TagResult("a <subj1>man</subj1>", "a <subj1>man</subj1> and a <subj2>woman</subj2>", 1)
    assert validate_pair("a man", "a man and a woman", two).startswith("captions tag different subjects")


def test_make_tagger():
    from cocoins.backends.llm_taggers import LLMTagger
    from cocoins.config import TagParams

    assert isinstance(make_tagger(TagParams()), RuleTagger)
    ollama = make_tagger(TagParams(backend="ollama", model="qwen2.5:7b", retries=2, fallback="none"))
    assert isinstance(ollama, LLMTagger) and (ollama.backend, ollama.model, ollama.retries) == ("ollama", "qwen2.5:7b", 2)
    with pytest.raises(UserError, match="cannot load"):
        make_tagger(TagParams(backend="transformers", model="/nonexistent/model"), device=None)
    with pytest.raises(UserError, match="unknown tag.backend"):
        make_tagger(TagParams(backend="gpt"))

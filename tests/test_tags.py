"""The subject-tag parser (cocoins.data.tags)."""

import pytest

from cocoins.data.tags import SubjectSpan, TagError, parse_tagged, strip_tags, tag_span


def test_well_formed_gives_plain_text_and_offsets():
    p = parse_tagged("a young <subj1>man</subj1> reading")
    assert p.plain == "a young man reading"
    assert p.spans == (SubjectSpan(1, 8, 11, "man"),)
    assert p.plain[8:11] == "man"


def test_multi_subject_and_repeated_index():
    p = parse_tagged("<subj1>a man</subj1> and <subj2>a woman</subj2>; <subj1>he</subj1> waves")
    assert p.plain == "a man and a woman; he waves"
    assert [s.index for s in p.spans] == [1, 2, 1]
    assert p.subject_indices == (1, 2)
    assert [p.plain[s.start:s.end] for s in p.spans] == ["a man", "a woman", "he"]


def test_whitespace_inside_tags_is_kept_in_text_but_not_in_span():
    p = parse_tagged("a <subj1> man </subj1>!")
    assert p.plain == "a  man !"
    (span,) = p.spans
    assert (span.text, p.plain[span.start:span.end]) == ("man", "man")


def test_no_tags_is_plain():
    p = parse_tagged("a bowl of fruit")
    assert (p.plain, p.spans) == ("a bowl of fruit", ())


@pytest.mark.parametrize("bad, words", [
    ("<subj1>a <subj2>man</subj2></subj1>", "nested"),
    ("<subj1>a man", "never closed"),
    ("a man</subj1>", "without a matching"),
    ("<subj1>a man</subj2>", "without a matching"),
    ("<subj>a man</subj>", "unindexed"),
    ("<subj1> </subj1> walks", "empty"),
    ("<subj0>man</subj0>", "start at 1"),
])
def test_malformed_raises_with_reason(bad, words):
    with pytest.raises(TagError, match=words):
        parse_tagged(bad)


def test_non_string_raises():
    with pytest.raises(TagError):
        parse_tagged(None)


def test_tag_span_and_strip_round_trip():
    plain = "a woman with glasses"
    tagged = tag_span(plain, 2, 7, index=3)
    assert tagged == "a <subj3>woman</subj3> with glasses"
    assert strip_tags(tagged) == plain

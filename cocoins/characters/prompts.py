"""Prompts that name characters: "<alice>woman</alice> and <bob>man</bob> at a cafe".

A named tag is rewritten to the `<subjN>` form the method reads (cocoins.data.tags), N numbering the names in
order of first appearance, so the rest of the code sees one format. A prompt uses either names or `<subjN>`
tags, not both: mixing them would leave unclear which code goes where.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cocoins.data.tags import TagError, parse_tagged
from cocoins.runtime import UserError

NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,39}"
_NAME = re.compile(rf"^{NAME_PATTERN}$")
_ANY_TAG = re.compile(r"<(/?)([A-Za-z0-9][A-Za-z0-9_-]*)>")
_SUBJ = re.compile(r"^subj\d+$")


@dataclass(frozen=True)
class ResolvedPrompt:
    tagged: str             # the prompt in <subjN> form
    names: tuple[str, ...]  # character of <subj1>, <subj2>, ... (empty for a <subjN> prompt)
    subjects: int           # number of subjects (highest N)


def check_name(name: str, what: str = "character name") -> str:
    """A character name: lowercase letters, digits, '-' and '_', 1 to 40 characters (also a safe file name)."""
    if not isinstance(name, str) or not _NAME.match(name) or _SUBJ.match(name):
        raise UserError(f"{what} {name!r} is not usable: use 1-40 lowercase letters, digits, '-' or '_', "
                        "starting with a letter or digit (and not subjN), e.g. alice")
    return name


def resolve_prompt(prompt: str) -> ResolvedPrompt:
    """Rewrite named tags to <subjN>; UserError saying what is malformed otherwise."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("the prompt is empty; write one, e.g. \"<alice>woman</alice> reading in a cafe\"")
    names: list[str] = []
    subj_tags = False

    def rename(match: re.Match) -> str:
        nonlocal subj_tags
        closing, name = match.group(1), match.group(2)
        if _SUBJ.match(name):
            subj_tags = True
            return match.group(0)
        if name != name.lower():
            raise UserError(f"tag <{closing}{name}>: character names are lowercase; write <{closing}{name.lower()}>")
        check_name(name, "tag")
        if name not in names:
            names.append(name)
        return f"<{closing}subj{names.index(name) + 1}>"

    rewritten = _ANY_TAG.sub(rename, prompt)
    if subj_tags and names:
        raise UserError(f"the prompt mixes <subjN> tags and character names ({', '.join(names)}); use one form")
    try:
        parsed = parse_tagged(rewritten)
    except TagError as err:
        message = str(err)
        for i, name in enumerate(names, start=1):
            message = message.replace(f"subj{i}>", f"{name}>")
        message = message.replace(repr(rewritten), repr(prompt))
        raise UserError(f"malformed tag in the prompt: {message}") from None
    subjects = max((s.index for s in parsed.spans), default=0)
    return ResolvedPrompt(rewritten, tuple(names), subjects)

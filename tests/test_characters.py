"""The character library: `cocoins character` commands, export / import between two libraries, named-character
prompts (same pixels as the <subjN> form with the same code), and the mapper check."""

import json

import numpy as np
import pytest
import torch
from front_models import SIZE, write_mapper, write_models
from PIL import Image

from cocoins.characters.codes import code_from_seed, write_code_file
from cocoins.characters.library import Character, CharacterLibrary
from cocoins.characters.prompts import resolve_prompt
from cocoins.cli import main
from cocoins.pipeline import CoCoInsPipeline
from cocoins.runtime import UserError

KW = dict(num_inference_steps=2, guidance_scale=5.0, height=SIZE, width=SIZE)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = write_models(tmp_path_factory.mktemp("chars"))
    write_mapper(root / "other-mapper", seed=1)
    return root


def cli(*args) -> int:
    return main([str(a) for a in args])


def test_named_tags_rewrite_to_subj_form_and_malformed_ones_are_clear():
    r = resolve_prompt("<alice>woman</alice> and <bob>man</bob> at a cafe; <alice>she</alice> smiles")
    assert r.tagged == "<subj1>woman</subj1> and <subj2>man</subj2> at a cafe; <subj1>she</subj1> smiles"
    assert r.names == ("alice", "bob") and r.subjects == 2
    for prompt, message in [("<alice>woman</bob>", "</bob> without a matching <bob>"),
                            ("<alice>woman", "<alice> is never closed"),
                            ("<Alice>woman</Alice>", "character names are lowercase"),
                            ("<alice>a <bob>man</bob></alice>", "nested <bob> inside <alice>"),
                            ("<alice>woman</alice> and <subj1>man</subj1>", "mixes <subjN> tags and character"),
                            ("<alice></alice> at a cafe", "empty <alice> span"), ("  ", "the prompt is empty")]:
        with pytest.raises(UserError, match=message):
            resolve_prompt(prompt)


def test_library_round_trip_between_two_folders_through_the_cli(dirs, tmp_path, capsys):
    a, b, shared = tmp_path / "lib-a", tmp_path / "lib-b", tmp_path / "shared"
    assert cli("character", "new", "alice", "--seed", 7, "--mapper", dirs / "mapper", "--library", a) == 0
    write_code_file(tmp_path / "z.safetensors", code_from_seed(3, 8))
    assert cli("character", "new", "bob", "--from-code", tmp_path / "z.safetensors", "--mapper", dirs / "mapper",
               "--library", a) == 0
    assert cli("character", "list", "--library", a) == 0
    listed = capsys.readouterr().out
    assert "alice\tc = 8" in listed and "bob\tc = 8" in listed
    assert cli("character", "export", "alice", "--out", shared, "--library", a) == 0
    assert sorted(p.name for p in shared.iterdir()) == ["alice.json", "alice.safetensors"]
    assert cli("character", "import", shared / "alice.json", "--library", b) == 0
    assert cli("character", "import", shared / "alice.safetensors", "--name", "alice2", "--library", b) == 0
    one, two = CharacterLibrary(a).get("alice"), CharacterLibrary(b).get("alice")
    assert torch.equal(one.z, two.z) and one.metadata() == two.metadata()
    assert torch.equal(one.z, code_from_seed(7, 8)) and one.source == {"code_seed": 7}
    assert torch.equal(CharacterLibrary(a).get("bob").z, code_from_seed(3, 8))
    with pytest.raises(SystemExit, match="already exists"):
        cli("character", "import", shared / "alice.json", "--library", b)
    assert cli("character", "rm", "alice2", "--library", b) == 0 and CharacterLibrary(b).names() == ["alice"]
    with pytest.raises(SystemExit, match="no character 'carol'"):
        cli("character", "rm", "carol", "--library", b)
    with pytest.raises(SystemExit, match="not usable"):
        cli("character", "new", "../evil", "--seed", 1, "--mapper", dirs / "mapper", "--library", a)
    # An exported pair whose JSON names a path is refused, not followed.
    meta = json.loads((shared / "alice.json").read_text())
    (shared / "alice.json").write_text(json.dumps({**meta, "name": "../../etc/x"}))
    with pytest.raises(SystemExit, match="not usable"):
        cli("character", "import", shared / "alice.json", "--library", b)


def test_named_prompts_render_like_subj_prompts_and_the_mapper_is_checked(dirs, tmp_path):
    library = CharacterLibrary(tmp_path / "lib")
    pipe = CoCoInsPipeline.from_pretrained(dirs / "model", mapper=dirs / "mapper", library=library)
    for name, seed in (("alice", 7), ("bob", 11)):
        library.add(Character(name, code_from_seed(seed, 8), pipe.mapper_sha256, {"code_seed": seed}))
    named = pipe("a <alice>woman</alice> and a <bob>man</bob> at a cafe", seed=2, **KW)
    tagged = pipe("a <subj1>woman</subj1> and a <subj2>man</subj2> at a cafe", subjects=[7, 11], seed=2, **KW)
    assert np.array_equal(np.asarray(named.images[0]), np.asarray(tagged.images[0]))
    assert named.sidecars[0]["codes"] == [{"character": "alice", "code_seed": 7}, {"character": "bob", "code_seed": 11}]
    swapped = pipe("a <bob>woman</bob> and a <alice>man</alice> at a cafe", seed=2, **KW)
    assert not np.array_equal(np.asarray(named.images[0]), np.asarray(swapped.images[0]))
    other = CoCoInsPipeline.from_pretrained(dirs / "model", mapper=dirs / "other-mapper", library=library)
    with pytest.raises(UserError, match="was made for mapper .* not this mapper"):
        other("a <alice>woman</alice>", seed=2, **KW)
    # The CLI: a named prompt gives the API's pixels, and show writes a sheet of the character.
    assert cli("generate", "--model", dirs / "model", "--mapper", dirs / "mapper", "--library", tmp_path / "lib",
               "--prompt", "a <alice>woman</alice> and a <bob>man</bob> at a cafe", "--seed", 2, "--steps", 2,
               "--height", SIZE, "--width", SIZE, "--device", "cpu", "--out", tmp_path / "n.png") == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "n.png")), np.asarray(named.images[0]))
    assert cli("character", "show", "alice", "--model", dirs / "model", "--mapper", dirs / "mapper", "--library",
               tmp_path / "lib", "--seeds", 0, 1, "--steps", 1, "--height", SIZE, "--width", SIZE, "--device", "cpu",
               "--out", tmp_path / "sheet.png") == 0
    assert Image.open(tmp_path / "sheet.png").size == (2 * SIZE + 4, SIZE)

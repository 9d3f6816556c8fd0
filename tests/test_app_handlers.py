"""The web app's handlers without a browser: bad input is a UserError (shown in the status line, the server
keeps running), downloads are the character's two files in the export folder, names never leave the library."""

import pytest
import torch
from front_models import write_models

from cocoins.characters.codes import write_code_file
from cocoins.characters.library import CharacterLibrary
from cocoins.front.app import FrontApp, build_app
from cocoins.pipeline import CoCoInsPipeline
from cocoins.runtime import UserError


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    dirs = write_models(root)
    pipe = CoCoInsPipeline.from_pretrained(dirs / "model", mapper=dirs / "mapper")
    (root / "export").mkdir()
    return FrontApp(pipe, CharacterLibrary(root / "library"), root / "export")


def test_bad_input_is_a_user_error(front, tmp_path):
    assert "created alice" in front.create("alice", 7, None)
    write_code_file(tmp_path / "short.safetensors", torch.zeros(3))
    (tmp_path / "image.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    cases = [
        (lambda: front.create("alice", 8, None), "already exists"),
        (lambda: front.create("../etc", 1, None), "not usable"),
        (lambda: front.create("carol", 1, str(tmp_path / "short.safetensors")), r"shape \(8,\)"),
        (lambda: front.create("carol", 1, str(tmp_path / "image.safetensors")), "not a safetensors file"),
        (lambda: front.generate("a <bob>man</bob>", 0, 2, 5, 32, 32, ""), "no character 'bob'"),
        (lambda: front.generate("a <alice>woman</bob>", 0, 2, 5, 32, 32, ""), "malformed tag"),
        (lambda: front.generate("a <alice>woman</alice>", 0, 10**6, 5, 32, 32, ""), "steps 1000000"),
        (lambda: front.generate("a <alice>woman</alice>", 0, 2, 5, 100000, 32, ""), "height 100000"),
        (lambda: front.generate("a <alice>woman</alice>", 0, 2, 5, 33, 32, ""), "multiple of 8"),
        (lambda: front.generate("a <alice>woman</alice>", 0.5, 2, 5, 32, 32, ""), "whole number"),
        (lambda: front.export("../alice"), "not usable"),
        (lambda: front.story("panels: [{prompt: 'a <zed>man</zed>'}]", 2, 32, 32), "no character 'zed'"),
    ]
    for call, message in cases:
        with pytest.raises(UserError, match=message):
            call()
    assert front.library.names() == ["alice"]


def test_download_is_the_pair_in_the_export_folder_and_the_page_builds(front):
    front.create("bob", 11, None)
    paths = front.export("bob")
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["bob.json", "bob.safetensors"]
    assert all(p.startswith(str(front.export_dir)) for p in paths)
    page = build_app(front)
    assert {"prompt", "gallery", "create", "generate", "status", "run-story", "photo", "distinct"} <= {
        block.elem_id for block in page.blocks.values() if getattr(block, "elem_id", None)}


def test_errors_speak_the_pages_words_and_show_no_server_folder(front):
    if "alice" not in front.library.names():
        front.create("alice", 7, None)
    for call in (lambda: front.generate("a <nobody>man</nobody>", 0, 2, 5, 32, 32, ""),
                 lambda: front.story("panels: [{prompt: 'a <nobody>man</nobody>'}]", 2, 32, 32),
                 lambda: front.sheet("nobody", 2, 32, 32)):
        with pytest.raises(UserError) as raised:
            call()
        text = front.message(raised.value)
        assert text.startswith("no character 'nobody' yet") and "alice" in text and "**Create character**" in text
        assert "cocoins character" not in text and "--library" not in text and str(front.library.root) not in text
    with pytest.raises(UserError) as raised:
        front.create("alice", 8, None)
    assert front.message(raised.value) == "character 'alice' already exists; pick another name"
    assert str(front.library.root) in str(raised.value)                 # the CLI's wording keeps the folder
    assert front.message(UserError(f"{front.library.root}/x.json is broken")) == "the app's folder/x.json is broken"


def test_the_sheet_is_the_character_at_four_seeds_scaled_up(front):
    if "alice" not in front.library.names():
        front.create("alice", 7, None)
    sheet = front.sheet("alice", 2, 32, 32)
    assert sheet.height == 128 and sheet.width == 4 * (4 * 32 + 3 * 4)   # (four 32 px images, three 4 px gaps) x 4
    with pytest.raises(UserError, match="pick a character"):
        front.sheet(None, 2, 32, 32)


@pytest.mark.slow   # about 40 s on the shared 2 cores: a fit and eight portraits
def test_create_from_a_photo_upload_and_distinct(front, tmp_path):
    import dataclasses
    import hashlib

    from front_models import write_identity
    from test_from_image import _photo_and_mask

    from cocoins.characters.looks import load_identity_metric
    from cocoins.method.code_inversion import CodeInversionConfig

    cheap = CodeInversionConfig(steps=1, noises=2, candidates=2)
    # Any distance will do: a random classifier puts every look together, and 32 tries would take minutes.
    metric = dataclasses.replace(load_identity_metric(write_identity(tmp_path / "identity")), distinct=0.0)
    app = FrontApp(front.pipe, CharacterLibrary(tmp_path / "lib"), front.export_dir, metric, cheap, look_steps=1)
    photo, mask = _photo_and_mask(size=64)
    two, two_mask = _photo_and_mask(size=64, people=2)
    for name, data in (("p.png", photo), ("m.png", mask), ("two.png", two), ("two-m.png", two_mask)):
        (tmp_path / name).write_bytes(data)
    message = app.create("carol", 0, None, False, str(tmp_path / "p.png"), str(tmp_path / "m.png"), "woman")
    assert message.startswith("created carol from the photo in ") and "<carol>person</carol>" in message
    assert app.library.get("carol").source["photo_sha256"] == hashlib.sha256(photo).hexdigest()
    cases = [
        (lambda: app.create("dan", 0, None, False, str(tmp_path / "two.png"), str(tmp_path / "two-m.png"), "man"),
         "the uploaded photo: 2 people found"),
        (lambda: app.create("dan", 0, None, False, str(tmp_path / "p.png"), None, "man"), "give a subject mask upload"),
        (lambda: app.create("dan", 0, None, True, str(tmp_path / "p.png"), None, "man"), "from one thing"),
        (lambda: front.create("dan", 0, None, True), "start the app with --identity"),
    ]
    for call, expected in cases:
        with pytest.raises(UserError, match=expected) as raised:
            call()
        assert str(tmp_path) not in app.message(raised.value) and "\n" not in str(raised.value)
    message = app.create("dan", 5, None, True)
    assert "nearest cast member carol at" in message and app.library.get("dan").source["casting"]["nearest"] == "carol"
    assert app.library.names() == ["carol", "dan"]

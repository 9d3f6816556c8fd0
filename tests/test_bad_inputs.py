"""A bad-input corpus through ingest -> caption (ollama over HTTP) -> tag -> mask -> precompute.

Every image ends in exactly one place: a skip row with its reason in some stage's table, or a training
sample in data/train.parquet. Nothing crashes, nothing disappears.
"""

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from werkzeug import Response

from test_celeba_reader import _huge_png
from test_data_stages import run, write_params

NO_PERSON, TWO = (36, 48), (64, 72)   # image sizes the fake vision model recognises (w, h)


@pytest.fixture(scope="session")
def httpserver_listen_address():
    return ("127.0.0.1", 0)


def vision_model(request):
    """A stand-in ollama vision model: captions by image size (the image arrives base64, as from ollama)."""
    message = request.json["messages"][0]
    size = Image.open(io.BytesIO(base64.b64decode(message["images"][0]))).size
    first = message["content"].startswith("Describe")
    text = ("A bowl of fruit on a wooden table." if first else "Apples and pears in a bowl.") if size == NO_PERSON \
        else "A man and a woman sit on a bench." if size == TWO \
        else "A photo of a young man with glasses." if first else "A young man faces the viewer."
    body = {"model": "llava:7b", "created_at": "2026-11-02T10:15:07Z", "done": True,
            "message": {"role": "assistant", "content": text}}
    return Response(json.dumps(body), content_type="application/json")


def build_corpus(world: Path, root: Path) -> dict[str, str]:
    """A CelebA-format folder: the tiny world plus one image per failure mode; returns name -> expected fate."""
    shutil.copytree(world, root)
    img, masks = root / "img_align_celeba", root / "subject_masks"
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    full = Image.new("L", (40, 48), 0)
    full.paste(255, (10, 8, 30, 40))
    fates = {}
    for name, image in (("gray.png", rgb.convert("L")), ("cmyk.jpg", rgb.convert("CMYK")),
                        ("rgba.png", rgb.convert("RGBA"))):
        image.save(img / name)
        full.save(masks / f"{Path(name).stem}.png")
        fates[name] = "trained"
    Image.fromarray(rng.integers(0, 255, (NO_PERSON[1], NO_PERSON[0], 3), dtype=np.uint8)).save(img / "noperson.jpg")
    fates["noperson.jpg"] = "tag: no tagged subject"
    (img / "empty.jpg").write_bytes(b"")
    fates["empty.jpg"] = "ingest: empty file (0 bytes)"
    (img / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(300))
    fates["corrupt.jpg"] = "ingest: unreadable image"
    rgb.save(root / "full.png")
    (img / "truncated.png").write_bytes((root / "full.png").read_bytes()[:200])
    fates["truncated.png"] = "ingest: unreadable image"
    _huge_png(img / "huge.png", 20000, 20000)
    fates["huge.png"] = "ingest: image too large"
    rgb.save(root.parent / "outside.jpg")
    (img / "escape.jpg").symlink_to(root.parent / "outside.jpg")
    fates["escape.jpg"] = "ingest: path escapes the data root"
    fates["../../outside.jpg"] = "ingest: path escapes the data root"   # listed name leaving the root
    # The two-person images: resized (image and mask alike) so the fake model captions them with two people.
    counts = dict(line.split() for line in (root / "face_counts.txt").read_text().splitlines())
    for name, n in counts.items():
        if n == "2":
            for path in (img / name, masks / f"{Path(name).stem}.png"):
                with Image.open(path) as im:
                    im.resize(TWO, Image.Resampling.NEAREST).save(path, format=im.format)
            fates[name] = "mask: 2 faces (max 1)"
    extra = [n for n in fates if n not in counts]
    with open(root / "face_counts.txt", "a") as f:
        f.writelines(f"{n} 1\n" for n in ("gray.png", "cmyk.jpg", "rgba.png", "noperson.jpg"))
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    values = lines[2].split()[1:]
    (root / "list_attr_celeba.txt").write_text("\n".join([str(len(lines) - 2 + len(extra)), lines[1], *lines[2:],
                                                          *(" ".join([n, *values]) for n in extra)]) + "\n")
    return fates


def fates_of(images, captions, tagged, subjects, index) -> dict[str, str]:
    """Where each image ended: the first stage that skipped it (with its reason), or 'trained'."""
    names = dict(zip(images["image_id"], images["path"].map(lambda p: p.split("img_align_celeba/")[1])))
    out = {}
    for stage, table in (("ingest", images), ("caption", captions), ("tag", tagged), ("mask", subjects)):
        for image_id, reason in zip(table.loc[~table["kept"], "image_id"], table.loc[~table["kept"], "reason"]):
            if names[image_id] in out:   # the mask stage lists every ingested image, so it repeats this one
                assert (stage, reason) == ("mask", "no tagged subject"), (image_id, out[names[image_id]], reason)
                continue
            out[names[image_id]] = f"{stage}: {reason}"
    for image_id in index["image_id"]:
        assert names[image_id] not in out
        out[names[image_id]] = "trained"
    assert set(out) == set(names.values()), "an image disappeared"
    return out


def test_bad_input_corpus_through_every_stage(tiny_world, httpserver, tmp_path, monkeypatch, capsys):
    from test_llm_taggers import show_reply

    httpserver.expect_request("/api/chat", method="POST").respond_with_handler(vision_model)
    httpserver.expect_request("/api/show", method="POST").respond_with_json(show_reply(["completion", "vision"]))
    expected = build_corpus(tiny_world, tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, data={"source": "celeba", "root": "corpus"},
                 caption={"backend": "ollama", "model": "llava:7b", "host": httpserver.url_for("/").rstrip("/"),
                          "retry_wait": 0.0, "chunk_size": 4},
                 mask={"face_counter": "annotation", "chunk_size": 4}, models={"sdxl": "tiny", "seed": 0},
                 precompute={"resolution": 16, "shard_size": 4, "batch_size": 4, "device": "cpu"})
    for name in ("ingest", "caption", "tag", "mask", "base", "precompute"):
        run(name)
    tables = [pd.read_parquet(f"data/{t}.parquet") for t in ("images", "captions", "tagged", "subjects", "train")]
    fates = fates_of(*tables)
    assert len(fates) == 10 + len(expected) - 2   # the world's 10 images + the corpus (two-person ones counted)
    for name, fate in expected.items():
        assert fates[name].startswith(fate), (name, fates[name])
    world_single = [n for n, f in fates.items() if n not in expected]
    assert len(world_single) == 8 and all(fates[n] == "trained" for n in world_single)
    out = capsys.readouterr().out
    assert "[precompute] kept 11, skipped" in out   # 8 world images + gray, CMYK, RGBA

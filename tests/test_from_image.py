"""A code from a photo (cocoins.method.code_inversion) and the photo checks (cocoins.characters.photo)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cocoins.characters.photo import MaskRegionCounter, read_photo
from cocoins.method.code_inversion import (CodeInversionConfig, CodeInverter, latent_mask, masked_denoising_loss,
                                           project_to_prior_shell)
from cocoins.runtime import UserError


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _photo_and_mask(size=32, people=1):
    photo = np.full((size, size, 3), 120, np.uint8)
    mask = np.zeros((size, size), np.uint8)
    centres = [size // 2] if people == 1 else [size // 4, 3 * size // 4][:people]
    for cx in centres[:people]:
        mask[size // 4: 3 * size // 4, cx - size // 8: cx + size // 8] = 255
    photo[mask > 0] = (200, 160, 130)
    return _png(photo), _png(mask)


def test_prior_shell_norm_is_sqrt_c():
    z = torch.randn(5, 256) * 3
    assert torch.allclose(project_to_prior_shell(z).norm(dim=-1), torch.full((5,), 16.0))


def test_masked_loss_counts_only_the_mask():
    pred, target = torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
    pred[0, :, 0, 0] = 2.0          # inside the mask: error 4 in both channels
    pred[0, :, 1, 1] = 10.0         # outside: ignored
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert masked_denoising_loss(pred, target, mask).tolist() == [4.0]


def test_latent_mask_majority():
    m = torch.zeros(8, 8)
    m[:4, :4] = 1
    assert latent_mask(m, (2, 2)).flatten().tolist() == [1.0, 0.0, 0.0, 0.0]


def test_read_photo_one_person_gives_pixels_mask_and_hash():
    photo, mask = _photo_and_mask()
    p = read_photo(photo, 32, MaskRegionCounter(), mask=mask)
    import hashlib
    assert p.sha256 == hashlib.sha256(photo).hexdigest()
    assert p.pixels.shape == (3, 32, 32) and p.pixels.min() >= -1 and p.pixels.max() <= 1
    assert p.mask.sum() > 0


@pytest.mark.parametrize("people, message", [(0, "no person found"), (2, "2 people found")])
def test_bad_photos_one_line_errors(people, message):
    photo, mask = _photo_and_mask(people=people)
    with pytest.raises(UserError, match=message) as err:
        read_photo(photo, 32, MaskRegionCounter(), mask=mask)
    assert "\n" not in str(err.value)


def test_small_or_long_photo_and_not_an_image():
    photo, mask = _photo_and_mask(size=16)
    with pytest.raises(UserError, match="at least 32 px"):
        read_photo(photo, 32, MaskRegionCounter(), mask=mask)
    wide = _png(np.zeros((32, 80, 3), np.uint8))
    wide_mask = np.zeros((32, 80), np.uint8)
    wide_mask[8:24, 30:50] = 255
    with pytest.raises(UserError, match="crop it to a square"):
        read_photo(wide, 32, MaskRegionCounter(), mask=_png(wide_mask))
    with pytest.raises(UserError, match="not an image"):
        read_photo(b"hello", 32, MaskRegionCounter(), mask=mask)
    with pytest.raises(UserError, match="needs a subject mask"):
        read_photo(_photo_and_mask()[0], 32, MaskRegionCounter())


def test_fit_is_deterministic_and_stays_on_the_shell(tiny_sdxl, tiny_encoder):
    from cocoins.method.mapper import Mapper, MapperConfig

    dims = tuple(e.config.hidden_size for e in tiny_encoder.text_encoders)
    torch.manual_seed(0)
    mapper = Mapper(MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=dims)).eval()
    inverter = CodeInverter(tiny_sdxl, tiny_encoder, mapper)
    size = tiny_sdxl.unet.config.sample_size * tiny_sdxl.vae_scale_factor
    photo, mask = _photo_and_mask(size=size)
    p = read_photo(photo, size, MaskRegionCounter(), mask=mask)
    cfg = CodeInversionConfig(steps=3, noises=2, candidates=4)
    a = inverter.fit(p.pixels, p.mask, "a photo of a <subj1>woman</subj1>", cfg, seed=3, progress=False)
    b = inverter.fit(p.pixels, p.mask, "a photo of a <subj1>woman</subj1>", cfg, seed=3, progress=False)
    assert torch.equal(a.z, b.z) and a.losses == b.losses and len(a.losses) == 3
    assert abs(float(a.z.norm()) - 8 ** 0.5) < 1e-4


def test_character_record_carries_the_photo_hash(tiny_sdxl, tmp_path):
    import hashlib

    from cocoins.characters.from_photo import character_from_photo
    from cocoins.characters.library import CharacterLibrary
    from cocoins.method.mapper import Mapper, MapperConfig
    from cocoins.pipeline import CoCoInsPipeline

    torch.manual_seed(0)
    dims = (tiny_sdxl.text_encoder.config.hidden_size, tiny_sdxl.text_encoder_2.config.hidden_size)
    pipe = CoCoInsPipeline(tiny_sdxl, Mapper(MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=dims)).eval())
    size = pipe.default_size
    photo, mask = _photo_and_mask(size=size)
    character = character_from_photo(pipe, "ann", photo, MaskRegionCounter(), noun="woman", mask=mask,
                                     cfg=CodeInversionConfig(steps=2, noises=2, candidates=2), progress=False)
    library = CharacterLibrary(tmp_path)
    library.add(character)
    back = library.get("ann")
    assert back.source["photo_sha256"] == hashlib.sha256(photo).hexdigest()
    assert back.mapper_sha256 == pipe.mapper_sha256 and torch.equal(back.z, character.z)


def test_cli_from_image_fits_stores_and_prints_the_record(tmp_path, capsys):
    import hashlib
    import json

    from front_models import write_models

    from cocoins.characters.library import CharacterLibrary
    from cocoins.cli import main

    dirs = write_models(tmp_path / "models")
    size = 64                                             # the tiny SDXL's own size
    photo, mask = _photo_and_mask(size=size)
    two, two_mask = _photo_and_mask(size=size, people=2)
    small, small_mask = _photo_and_mask(size=size // 2)
    for name, data in (("me.png", photo), ("me-mask.png", mask), ("two.png", two), ("two-mask.png", two_mask),
                       ("small.png", small), ("small-mask.png", small_mask)):
        (tmp_path / name).write_bytes(data)
    base = ["character", "from-image", "--model", str(dirs / "model"), "--mapper", str(dirs / "mapper"),
            "--library", str(tmp_path / "lib"), "--device", "cpu", "--fit-steps", "2"]
    assert main([*base, str(tmp_path / "me.png"), "--mask", str(tmp_path / "me-mask.png"), "--name", "me",
                 "--noun", "woman"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"fitted me to {tmp_path / 'me.png'} in ") and " s (2 steps on cpu)" in out[0]
    record = json.loads(out[1])
    assert record["source"]["photo_sha256"] == hashlib.sha256(photo).hexdigest()
    assert record["source"]["mask_sha256"] == hashlib.sha256(mask).hexdigest() and record["name"] == "me"
    assert CharacterLibrary(tmp_path / "lib").get("me").source == record["source"]
    for args, message in [
        (["two.png", "--mask", "two-mask.png"], f"PHOTO {tmp_path / 'two.png'}: 2 people found"),
        (["small.png", "--mask", "small-mask.png"], f"PHOTO {tmp_path / 'small.png'} is 32x32 px.*at least 64 px"),
        (["me.png"], f"PHOTO {tmp_path / 'me.png'}: this model draws 64 px people.*give --mask MASK.png"),
        (["nothing.png", "--mask", "me-mask.png"], f"PHOTO {tmp_path / 'nothing.png'} not found"),
    ]:
        paths = [str(tmp_path / a) if a.endswith(".png") else a for a in args]
        with pytest.raises(SystemExit, match=message) as err:
            main([*base, *paths, "--name", "other"])
        assert "\n" not in str(err.value)
    with pytest.raises(SystemExit, match="already exists"):
        main([*base, str(tmp_path / "me.png"), "--mask", str(tmp_path / "me-mask.png"), "--name", "me"])

"""FID (torchmetrics) with a small feature module: itself ~ 0, a shift gives the closed form; local Inception."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cocoins.eval.metrics.fid import fid_features, fid_from_features, inception_available, load_inception

SIZE = 8


class LinearFeature(nn.Module):
    """features = W · pixels (no bias), so a constant pixel shift c moves every feature by W · c."""

    def __init__(self):
        super().__init__()
        self.weight = torch.randn(4, 3 * SIZE * SIZE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, SIZE, SIZE)
        return x.flatten(1).double() @ self.weight.T


def _images(seed: int, n: int = 24, shift: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.integers(50, 150, (SIZE, SIZE, 3)) + shift).astype(np.uint8)) for _ in range(n)]


def test_fid_of_a_set_with_itself_is_zero_and_a_shift_gives_the_closed_form():
    feature = LinearFeature()
    a = fid_features(feature, _images(0), SIZE, batch_size=5)
    assert a.shape == (24, 4) and a.dtype == torch.float64
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = fid_features(feature, _images(0, shift=20), SIZE, batch_size=7)
    expected = float((feature.weight @ torch.full((3 * SIZE * SIZE,), 20.0, dtype=torch.float64)).square().sum())
    assert fid_from_features(a, shifted) == pytest.approx(expected, rel=1e-6)  # same covariance: only the means move
    other = fid_features(feature, _images(1), SIZE)
    assert fid_from_features(a, other) > 0
    with pytest.raises(ValueError, match="two images on each side"):
        fid_from_features(a[:1], other)


def test_images_are_resized_to_the_feature_input():
    feature = LinearFeature()
    big = [im.resize((16, 16), Image.NEAREST) for im in _images(0, n=3)]
    assert fid_features(feature, big, SIZE).shape == (3, 4)


def test_absent_inception_reasons(tmp_path):
    ok, reason = inception_available(None)
    assert not ok and "eval.fid_weights (--fid-weights) is null" in reason
    ok, reason = inception_available(str(tmp_path / "nope.pth"))
    assert not ok and "does not exist" in reason


@pytest.fixture(scope="module")
def random_inception_state():
    """A random state dict of torch-fidelity's FID Inception (its real weights cannot be downloaded here)."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    patch = pytest.MonkeyPatch()
    patch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
    patch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    try:
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        patch.undo()
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_local_inception_weights_load_safely(random_inception_state, tmp_path):
    from safetensors.torch import save_file

    pth, st = tmp_path / "inception.pth", tmp_path / "inception.safetensors"
    torch.save(random_inception_state, pth)
    save_file(random_inception_state, str(st))
    assert inception_available(str(pth)) == (True, "")
    images = _images(0, n=2)
    features = [fid_features(load_inception(str(path)), images, 299) for path in (pth, st)]
    assert features[0].shape == (2, 2048)
    torch.testing.assert_close(features[0], features[1])
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"x": os.system}, protocol=2))     # a global that is not a tensor: refused, never run
    with pytest.raises(pickle.UnpicklingError):
        load_inception(str(evil))


class DeviceCheck(torch.nn.Module):
    """Records the device of each batch it gets; its one buffer sits on `device` (e.g. 'meta' for a GPU)."""

    def __init__(self, device: str):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1, device=device))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.device)
        return torch.ones(len(x), 2, device=x.device) if x.device.type != "meta" else torch.ones(len(x), 2)


def test_batches_go_to_the_inception_device():
    """torchmetrics' Inception casts dtype but never moves its input: fid_features must feed it on its own
    device ('meta' stands in for a CUDA device here) and hand back CPU float32."""
    feature = DeviceCheck("meta")
    out = fid_features(feature, _images(0)[:5], SIZE, batch_size=2)
    assert [d.type for d in feature.seen] == ["meta"] * 3
    assert out.device.type == "cpu" and out.dtype == torch.float32 and out.shape == (5, 2)


def _fid_on_rank_zero_alone(rank: int, port: int, out: str) -> None:
    """Rank 1 leaves the process group at once, as evaluate's other ranks do after rendering; rank 0 scores."""
    import datetime

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    if rank == 1:
        dist.destroy_process_group()
        return
    a = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    value = fid_from_features(a, a + 1.0)
    torch.save(torch.tensor(value), out)
    dist.destroy_process_group()


def test_fid_is_computed_by_the_main_process_after_the_other_ranks_left(tmp_path):
    """Under `accelerate launch`, FID must not gather over the process group (the rehearsal's evaluate died on a
    closed peer): rank 0 alone gets the closed form, 4 * 1.0^2 for a shift of 1 in 4 dims."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "fid.pt"
    mp.start_processes(_fid_on_rank_zero_alone, args=(port, str(out)), nprocs=2, start_method="spawn")
    assert float(torch.load(out)) == pytest.approx(4.0, rel=1e-6)

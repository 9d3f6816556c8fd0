"""DreamSim: only the absent-model paths can run offline (its checkpoints are a download); they must say why."""

import importlib.util

import pytest

from cocoins.eval.metrics.dreamsim import HUB_REPO, REQUIRED, DreamSimEmbedder
from cocoins.eval.scoring import Backends, MetricConfig

installed = importlib.util.find_spec("dreamsim") is not None


def test_no_cache_dir_or_unknown_type():
    assert DreamSimEmbedder(None).available() == (False, "eval.dreamsim_cache (--dreamsim-cache) is null; point it at a folder "
                                                  "holding the DreamSim checkpoints")
    ok, reason = DreamSimEmbedder("x", dreamsim_type="vgg").available()
    assert not ok and "eval.dreamsim_type = 'vgg'" in reason


@pytest.mark.skipif(not installed, reason="dreamsim not installed")
@pytest.mark.parametrize("kind", sorted(REQUIRED))
def test_every_needed_file_is_checked_before_anything_downloads(tmp_path, kind):
    embedder = DreamSimEmbedder(str(tmp_path), dreamsim_type=kind)
    ok, reason = embedder.available()
    assert not ok and "nothing is downloaded" in reason
    needed = REQUIRED[kind] + ([HUB_REPO[kind]] if kind in HUB_REPO else [])
    for name in needed[:-1]:
        (tmp_path / name).mkdir()
    ok, reason = embedder.available()
    assert not ok and reason.startswith(f"{tmp_path} lacks {needed[-1]} ")
    (tmp_path / needed[-1]).mkdir()
    assert embedder.available() == (True, "")


def test_missing_package_or_files_make_dreamsim_null(tmp_path):
    backends = Backends.load(MetricConfig(face_backend="none", clip_model=None, dreamsim_cache=str(tmp_path)))
    assert backends.dreamsim is None
    expected = "lacks" if installed else "dreamsim package is not installed"
    assert expected in backends.unavailable["dreamsim"]

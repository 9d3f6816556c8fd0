"""benchmarks/step_casts.py counts what autocast adds around bf16 towers, and that the loop's path drops it."""

import sys
from argparse import Namespace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_autocast_around_bf16_towers_casts_more_than_the_loops_path():
    from step_casts import PHASES, count

    fp32 = count(Namespace(batch_size=2, latent_size=8, precision="fp32"))
    autocast = count(Namespace(batch_size=2, latent_size=8, precision="bf16-autocast"))
    half = count(Namespace(batch_size=2, latent_size=8, precision="bf16"))
    assert autocast["autocast"] and not half["autocast"] and not fp32["autocast"]
    assert autocast["totals"]["aten::_to_copy"] > half["totals"]["aten::_to_copy"]
    assert autocast["totals"]["aten::_to_copy"] > fp32["totals"]["aten::_to_copy"]
    # autocast casts the mapper's own layers to bf16; without it f asks for no cast
    assert any("mapper.py" in o for (k, o) in autocast["by_origin"] if k == "cast")
    assert not any("mapper.py" in o for (k, o) in half["by_origin"] if k == "cast")
    assert not any("mapper.py" in o for (k, o) in fp32["by_origin"] if k == "cast")
    assert {ph for (_, ph) in half["by_phase"]} >= set(PHASES) - {"cocoins/draw"}
    # each text encoder runs twice a step: the 3B rows with pseudo-words, the distinct plain captions (<= 2B)
    assert half["text_encoder_calls"] == {"calls 1": 2, "rows 1": 6 + 4, "calls 2": 2, "rows 2": 6 + 4}

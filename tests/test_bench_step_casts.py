"""benchmarks/step_casts.py counts what autocast adds: a bf16 step casts more than an fp32 one."""

import sys
from argparse import Namespace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_bf16_step_casts_more_than_fp32():
    from step_casts import PHASES, count

    fp32 = count(Namespace(batch_size=2, latent_size=8, precision="fp32"))
    bf16 = count(Namespace(batch_size=2, latent_size=8, precision="bf16"))
    assert bf16["totals"]["aten::_to_copy"] > fp32["totals"]["aten::_to_copy"]
    # the mapper's own layers are cast to bf16 under autocast; in fp32 it asks for no cast
    assert any("mapper.py" in o for (k, o) in bf16["by_origin"] if k == "cast")
    assert not any("mapper.py" in o for (k, o) in fp32["by_origin"] if k == "cast")
    assert {ph for (_, ph) in bf16["by_phase"]} >= set(PHASES) - {"cocoins/draw"}

"""A `cpu` device choice holds on a machine with a GPU: tested here by making CUDA look available.

The suite pins `--device cpu` / `device: cpu` where it compares bits or expects gloo; these tests check that
the pin is obeyed, so a GPU machine runs the same CPU computations as CI.
"""

import accelerate
import pytest
import torch

from cocoins.cli import build_parser
from cocoins.data import workdir
from cocoins.runtime import resolve_device
from cocoins.training import ddp_check


@pytest.fixture()
def cuda_looks_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


class Recorder:
    """Stands in for accelerate's Accelerator / PartialState: records the `cpu` flag it was built with."""
    calls: list = []

    def __init__(self, cpu=False, **kwargs):
        Recorder.calls.append(cpu)
        self.process_index = self.local_process_index = 0


@pytest.fixture()
def recorder(monkeypatch):
    Recorder.calls = []
    monkeypatch.setattr(accelerate, "Accelerator", Recorder)
    monkeypatch.setattr(accelerate, "PartialState", Recorder)
    return Recorder


def test_resolve_device_follows_the_choice_not_the_hardware(cuda_looks_available):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == "cuda"


def test_ddp_check_builds_a_cpu_accelerator_when_told_to(cuda_looks_available, recorder):
    ddp_check.make_accelerator("cpu")
    ddp_check.make_accelerator("auto")
    assert recorder.calls == [True, False]


def test_data_stage_processes_use_gloo_on_cpu_when_the_device_param_says_cpu(cuda_looks_available, recorder,
                                                                             monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    workdir.Dist("cpu")
    workdir.Dist("auto")
    assert recorder.calls == [True, False]
    assert workdir.stage_device("cpu", workdir.Dist("cpu")).type == "cpu"


def test_cli_device_defaults_to_the_gpu_but_an_explicit_cpu_wins(cuda_looks_available):
    parse = lambda *extra: build_parser().parse_args(["generate", "--model", "m", "--prompt", "p", "--out", "o.png",
                                                      *extra])
    assert parse().device == "cuda"
    assert parse("--device", "cpu").device == "cpu"

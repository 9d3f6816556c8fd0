"""Make CUDA look available to the project's code in every Python process started with this folder on PYTHONPATH,
to check that the tests pinned to the CPU stay there on a machine with a GPU (docs/testing.md):

    COCOINS_FAKE_CUDA=1 PYTHONPATH=tests/fake_cuda:. python -m pytest tests/test_pipeline_dvc.py

torch.cuda.is_available() answers True and device_count() 1 when the caller is the project's code (a module of
the cocoins package, or a stage script run as __main__), so `device: auto` resolves to CUDA there; a test or
stage that then really used CUDA fails on this CPU-only machine, where a pinned one passes. Torch and other
libraries keep the true answer (torch's own optimizers ask it and would otherwise reach for a CUDA stream). The
DVC tests hand PYTHONPATH on to their stages (tests/test_pipeline_dvc.py, small_project)."""

import os
import sys

if os.environ.get("COCOINS_FAKE_CUDA") == "1":
    import torch

    def _asked_by_the_project() -> bool:
        caller = sys._getframe(2).f_globals.get("__name__", "")
        return caller == "__main__" or caller.split(".")[0] == "cocoins"

    _is_available, _device_count = torch.cuda.is_available, torch.cuda.device_count
    torch.cuda.is_available = lambda: True if _asked_by_the_project() else _is_available()
    torch.cuda.device_count = lambda: 1 if _asked_by_the_project() else _device_count()

"""Make CUDA look available to the project's code in every Python process started with this folder on PYTHONPATH,
to check that the tests pinned to the CPU stay there on a machine with a GPU (docs/testing.md):

    COCOINS_FAKE_CUDA=1 PYTHONPATH=tests/fake_cuda:. python -m pytest tests/test_pipeline_dvc.py

torch.cuda.is_available() answers True and device_count() 1 when the caller is the project's code (a module of
the cocoins package, or a stage script run as __main__), so `device: auto` resolves to CUDA there; a test or
stage that then really used CUDA fails on this CPU-only machine, where a pinned one passes. Torch and other
libraries keep the true answer (torch's own optimizers ask it and would otherwise reach for a CUDA stream). The
DVC tests hand PYTHONPATH on to their stages (tests/test_pipeline_dvc.py, small_project)."""

import importlib.util
import os
import sys


def _asked_by_the_project() -> bool:
    caller = sys._getframe(2).f_globals.get("__name__", "")
    return caller == "__main__" or caller.split(".")[0] == "cocoins"


def _fake_cuda(torch) -> None:
    _is_available, _device_count = torch.cuda.is_available, torch.cuda.device_count
    torch.cuda.is_available = lambda: True if _asked_by_the_project() else _is_available()
    torch.cuda.device_count = lambda: 1 if _asked_by_the_project() else _device_count()


class _FakeCudaWhenTorchLoads:
    """Patches torch when something imports it, not at start-up: a process that never imports torch (pip, or
    `import cocoins`, which must stay light: tests/test_import_graph.py) is left as it is."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)   # once: the real finders locate torch
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def run_then_fake(module):
            run(module)
            _fake_cuda(module)

        spec.loader.exec_module = run_then_fake
        return spec


if os.environ.get("COCOINS_FAKE_CUDA") == "1":
    if "torch" in sys.modules:
        _fake_cuda(sys.modules["torch"])
    else:
        sys.meta_path.insert(0, _FakeCudaWhenTorchLoads())

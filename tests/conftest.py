"""Shared pytest fixtures."""

import os

import pytest

from cocoins.runtime import CPU_KERNEL_PINS, CPU_KERNELS_VARIABLE, threads_per_process

# With COCOINS_CPU_KERNELS=pinned the tests run on the stages' pinned CPU kernels, set before any kernel ran: the
# stages they start inherit them (no re-exec) and what a test computes in-process has the bits a stage would.
if os.environ.get(CPU_KERNELS_VARIABLE) == "pinned":
    os.environ.update(CPU_KERNEL_PINS)


# Under `make test` (two xdist workers on 2 cores) each worker computes on its share of the cores, and so do the
# DVC stages its tests start (they inherit OMP_NUM_THREADS). With torch's default, every worker ran one thread per
# core: four threads on two cores, and the suite's long tests ran 2 to 3 times as long as they do alone.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    import torch

    _THREADS = str(threads_per_process(_WORKERS))
    os.environ.update(OMP_NUM_THREADS=_THREADS, MKL_NUM_THREADS=_THREADS)
    torch.set_num_threads(int(_THREADS))


LONGEST_FIRST = ("tests/test_mini_world.py",)   # the effect test: about 17 of the suite's 20 minutes, on one worker


def _file(item) -> str:
    return item.nodeid.split("::")[0]


def pytest_collection_modifyitems(config, items):
    """Files in the order `make test`'s two workers should take them (xdist `--dist loadfile` with
    `--no-loadscope-reorder`, which keeps this order): the effect test first, so it starts at once on one worker;
    then one file of quick tests, which is what that worker holds in its queue behind the effect test (xdist
    keeps more than two tests queued per worker); then the files with slow tests, so the other worker runs the
    long ones while the effect test runs, and the quick files last, which both workers share at the end."""
    tests_in, slow_files = {}, set()
    for item in items:
        tests_in[_file(item)] = tests_in.get(_file(item), 0) + 1
        if item.get_closest_marker("slow"):
            slow_files.add(_file(item))
    quick = sorted((f for f in tests_in if f not in slow_files), key=lambda f: -tests_in[f])
    filler = quick[:1]   # the quick file with the most tests: it fills the effect test's worker's queue
    rank = {f: 0 for f in LONGEST_FIRST}
    rank.update({f: 1 for f in filler})
    rank.update({f: 2 for f in slow_files if f not in rank})
    items.sort(key=lambda item: rank.get(_file(item), 3))   # stable: the files' own order within each rank


# ---- cocoins.sdxl: tiny SDXL pipeline (owner: sdxl) -------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_sdxl():
    """The tiny SDXL pipeline (seed 0), built once per session. Treat as read-only: build your own to mutate."""
    from cocoins.sdxl.tiny import build_tiny_sdxl

    return build_tiny_sdxl(seed=0)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_sdxl):
    """`PromptEncoder` over the tiny pipeline's tokenizers and text encoders."""
    from cocoins.sdxl.encode import PromptEncoder

    return PromptEncoder.from_pipeline(tiny_sdxl)
# ---- end cocoins.sdxl ---------------------------------------------------------------------------------------


# ---- cocoins.data: tiny synthetic world (owner: data) ------------------------------------------------------
TINY_WORLD = dict(seed=0, identities=4, images_per_identity=2, two_person_images=2, image_size=64)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A CelebA-format synthetic world of 10 images (4 identities x 2 + 2 two-person). Read-only."""
    from cocoins.world.people import WorldConfig, write_world

    root = tmp_path_factory.mktemp("world") / "world"
    write_world(root, WorldConfig(**TINY_WORLD))
    return root
# ---- end cocoins.data ---------------------------------------------------------------------------------------


# ---- cocoins.backends: the original groundingdino package (owner: gdino) -----------------------------------
@pytest.fixture(scope="session")
def tiny_groundingdino_package(tmp_path_factory):
    """(config .py, checkpoint .pth, BERT dir) of a tiny random groundingdino-package model. Read-only."""
    pytest.importorskip("groundingdino", reason="groundingdino-py not installed; `make install` installs it")
    from cocoins.backends.tiny import build_tiny_groundingdino_package

    return build_tiny_groundingdino_package(tmp_path_factory.mktemp("groundingdino") / "tiny")
# ---- end cocoins.backends -----------------------------------------------------------------------------------

"""Shared pytest fixtures."""

import os

import pytest

from cocoins.runtime import CPU_KERNEL_PINS, CPU_KERNELS_VARIABLE

# With COCOINS_CPU_KERNELS=pinned the tests run on the stages' pinned CPU kernels, set before any kernel ran: the
# stages they start inherit them (no re-exec) and what a test computes in-process has the bits a stage would.
if os.environ.get(CPU_KERNELS_VARIABLE) == "pinned":
    os.environ.update(CPU_KERNEL_PINS)


LONGEST_FIRST = ("tests/test_mini_world.py",)   # the effect test: about 17 of the suite's minutes on 2 cores


def pytest_collection_modifyitems(config, items):
    """The longest test file first: with two xdist workers (`make test`) it starts at once on one worker while
    the other takes the rest, instead of starting last and running alone."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in LONGEST_FIRST)


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

"""Shared by the front's tests: a tiny SDXL and a tiny mapper on disk (built once per test module)."""

from pathlib import Path

import torch

from cocoins.method.mapper import Mapper, MapperConfig
from cocoins.sdxl.tiny import save_tiny_sdxl

SIZE = 32   # pixels: smaller than the tiny model's own 64, for speed


def write_models(root: Path, mapper_seed: int = 0) -> Path:
    """root/model (tiny SDXL) and root/mapper (c = 8) whose pseudo-words visibly change the image."""
    save_tiny_sdxl(root / "model", seed=0)
    write_mapper(root / "mapper", mapper_seed)
    return root


def write_mapper(directory: Path, seed: int) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mapper = Mapper(MapperConfig(code_dim=8, layers=2, hidden_dim=16, out_dims=(32, 32)))
    with torch.no_grad():
        mapper.net[-1].weight.mul_(20)
    mapper.save_pretrained(directory)
    return directory


def write_identity(directory: Path, seed: int = 0) -> Path:
    """A random tiny trait classifier saved like the identity stage's (models/identity): the casting metric of
    the tests. Untrained, it still tells images apart, which is all casting needs of it here."""
    from cocoins.world.traits import TraitClassifier, TraitConfig, TraitNet

    cfg = TraitConfig(image_size=32, width=4, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = TraitNet(cfg)
    with torch.no_grad():       # sharper heads: a random net's near-uniform outputs would put every look together
        for head in net.heads.values():
            head.weight.mul_(1000)
    return TraitClassifier(net, cfg).save(directory)

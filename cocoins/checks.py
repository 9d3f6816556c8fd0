"""Preflight building blocks: is a model, a file, a package or a service there, before hours of work.

Each function returns a list of problems, one line each, naming what is missing and the fix; an empty list
means ready. None of them loads weights: a check must finish in seconds even for a 7B model. Stages call
their checks before their first item (`require`), and `cocoins preflight` runs every stage's at once.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from cocoins.runtime import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(name: str) -> bool:
    """"org/name" with no leading ".", "/" or "~" and no such local directory."""
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def model_problems(name: str, option: str, marker: str = "config.json") -> list[str]:
    """A model named by a local directory or a hub id, checked without loading it.

    Args:
        name: the directory or hub id as written in params.yaml.
        option: the params key that names it (`caption.model`), for the message.
        marker: a file every copy of this kind of model has (`model_index.json` for a diffusers pipeline).

    A directory must hold `marker`. A hub id must be in the local Hugging Face cache when downloads are off
    (HF_HUB_OFFLINE=1); with downloads on, the hub is asked whether the file exists (a gated repository
    without a token answers no).
    """
    if not name:
        return [f"{option} is empty: set it to a local directory or a hub id"]
    path = Path(name).expanduser()
    if path.exists() or not _HUB_ID.match(name):
        if not path.is_dir():
            return [f"{option}: {name} does not exist; set it to a local model directory or a hub id"]
        if not (path / marker).is_file():
            return [f"{option}: {name} has no {marker}; point it at a saved model directory (save_pretrained)"]
        return []
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, marker), str):
        return []
    if constants.HF_HUB_OFFLINE:
        return [f"{option}: {name} is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1); "
                f"run `hf download {name}` once with network, or unset HF_HUB_OFFLINE"]
    try:
        from huggingface_hub import file_exists

        if file_exists(name, marker):
            return []
        return [f"{option}: the hub has no {marker} in {name}; check the id"]
    except Exception as err:  # a gated repo, no network, a typo: all mean the same fix, named in the line
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        return [f"{option}: cannot reach {name} on the hub ({reason}); log in (`hf auth login`) for a gated "
                "model, or download it to a local directory and name that"]


def file_problems(path: str | os.PathLike, option: str, fix: str) -> list[str]:
    """A file that must exist (a checkpoint, a config), with the fix if not."""
    return [] if Path(path).expanduser().is_file() else [f"{option}: {path} does not exist; {fix}"]


def dir_problems(path: str | os.PathLike, option: str, fix: str) -> list[str]:
    """A directory that must exist, with the fix if not."""
    return [] if Path(path).expanduser().is_dir() else [f"{option}: {path} does not exist; {fix}"]


def package_problems(module: str, needed_for: str, install: str) -> list[str]:
    """An importable package (found, not imported: importing torch-heavy packages costs seconds)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return [] if found else [f"{needed_for} needs the `{module}` package; install it with {install}"]


def require(stage: str, problems: list[str]) -> None:
    """Raise one UserError listing every problem, so a stage stops in seconds instead of hours in."""
    if problems:
        raise UserError(f"{stage}: not ready, {len(problems)} problem(s):\n  " + "\n  ".join(problems))

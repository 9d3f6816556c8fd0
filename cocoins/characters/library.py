"""A character library: named latent codes kept in a folder, each tied to the mapper it was made for.

A character is a pair of files, `NAME.safetensors` (the code `z` [c]) and `NAME.json` (its name, code size,
the sha256 of the mapper's weights, and where the code came from). The pair is also the export format:
another user imports it into their library. A code only means a person to the mapper it was drawn for, so
using a character with another mapper is an error, never a silently different person.

The library folder is `--library`, else $COCOINS_LIBRARY, else `characters/`. Every file the library opens is
`<folder>/<valid name>.{safetensors,json}`: names are checked (cocoins.characters.prompts.check_name) before any
path is built from them.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cocoins.characters.codes import MAX_CODE_FILE_BYTES, file_sha256, read_code_file, write_code_file
from cocoins.characters.prompts import check_name
from cocoins.runtime import UserError


class UnknownCharacter(UserError):
    """A name the library does not hold. Its fields let a front end word the fix its own way (the app's
    create button instead of the CLI's command)."""

    def __init__(self, name: str, root: Path, known: list[str]):
        self.name, self.known = name, known
        super().__init__(f"no character {name!r} in the library {root} (it has: {', '.join(known) or 'none yet'}); "
                         f"create it with `cocoins character new {name} --seed N` or pick another --library")


class CharacterExists(UserError):
    def __init__(self, name: str, root: Path):
        self.name = name
        super().__init__(f"character {name!r} already exists in {root}; pick another name or remove it first with "
                         f"`cocoins character rm {name}`")


class CharacterForOtherMapper(UserError):
    """A character whose code was drawn for another mapper: the same code would draw another person."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(message)

LIBRARY_ENV = "COCOINS_LIBRARY"
DEFAULT_LIBRARY = "characters"
FORMAT = 1


def default_library() -> Path:
    return Path(os.environ.get(LIBRARY_ENV) or DEFAULT_LIBRARY)


@dataclass(frozen=True)
class Character:
    name: str
    z: torch.Tensor = field(repr=False)   # [c]
    mapper_sha256: str
    source: dict                          # {"code_seed": n} or {"code_file_sha256": ...} or {"imported": ...}

    @property
    def code_dim(self) -> int:
        return int(self.z.numel())

    @property
    def code_seed(self) -> int | None:
        return self.source.get("code_seed")

    def record(self) -> dict:
        """What a sidecar keeps: enough to render the image again without the library."""
        rec = {"character": self.name}
        return {**rec, "code_seed": self.code_seed} if self.code_seed is not None else {**rec, "z": self.z.tolist()}

    def check_mapper(self, mapper_sha256: str, code_dim: int) -> None:
        if self.code_dim != code_dim:
            raise CharacterForOtherMapper(self.name, f"character {self.name!r} has a code of {self.code_dim} values "
                                          f"but this mapper takes {code_dim}; it was made for another mapper: "
                                          "create it again for this one")
        if self.mapper_sha256 != mapper_sha256:
            raise CharacterForOtherMapper(self.name, f"character {self.name!r} was made for mapper "
                                          f"{self.mapper_sha256[:12]}, not this mapper ({mapper_sha256[:12]}): the "
                                          "same code would draw a different person. Use the mapper it was made "
                                          f"with, or create the character again with `cocoins character new "
                                          f"{self.name}`")

    def metadata(self) -> dict:
        return {"format": FORMAT, "name": self.name, "code_dim": self.code_dim, "mapper_sha256": self.mapper_sha256,
                "source": self.source}


class CharacterLibrary:
    """The characters in one folder."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_library()

    def _paths(self, name: str) -> tuple[Path, Path]:
        check_name(name)
        return self.root / f"{name}.safetensors", self.root / f"{name}.json"

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if (self.root / f"{p.stem}.safetensors").is_file())

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def get(self, name: str) -> Character:
        code_path, meta_path = self._paths(name)
        if not meta_path.is_file() or not code_path.is_file():
            raise UnknownCharacter(name, self.root, self.names())
        return _read_pair(code_path, meta_path, name)

    def add(self, character: Character, overwrite: bool = False) -> Character:
        """Write the character's pair atomically (both files appear together)."""
        code_path, meta_path = self._paths(character.name)
        if not overwrite and (code_path.exists() or meta_path.exists()):
            raise CharacterExists(character.name, self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".new-") as tmp:
            tmp_code, tmp_meta = _write_pair(Path(tmp), character)
            os.replace(tmp_code, code_path)
            os.replace(tmp_meta, meta_path)
        return character

    def remove(self, name: str) -> None:
        self.get(name)
        for path in self._paths(name):
            path.unlink()

    def export(self, name: str, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Copy the character's pair into `out_dir` (to hand to another user)."""
        character = self.get(name)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return _write_pair(out_dir, character)

    def import_pair(self, path: str | os.PathLike, name: str | None = None, overwrite: bool = False) -> Character:
        """Read an exported pair (the .json or the .safetensors of it) and add it, under `name` if given."""
        path = Path(path)
        meta_path, code_path = path.with_suffix(".json"), path.with_suffix(".safetensors")
        if path.suffix not in (".json", ".safetensors") or not meta_path.is_file() or not code_path.is_file():
            raise UserError(f"{path}: a character is a NAME.json + NAME.safetensors pair in one folder (from "
                            "`cocoins character export`); give the path of either file")
        character = _read_pair(code_path, meta_path, None)
        if name is not None:
            character = Character(check_name(name), character.z, character.mapper_sha256, character.source)
        return self.add(character, overwrite=overwrite)


def _write_pair(directory: Path, character: Character) -> tuple[Path, Path]:
    code_path = write_code_file(directory / f"{character.name}.safetensors", character.z,
                                metadata={"name": character.name, "mapper_sha256": character.mapper_sha256})
    meta = {**character.metadata(), "code_sha256": file_sha256(code_path)}
    meta_path = directory / f"{character.name}.json"
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return code_path, meta_path


def _read_pair(code_path: Path, meta_path: Path, expect_name: str | None) -> Character:
    if meta_path.stat().st_size > MAX_CODE_FILE_BYTES:
        raise UserError(f"{meta_path} is too big to be a character file")
    try:
        meta = json.loads(meta_path.read_text())
        name, code_dim, mapper_sha256 = meta["name"], int(meta["code_dim"]), str(meta["mapper_sha256"])
        source = dict(meta.get("source") or {})
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise UserError(f"{meta_path} is not a character file (needs JSON with name, code_dim, mapper_sha256); "
                        "export it again with `cocoins character export`") from None
    check_name(name, f"{meta_path}: name")
    if expect_name is not None and name != expect_name:
        raise UserError(f"{meta_path} names the character {name!r}, not {expect_name!r}; rename the files back")
    if meta.get("code_sha256") not in (None, file_sha256(code_path)):
        raise UserError(f"{code_path} does not match {meta_path} (sha256 differs); export the pair again")
    z = read_code_file(code_path, code_dim, what="character code")
    return Character(name, z, mapper_sha256, source)


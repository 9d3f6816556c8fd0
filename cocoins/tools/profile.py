"""Profiles: a file of params.yaml groups and keys that switches the pipeline to another size in one step.

    python -m cocoins.tools.profile check profiles/full-scale.yaml    # keys, types, values: no file written
    python -m cocoins.tools.profile apply profiles/full-scale.yaml    # merge into params.yaml, comments kept
    python -m cocoins.tools.profile show profiles/full-scale.yaml     # the keys that apply would change

A profile holds only what differs from params.yaml; applying it sets those keys and leaves every other key,
and every comment, as it was (ruamel.yaml round trip), so `git diff params.yaml` shows exactly the switch.
The merged result is checked by the params schema (cocoins/config.py) before params.yaml is replaced.
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
from pathlib import Path

import yaml

from cocoins.config import ParamsError, parse_params
from cocoins.io import atomic_path

PLACEHOLDER = "/path/to/"   # a profile's paths that the user must fill in before a run


def read_profile(path: str | Path) -> dict:
    """A profile as {group: {key: value}}; ParamsError naming the file and the problem otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"profile {path} not found; profiles/ holds the shipped ones")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"profile {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ParamsError(f"profile {path} must map params groups to their keys, like `train: {{steps: 5000}}`")
    return raw


def merge(params: dict, profile: dict) -> dict:
    """params with the profile's keys set (a group's other keys kept); neither input is changed."""
    out = copy.deepcopy(params)
    for group, keys in profile.items():
        out.setdefault(group, {})
        out[group] = {**(out[group] or {}), **keys}
    return out


def changes(params: dict, profile: dict) -> list[tuple[str, object, object]]:
    """(group.key, value now, value after) for each key the profile changes."""
    return [(f"{group}.{key}", (params.get(group) or {}).get(key), value)
            for group, keys in profile.items() for key, value in keys.items()
            if (params.get(group) or {}).get(key, object()) != value]


def placeholders(profile: dict) -> list[str]:
    """The keys still holding a /path/to/ placeholder: the paths the user must fill in."""
    return [f"{group}.{key}" for group, keys in profile.items() for key, value in keys.items()
            if isinstance(value, str) and value.startswith(PLACEHOLDER)]


def check(profile_path: str | Path, params_path: str | Path = "params.yaml"):
    """Validate params.yaml with the profile applied (keys, types, values; not whether paths exist)."""
    params = yaml.safe_load(Path(params_path).read_text()) or {}
    return parse_params(merge(params, read_profile(profile_path)), Path(params_path).parent, check_paths=False)


def apply(profile_path: str | Path, params_path: str | Path = "params.yaml") -> list[tuple[str, object, object]]:
    """Set the profile file's keys in params.yaml (comments and order kept), after checking the result."""
    return apply_mapping(read_profile(profile_path), params_path, source=str(profile_path))


def apply_mapping(profile: dict, params_path: str | Path = "params.yaml",
                  source: str = "the profile") -> list[tuple[str, object, object]]:
    """Set `profile`'s keys ({group: {key: value}}) in params.yaml, comments and order kept; checked first."""
    from ruamel.yaml import YAML

    todo = placeholders(profile)
    if todo:
        raise ParamsError(f"{source}: fill in the paths of {', '.join(todo)} (they still start with "
                          f"{PLACEHOLDER}), then apply it again")
    params_path = Path(params_path)
    current = yaml.safe_load(params_path.read_text()) or {}
    parse_params(merge(current, profile), params_path.parent)
    rt = YAML()
    rt.preserve_quotes = True
    rt.indent(mapping=2, sequence=4, offset=2)      # params.yaml's own layout, so untouched lines stay as they are
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = rt.load(params_path.read_text())
    for group, keys in profile.items():
        if doc.get(group) is None:
            doc[group] = {}
        for key, value in keys.items():
            doc[group][key] = value
    buffer = io.StringIO()
    rt.dump(doc, buffer)
    with atomic_path(params_path) as tmp:
        tmp.write_text(buffer.getvalue())
    return changes(current, profile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cocoins.tools.profile", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["check", "apply", "show"])
    parser.add_argument("profile")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        if args.action == "check":
            check(args.profile, args.params)
            todo = placeholders(read_profile(args.profile))
            print(f"{args.profile}: valid" + (f"; paths to fill in: {', '.join(todo)}" if todo else ""))
        elif args.action == "show":
            params = yaml.safe_load(Path(args.params).read_text()) or {}
            for key, now, after in changes(params, read_profile(args.profile)):
                print(f"{key}: {now!r} -> {after!r}")
        else:
            done = apply(args.profile, args.params)
            print(f"{args.params}: {len(done)} key(s) set from {args.profile}")
            for key, now, after in done:
                print(f"  {key}: {now!r} -> {after!r}")
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

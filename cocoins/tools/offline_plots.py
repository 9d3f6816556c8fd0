"""Make `dvc plots show` render without network: an HTML template with vega inlined.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, which leaves the plots blank offline.
`--install` fetches the same versions DVC asks for from the npm registry (`npm pack`), and writes
`.dvc/offline-plots.html` (the `plots.html_template` set in .dvc/config) with the three scripts inlined.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# The versions dvc-render's page requests (dvc_render/vega.py).
PACKAGES = {"vega@5.20.2": "package/build/vega.min.js",
            "vega-lite@5.2.0": "package/build/vega-lite.min.js",
            "vega-embed@6.18.2": "package/build/vega-embed.min.js"}

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
{inline_scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def build_template(scripts: list[str]) -> str:
    for js in scripts:
        if "{plot_divs}" in js or "{refresh_tag}" in js or "</script>" in js:
            raise ValueError("a vega bundle contains a template placeholder or </script>; cannot inline it")
    inline = "\n".join(f"    <script>{js}</script>" for js in scripts)
    return PAGE.format(inline_scripts=inline)


def fetch_scripts(work: Path) -> list[str]:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found; install Node.js (Debian: apt-get install npm) to render plots offline")
    subprocess.run([npm, "pack", "--silent", *PACKAGES], cwd=work, check=True, stdout=subprocess.DEVNULL)
    scripts = []
    for spec, member in PACKAGES.items():
        name, version = spec.rsplit("@", 1)
        with tarfile.open(work / f"{name}-{version}.tgz") as tar:
            scripts.append(tar.extractfile(member).read().decode("utf-8"))
    return scripts


def install(repo_root: Path) -> Path:
    target = repo_root / ".dvc" / "offline-plots.html"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        page = build_template(fetch_scripts(Path(tmp)))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp")
    partial.write_text(page)
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--install", action="store_true", help="write .dvc/offline-plots.html")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when the template cannot be installed (`make install` under CI=true)")
    args = parser.parse_args(argv)
    if not args.install:
        parser.print_help()
        return 0
    try:
        print(f"offline plot template: {install(Path.cwd())}")
    except (RuntimeError, subprocess.CalledProcessError) as err:
        if args.strict:   # CI: the tests that render plots offline would otherwise skip unseen
            print(f"error: offline plot template not installed: {err}", file=sys.stderr)
            return 1
        # Plots still render with network; everything else works without the template.
        print(f"warning: offline plot template not installed: {err}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

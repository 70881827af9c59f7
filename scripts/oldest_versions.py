"""Print pip constraints that pin every runtime dependency to its lower bound in pyproject.toml.

``./run.sh test-oldest`` installs the package with these constraints into ``.venv-oldest`` and runs the
tests there, so the lower bounds that pyproject declares are versions the tests actually ran on.

    python scripts/oldest_versions.py            # one "name==version" line per runtime dependency
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
BOUND = re.compile(r"^([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)$")


def runtime_lower_bounds(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """``{distribution name: lower bound}`` for each entry of ``[project] dependencies``.

    Every runtime dependency must be written as ``"name>=version"`` (no upper bound, no markers), the
    form this project uses; anything else raises ValueError so that no dependency escapes the test.
    """
    bounds: dict[str, str] = {}
    for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        match = BOUND.match(requirement.strip())
        if match is None:
            raise ValueError(f'dependency not in the form "name>=version": {requirement}')
        bounds[match.group(1)] = match.group(2)
    return bounds


def main() -> int:
    for name, version in runtime_lower_bounds().items():
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

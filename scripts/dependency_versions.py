"""What pyproject.toml declares, turned into pip input for the two ends of the tested range.

``./run.sh test-oldest`` installs the package with every runtime dependency pinned to its lower bound
(``oldest``), so the lower bounds that pyproject declares are versions the tests actually ran on.
``./run.sh test-newest`` installs the newest versions the index offers and then lifts the project's own caps
(``capped``: the dependencies written with an upper bound, e.g. an extra held below a release known to break),
so that the run finds out whether a cap can go.

    python scripts/dependency_versions.py oldest    # one "name==version" line per runtime dependency
    python scripts/dependency_versions.py capped    # one name per dependency (runtime or extra) with an upper bound
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
BOUND = re.compile(r"^([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)$")
NAME = re.compile(r"^\s*([A-Za-z0-9_.\-]+)")


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


def capped_dependencies(pyproject: Path = PYPROJECT) -> list[str]:
    """Names of the dependencies (runtime or any extra) that pyproject holds below a version (``<`` or ``<=``)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    names = [NAME.match(r).group(1) for r in requirements if "<" in r.split(";")[0]]
    return sorted(set(names))


def main(argv: list[str]) -> int:
    if argv == ["oldest"]:
        for name, version in runtime_lower_bounds().items():
            print(f"{name}=={version}")
    elif argv == ["capped"]:
        print("\n".join(capped_dependencies()))
    else:
        print("usage: python scripts/dependency_versions.py oldest|capped", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

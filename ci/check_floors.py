"""Check that ci/floors.txt pins exactly the `>=` floors declared in pyproject.toml.

Every requirement of mpnb and of its test extra must have a floor, and the constraints
file must pin that same version (3.0 and 3.0.0 count as one), so the floors that
`make test-floors` tests are the ones users get. Runs on any CPython 3.10+ (no tomllib).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def declared() -> dict[str, str]:
    """name -> floor, for `dependencies` and the `test` and `dask` extras of pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    floors: dict[str, str] = {}
    for block in ("dependencies", "test", "dask"):
        match = re.search(rf"^{block} = \[(.*?)^\]", text, re.S | re.M)
        if match is None:
            sys.exit(f"check_floors: no `{block} = [...]` in pyproject.toml")
        for req in re.findall(r'"([^"]+)"', match.group(1)):
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", req)
            if m is None:
                sys.exit(f"check_floors: {req!r} in pyproject.toml has no plain `>=` floor")
            floors[canonical(m.group(1))] = m.group(2)
    return floors


def pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "ci" / "floors.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9.]+)", line)
        if m is None:
            sys.exit(f"check_floors: {line!r} in ci/floors.txt is not `name==version`")
        pins[canonical(m.group(1))] = m.group(2)
    return pins


def main() -> int:
    floors, pins = declared(), pinned()
    errors = [
        f"{name}: pyproject.toml says >={floors[name]}, ci/floors.txt "
        + (f"pins =={pins[name]}" if name in pins else "does not pin it")
        for name in floors
        if release(floors[name]) != release(pins.get(name, "-1"))
    ]
    errors += [
        f"{name}: pinned in ci/floors.txt but not a requirement in pyproject.toml"
        for name in pins
        if name not in floors
    ]
    for error in errors:
        print(f"check_floors: {error}", file=sys.stderr)
    if not errors:
        print(f"check_floors: ci/floors.txt pins the {len(pins)} floors of pyproject.toml")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

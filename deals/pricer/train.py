"""Fine-tuning the specialist pricer with (Q)LoRA: what `deals train` runs.

    result = train(load_train_config(preset="tiny", overrides={"max_steps": 10}))

One run:

1. data: the training products (`train_files`, else the bundled starter catalogue) and
   held-out validation products (`validation_file`, else the repository's
   data/eval/validation.jsonl, else a deterministic split), hashed for the metadata;
2. model: the base model (`deals.pricer.modeling.resolve_base`: tiny / GGUF package /
   .gguf / directory / hub id), 4-bit NF4 with double quantisation when asked (the
   default on CUDA), a LoRA adapter from peft;
3. examples: the shared prompt (`deals.pricer.prompts.PricePrompt`) tokenised with
   labels = -100 everywhere except the price and the end-of-turn token, so the loss
   covers only the answer; batches are left-padded and only the last positions'
   logits are computed (`logits_to_keep`), which saves the vocabulary projection
   (and its memory) over every prompt token;
4. training: the transformers `Trainer` (transformers 5 names: `eval_strategy`,
   `processing_class`, `dtype`, `use_cpu`), cosine schedule with warm-up, paged AdamW
   on CUDA; checkpoints every `save_steps` under output_dir/checkpoints and, with
   `resume` (the default), a rerun of the same command continues from the last one;
   Ctrl-C asks for a checkpoint at the end of the current step and stops (a second
   Ctrl-C aborts at once);
5. evaluation: `PricingEvalCallback` prices `eval_items` validation products by
   generation every `eval_steps` steps and at the end (MAE, RMSLE, hit rate through
   `deals.pricer.evaluate`), besides the eval loss;
6. output: the adapter, the tokenizer (with its chat template) and `deals_model.json`
   (base model, prompt version, data files and sha256, hyperparameters, metrics,
   timings) in output_dir; with `merge`, full merged weights in output_dir/merged.

Progress (steps, loss, learning rate, ETA) is shown with rich on stderr; each logging
step is also printed as a plain line, so logs of background runs show it too.
"""

from __future__ import annotations

import json
import logging
import math
import random
import resource
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console

from deals.framework.files import atomic_write_text
from deals.framework.errors import ConfigError, DataError
from deals.framework.models import Product, utcnow
from deals.framework.settings import Settings
from deals.pricer import modeling
from deals.pricer.prompts import ANSWER_PREFIX, PROMPT_VERSION, PricePrompt
from deals.pricer.train_config import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"
REPO_VALIDATION = Path(__file__).resolve().parents[2] / "data" / "eval" / "validation.jsonl"
# Fields that must match for a checkpoint to be resumed (the rest may change between runs).
_RUN_KEYS = (
    "base_model", "gguf_file", "tiny", "load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
    "lora_r", "lora_alpha", "lora_dropout", "target_modules", "train_files", "curate", "max_train_items",
    "batch_size", "gradient_accumulation_steps", "max_length", "seed",
)  # fmt: skip


class TrainResult(BaseModel):
    """What one `train()` call did."""

    output_dir: str
    completed: bool = Field(description="False when stopped early (Ctrl-C): a checkpoint was saved, rerun to resume")
    global_step: int
    max_steps: int
    resumed_from: str | None = None
    train_items: int
    validation_items: int
    first_loss: float | None = Field(None, description="first logged training loss (answer tokens only)")
    last_loss: float | None = Field(None, description="last logged training loss")
    eval_loss: float | None = None
    loss_history: list[tuple[int, float]] = Field(default_factory=list, description="(step, training loss) per logging step")
    metrics: dict[str, Any] | None = Field(None, description="final pricing metrics on the validation subset")
    eval_history: list[dict[str, Any]] = Field(default_factory=list)
    tokens: int = Field(0, description="non-padding tokens trained on in this session")
    tokens_per_s: float | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    total_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float | None = None
    merged_dir: str | None = None


# --------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    train: list[Product]
    validation: list[Product]
    files: dict[str, list[dict[str, Any]]]  # role -> [{path, sha256, items}]


def _file_record(path: Path, items: int) -> dict[str, Any]:
    return {"path": str(path), "sha256": modeling.sha256_file(path), "items": items}


def load_training_data(config: TrainConfig, settings: Settings) -> TrainingData:
    """Training and validation products, and the files they came from (with sha256)."""
    from deals.pricer.catalogue import STARTER_DIR, STARTER_PRODUCTS, starter_products
    from deals.pricer.data import curate, load_many, load_products, split

    files: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    if config.train_files:
        paths = [Path(p).expanduser() for p in config.train_files]
        for path in paths:
            if not path.exists():
                raise DataError(f"training file not found: {path}")
        products = load_many(paths)
        if config.curate:
            products = curate(products, settings.data).products
        files["train"] = [_file_record(p, 0) for p in paths]
    else:
        products = starter_products()
        files["train"] = [_file_record(STARTER_DIR / STARTER_PRODUCTS, len(products))]

    if config.validation_file:
        vpath = Path(config.validation_file).expanduser()
        if not vpath.exists():
            raise DataError(f"validation file not found: {vpath}")
        validation = load_products(vpath)
        files["validation"] = [_file_record(vpath, len(validation))]
        train = products
    elif not config.train_files and REPO_VALIDATION.exists():
        validation = load_products(REPO_VALIDATION)
        files["validation"] = [_file_record(REPO_VALIDATION, len(validation))]
        train = products
    else:
        parts = split(products, settings.data)
        train, validation = parts.train, parts.validation
        for record in files["validation"] or files["train"]:
            record["split"] = f"validation split (seed {settings.data.seed})"
    if not validation and config.eval_items:
        # tiny inputs: evaluate on a few training items rather than on nothing
        validation = products[: config.eval_items]
    if config.max_train_items and len(train) > config.max_train_items:
        train = random.Random(config.seed).sample(train, config.max_train_items)
    if not train:
        raise DataError("no training products (check --data and the curation settings)")
    if config.train_files:
        for record in files["train"]:
            record["items"] = len(train)
    return TrainingData(train=train, validation=validation, files=files)


class ExampleDataset:
    """Encoded examples (`input_ids`, `labels`) of products, for the Trainer."""

    def __init__(self, products: Sequence[Product], prompt: PricePrompt) -> None:
        self.examples = [prompt.example(p.text, p.price) for p in products]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.examples[index]


class PriceCollator:
    """Left-pads a batch and keeps logits only where the answer is predicted.

    Every row ends with its answer, so after left padding the labelled positions are the
    last ones: the model is asked for the logits of the last K positions only
    (`logits_to_keep`, K = longest answer + 1) and gets the labels of those positions.
    The model's loss shifts labels by one, so logit j predicts label j+1: the first kept
    label is always -100 and every answer token is scored, none of the prompt.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        answer = max(sum(1 for label in f["labels"] if label != -100) for f in features)
        keep = min(width, answer + 1)
        ids = torch.full((len(features), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, width - n :] = torch.tensor(f["input_ids"])
            mask[i, width - n :] = 1
            labels[i, width - n :] = torch.tensor(f["labels"])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "labels": labels[:, width - keep :].contiguous(),
            "logits_to_keep": keep,
        }


# --------------------------------------------------------------------------- callbacks


def _callbacks_module() -> Any:
    from transformers import TrainerCallback

    return TrainerCallback


def make_eval_callback(
    tokenizer: Any, items: Sequence[Product], config: TrainConfig, settings: Settings, console: Console | None
) -> Any:
    """A `TrainerCallback` pricing `items` by generation every `eval_steps` steps and at the end."""
    from deals.pricer.evaluate import evaluate
    from deals.pricer.predict import PredictorPricer, PricePredictor

    base = _callbacks_module()

    class PricingEvalCallback(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.history: list[dict[str, Any]] = []
            self.final: Any = None
            self.seconds = 0.0

        def run(self, model: Any, step: int) -> Any:
            if not items:
                return None
            started = time.perf_counter()
            predictor = PricePredictor(
                model,
                tokenizer,
                max_length=config.max_length,
                decoding=config.eval_decoding,
                low=settings.pricing.min_estimate,
                high=settings.pricing.max_estimate,
                batch_size=config.eval_batch_size,
            )
            pricer = PredictorPricer(predictor, name="specialist", low=settings.pricing.min_estimate, high=settings.pricing.max_estimate)
            with _quiet("deals.pricer.evaluate"):  # one warning per unpriceable item is noise here
                report = evaluate(pricer, items, settings.evaluation, progress=False, batch_size=config.eval_batch_size)
            self.seconds += time.perf_counter() - started
            row = {
                "step": step,
                "eval_mae": report.mae,
                "eval_rmsle": report.rmsle,
                "eval_hit_rate": report.hit_rate,
                "eval_priced": report.n,
                "eval_failures": report.failures,
            }
            self.history.append(row)
            if console is not None:
                mae = "-" if report.mae is None else f"${report.mae:,.2f}"
                hits = "-" if report.hit_rate is None else f"{100 * report.hit_rate:.1f}%"
                console.print(
                    f"[bold]eval[/] step {step}: MAE {mae}, hits {hits}, priced {report.n}/{report.attempted} "
                    f"({config.eval_decoding}, {time.perf_counter() - started:.0f}s)"
                )
            return report

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            if config.eval_steps and state.global_step % config.eval_steps == 0 and state.global_step < state.max_steps:
                self.run(model, state.global_step)
                state.log_history.append(dict(self.history[-1]))

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            self.final = self.run(model, state.global_step)
            if self.final is not None:
                state.log_history.append(dict(self.history[-1]))

    return PricingEvalCallback()


@contextmanager
def _quiet(name: str):
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def make_progress_callback(console: Console) -> Any:
    """Rich progress (steps, loss, learning rate, ETA) plus one plain line per logging step."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    base = _callbacks_module()

    class RichProgressCallback(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.progress: Progress | None = None
            self.task: Any = None
            self.started = 0.0
            self.start_step = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.progress = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, loss="-")
            self.started = time.perf_counter()
            self.start_step = state.global_step

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs or "loss" not in logs or self.progress is None:
                return
            self.progress.update(self.task, loss=f"{logs['loss']:.4f}")
            done = state.global_step - self.start_step
            elapsed = time.perf_counter() - self.started
            eta = elapsed / done * (state.max_steps - state.global_step) if done else float("nan")
            lr = logs.get("learning_rate")
            self.progress.console.print(
                f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}"
                + (f"  lr {lr:.2e}" if isinstance(lr, float) else "")
                + (f"  ETA {eta / 60:.1f} min" if math.isfinite(eta) else ""),
                highlight=False,
            )

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return RichProgressCallback()


def make_stop_callback() -> Any:
    """A callback that saves a checkpoint and stops at the end of the step once `request()` was called."""
    base = _callbacks_module()

    class GracefulStopCallback(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.requested = threading.Event()
            self.stopped_at: int | None = None

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if self.requested.is_set():
                control.should_save = True
                control.should_training_stop = True
                self.stopped_at = state.global_step
            return control

    return GracefulStopCallback()


@contextmanager
def _sigint_requests_stop(stopper: Any, console: Console | None):
    """First Ctrl-C: checkpoint and stop after this step; second: KeyboardInterrupt as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if stopper.requested.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        stopper.requested.set()
        if console is not None:
            console.print("[yellow]interrupt: saving a checkpoint at the end of this step (Ctrl-C again to abort)[/]")

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- the run


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)


def _run_fingerprint(config: TrainConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    return {key: data[key] for key in _RUN_KEYS}


def _prepare_checkpoints(config: TrainConfig, out: Path) -> Path | None:
    """The checkpoint to resume from (None: start fresh); refuses to resume a different run."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = out / CHECKPOINTS
    run_file = ckpt_dir / RUN_FILE
    fingerprint = _run_fingerprint(config)
    if not config.resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.exists() else None
    if last and run_file.exists():
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
        if changed:
            raise ConfigError(
                f"{out} holds checkpoints of a different run (changed: {', '.join(changed)}); "
                "use --no-resume to start over, or another --output"
            )
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(fingerprint, indent=2) + "\n", encoding="utf-8")
    return Path(last) if last else None


def _training_arguments(config: TrainConfig, out: Path, device: Any, dtype: Any, eval_enabled: bool) -> Any:
    import torch
    from transformers import TrainingArguments

    optimizer = config.optimizer
    if optimizer == "auto":
        optimizer = "paged_adamw_32bit" if device.type == "cuda" and modeling.bitsandbytes_available() else "adamw_torch"
    eval_steps = config.eval_steps or None
    return TrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=optimizer,
        bf16=device.type == "cuda" and dtype == torch.bfloat16,
        fp16=device.type == "cuda" and dtype == torch.float16,
        use_cpu=device.type == "cpu",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if eval_enabled and eval_steps else "no",
        eval_steps=eval_steps,
        prediction_loss_only=True,
        seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
    )


def train(
    config: TrainConfig,
    *,
    settings: Settings | None = None,
    callbacks: Sequence[Any] = (),
    console: Console | None = None,
) -> TrainResult:
    """Run one training (see the module docstring); returns what happened.

    `console` shows progress (None: quiet). Extra `callbacks` are transformers
    `TrainerCallback`s (tests use them to interrupt a run).
    """
    import torch
    from transformers import PrinterCallback, Trainer, set_seed

    started = time.perf_counter()
    settings = settings or Settings()
    out = config.output_path()
    out.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)

    data = load_training_data(config, settings)
    device = modeling.resolve_device(config.device)
    dtype = modeling.resolve_dtype(config.dtype, device)
    quantized = device.type == "cuda" if config.load_in_4bit is None else config.load_in_4bit
    if quantized and not modeling.bitsandbytes_available():
        raise ConfigError("load_in_4bit needs bitsandbytes: pip install 'deals[qlora]' (or --no-4bit)")
    resume_from = _prepare_checkpoints(config, out)

    source = modeling.resolve_base(
        config.base_model,
        gguf_file=config.gguf_file,
        tiny_dir=out / "base",
        tiny_texts=[p.text for p in data.train],
        tiny_spec=config.tiny,
    )
    if console is not None:
        console.print(
            f"[bold]base model[/] {source.path}  [dim]({device.type}, {str(dtype).removeprefix('torch.')}"
            f"{', 4-bit NF4' if quantized else ''})[/]"
        )
    tokenizer = modeling.load_tokenizer(source.path)
    compute = dtype if config.bnb_4bit_compute_dtype == "auto" else getattr(torch, config.bnb_4bit_compute_dtype)
    model = modeling.load_base_model(
        source.path,
        device=device,
        dtype=dtype,
        load_in_4bit=quantized,
        quant_type=config.bnb_4bit_quant_type,
        double_quant=config.bnb_4bit_use_double_quant,
        compute_dtype=compute,
        attn_implementation=config.attn_implementation,
    )
    checkpointing = quantized if config.gradient_checkpointing is None else config.gradient_checkpointing
    model = modeling.add_lora(model, config, quantized=quantized, gradient_checkpointing=checkpointing)
    if console is not None:
        trainable, total = model.get_nb_trainable_parameters()
        console.print(f"[bold]LoRA[/] r={config.lora_r} alpha={config.alpha} on {', '.join(config.target_modules)}: "
                      f"{trainable:,} trainable of {total:,} parameters")  # fmt: skip

    prompt = PricePrompt(tokenizer, config.max_length)
    train_set = ExampleDataset(data.train, prompt)
    eval_items = data.validation[: config.eval_items]
    loss_items = data.validation[: config.eval_loss_items]
    eval_set = ExampleDataset(loss_items, prompt) if loss_items else None
    if console is not None:
        console.print(
            f"[bold]data[/] {len(train_set):,} training examples, {len(eval_items)} validation items priced at evaluations; "
            f"prompt {PROMPT_VERSION} ({prompt.overhead} tokens + description, max_length {config.max_length})"
        )

    args = _training_arguments(config, out, device, dtype, eval_set is not None)
    evaluator = make_eval_callback(tokenizer, eval_items, config, settings, console)
    stopper = make_stop_callback()
    extra = [evaluator, stopper, *callbacks]
    if console is not None:
        extra.insert(0, make_progress_callback(console))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=PriceCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=extra,
    )
    trainer.remove_callback(PrinterCallback)
    if resume_from and console is not None:
        console.print(f"[bold]resuming[/] from {resume_from}")

    train_started = time.perf_counter()
    with _sigint_requests_stop(stopper, console):
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.perf_counter() - train_started - evaluator.seconds
    state = trainer.state
    completed = stopper.stopped_at is None
    eval_loss = None
    if completed and eval_set is not None:
        eval_loss = trainer.evaluate().get("eval_loss")

    history = [(int(row["step"]), float(row["loss"])) for row in state.log_history if "loss" in row]
    losses = [loss for _, loss in history]
    session_tokens = int(state.num_input_tokens_seen - getattr(trainer, "_initial_num_input_tokens_seen", 0))
    result = TrainResult(
        output_dir=str(out),
        completed=completed,
        global_step=state.global_step,
        max_steps=state.max_steps,
        resumed_from=str(resume_from) if resume_from else None,
        train_items=len(train_set),
        validation_items=len(eval_items),
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        eval_loss=eval_loss,
        loss_history=history,
        eval_history=[row for row in state.log_history if "eval_mae" in row],
        tokens=session_tokens,
        tokens_per_s=session_tokens / train_seconds if train_seconds > 0 and session_tokens else None,
        train_seconds=train_seconds,
        eval_seconds=evaluator.seconds,
        peak_rss_mb=_peak_rss_mb(),
        peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    )
    if not completed:
        result.total_seconds = time.perf_counter() - started
        return result
    if evaluator.final is not None:
        final = evaluator.final
        result.metrics = {
            "n": final.n, "attempted": final.attempted, "failures": final.failures, "mae": final.mae,
            "rmsle": final.rmsle, "hit_rate": final.hit_rate, "decoding": config.eval_decoding,
        }  # fmt: skip
        if final.metrics is not None:
            result.metrics["mae_ci95"] = list(final.metrics.mae_ci95)

    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    run_info = {
        "quantized": quantized,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "mixed_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else None,
        "gradient_checkpointing": checkpointing,
    }
    result.total_seconds = time.perf_counter() - started
    write_metadata(out, config, source, data, result, prompt=prompt, run=run_info)
    if config.merge:
        del trainer, model
        merged = modeling.merge_adapter(out)
        result.merged_dir = str(merged)
        write_metadata(out, config, source, data, result, prompt=prompt, run=run_info)
    result.total_seconds = time.perf_counter() - started
    return result


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for name in ("deals", "torch", "transformers", "peft", "bitsandbytes", "tokenizers"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


def write_metadata(
    out: Path,
    config: TrainConfig,
    source: modeling.BaseSource,
    data: TrainingData,
    result: TrainResult,
    *,
    prompt: PricePrompt,
    run: dict[str, Any],
) -> Path:
    """Write `deals_model.json` (atomically): everything needed to trust and reload the output."""
    base = source.model_dump()
    tiny_dir = out / "base"
    base["relative"] = "base" if Path(source.path).resolve() == tiny_dir.resolve() else None
    metadata = {
        "format": modeling.METADATA_FORMAT,
        "created_at": utcnow().isoformat(),
        "prompt_version": PROMPT_VERSION,
        "prompt": {"answer_prefix": ANSWER_PREFIX, "price_format": "whole dollars", "overhead_tokens": prompt.overhead},
        "max_length": config.max_length,
        "base_model": base,
        **run,  # quantized, device, dtype, optimizer, mixed_precision, gradient_checkpointing
        "lora": {"r": config.lora_r, "alpha": config.alpha, "dropout": config.lora_dropout, "target_modules": config.target_modules},
        "hyperparameters": config.model_dump(mode="json"),
        "data": {**data.files, "train_items": result.train_items, "validation_items": result.validation_items},
        "metrics": {
            "final": result.metrics,
            "history": result.eval_history,
            "first_loss": result.first_loss,
            "last_loss": result.last_loss,
            "eval_loss": result.eval_loss,
            "loss_history": result.loss_history,
        },
        "timings": {
            "train_seconds": round(result.train_seconds, 2),
            "eval_seconds": round(result.eval_seconds, 2),
            "total_seconds": round(result.total_seconds, 2),
            "tokens": result.tokens,
            "tokens_per_s": result.tokens_per_s,
            "peak_rss_mb": round(result.peak_rss_mb, 1),
            "peak_gpu_mb": result.peak_gpu_mb,
        },
        "global_step": result.global_step,
        "resumed_from": result.resumed_from,
        "merged": "merged" if result.merged_dir else None,
        "versions": _versions(),
    }
    return atomic_write_text(out / modeling.METADATA_FILE, json.dumps(metadata, indent=2, ensure_ascii=False) + "\n")


__all__ = [
    "ExampleDataset",
    "PriceCollator",
    "TrainResult",
    "TrainingData",
    "load_training_data",
    "make_eval_callback",
    "make_progress_callback",
    "train",
    "write_metadata",
]

#!/usr/bin/env python3
"""GPU QLoRA check: a few training steps on a Qwen2.5-7B-shaped model with random weights.

    python benchmarks/gpu_qlora_check.py                      # needs CUDA (about 2-4 min)
    python benchmarks/gpu_qlora_check.py --steps 20 --batch-size 16 --seq-len 182 --lora-r 32
    python benchmarks/gpu_qlora_check.py --allow-cpu --dims tiny   # the code path on CPU (seconds)
    python benchmarks/gpu_qlora_check.py --with-trainer            # + `deals train` itself on CUDA

No download: the model is built from a `Qwen2Config` with the dimensions of
Qwen/Qwen2.5-7B (hidden 3584, 28 layers, 28 heads / 4 KV heads, MLP 18944, vocabulary
152,064, untied head) on the meta device; every linear layer of the decoder is swapped
for a bitsandbytes 4-bit layer (NF4, double quantisation, bf16 compute: the settings of
the `qwen2.5-7b` preset), then materialised ONE LAYER AT A TIME with random weights and
quantised on the GPU, so the bf16 model never exists in full (peak memory stays that of
the 4-bit model). Then it does what `deals train` does with such a model:
`prepare_model_for_kbit_training` with gradient checkpointing, LoRA r=32 on q,k,v,o
(alpha 64, dropout 0.1), paged AdamW 32-bit, batches shaped like the pricer's (left-
padded prompts of --seq-len tokens, loss on the last answer tokens only, logits kept
only there, through `deals.pricer.train.PriceCollator`).

Reports (table + JSON): training tokens/s (after warm-up steps), seconds per step, peak
GPU memory allocated and reserved, the loss of each step (random weights: it should be
finite, not low), and that every LoRA matrix received gradients. Without CUDA it
refuses with exit code 2 and says so, unless --allow-cpu (a code-path check only).

`--with-trainer` also runs the project's own trainer on CUDA (`deals.pricer.train` with
the tiny preset, 4-bit NF4, bf16, paged AdamW, evaluation by generation during
training, merge), then reloads the output on CUDA (4-bit base + adapter, and merged)
and prices a few descriptions with greedy and expected decoding.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QWEN25_7B = dict(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
TINY = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=2048,
    max_position_embeddings=1024,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)


def build_random_4bit(config, device, compute_dtype, std: float = 0.02):
    """A 4-bit (NF4, double quant) model with random weights, built layer by layer on `device`."""
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear

    bnb_config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=compute_dtype)
    model = replace_with_bnb_linear(model, modules_to_not_convert=["lm_head"], quantization_config=bnb_config)
    generator = torch.Generator(device=device).manual_seed(0)
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            dense = torch.randn(module.out_features, module.in_features, dtype=compute_dtype, device=device, generator=generator)
            dense.mul_(std)
            module.weight = bnb.nn.Params4bit(
                dense, requires_grad=False, quant_type="nf4", compress_statistics=True, module=module
            ).to(device)  # quantises here; the dense copy is freed with `dense`
            del dense
            if module.bias is not None:
                module.bias = torch.nn.Parameter(torch.zeros(module.out_features, dtype=compute_dtype, device=device))
        else:
            for name, param in list(module.named_parameters(recurse=False)):
                if param.device.type != "meta":
                    continue
                value = torch.empty(param.shape, dtype=compute_dtype, device=device)
                if name == "weight" and param.dim() == 1:
                    value.fill_(1.0)  # norms
                elif name == "bias":
                    value.zero_()
                else:
                    value.normal_(0.0, std, generator=generator)
                setattr(module, name, torch.nn.Parameter(value, requires_grad=False))
    # buffers computed on the meta device (rotary inverse frequencies) are rebuilt for real
    rotary = model.model.rotary_emb
    model.model.rotary_emb = type(rotary)(config=config).to(device)
    leftovers = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    leftovers += [n for n, b in model.named_buffers() if b.device.type == "meta"]
    if leftovers:
        raise RuntimeError(f"still on the meta device: {leftovers[:5]}")
    model.is_loaded_in_4bit = True
    model.config.quantization_config = bnb_config
    return model


def trainer_smoke(out: Path) -> dict:
    """`deals.pricer.train` on CUDA with the tiny preset in 4-bit, then inference from its output."""
    from deals.pricer.modeling import load_trained
    from deals.pricer.predict import PricePredictor
    from deals.pricer.train import train
    from deals.pricer.train_config import load_train_config

    config = load_train_config(
        preset="tiny",
        overrides={"device": "cuda", "load_in_4bit": True, "max_steps": 12, "eval_steps": 6, "eval_items": 16,
                   "merge": True, "output_dir": str(out), "resume": False, "save_steps": 6},
    )  # fmt: skip
    result = train(config)
    texts = ["Title: USB-C charger 65W", "Title: Cordless drill 18V kit", "Title: Ceramic mug, 350 ml"]
    model, tokenizer, meta = load_trained(out, device="cuda", merged=False)
    predictor = PricePredictor(model, tokenizer, max_length=meta["max_length"], min_mass=0.0)
    adapter_greedy = predictor.generate_text(texts)
    adapter_expected = [r if isinstance(r, float) else str(r) for r in predictor.predict(texts, decoding="expected")]
    merged, merged_tokenizer, _ = load_trained(out, device="cuda", merged=True)
    merged_greedy = PricePredictor(merged, merged_tokenizer, max_length=meta["max_length"]).generate_text(texts)
    return {
        "completed": result.completed,
        "global_step": result.global_step,
        "first_loss": result.first_loss,
        "last_loss": result.last_loss,
        "eval_history": result.eval_history,
        "tokens_per_s": result.tokens_per_s,
        "peak_gpu_mb": result.peak_gpu_mb,
        "quantized": meta["quantized"],
        "dtype": meta["dtype"],
        "optimizer": meta["hyperparameters"]["optimizer"],
        "adapter_greedy": adapter_greedy,
        "adapter_expected": adapter_expected,
        "merged_greedy": merged_greedy,
        "merged_dir": result.merged_dir,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="training steps, at least 2 (the first --warmup are not timed)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="the qwen2.5-7b preset uses 16")
    parser.add_argument("--seq-len", type=int, default=182, help="tokens per example (the preset's max length)")
    parser.add_argument("--answer-tokens", type=int, default=4, help="labelled tokens at the end of each example")
    parser.add_argument("--lora-r", type=int, default=32)
    parser.add_argument("--dims", choices=["7b", "tiny"], default="7b")
    parser.add_argument("--no-checkpointing", action="store_true", help="disable gradient checkpointing")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA (code-path check, use --dims tiny)")
    parser.add_argument("--with-trainer", action="store_true", help="also run deals.pricer.train (tiny preset) on CUDA")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "gpu_qlora_check.json")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2")

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("gpu_qlora_check: CUDA is not available here; this check needs an NVIDIA GPU "
              "(use --allow-cpu --dims tiny to exercise the code path on CPU). Not run.", file=sys.stderr)  # fmt: skip
        return 2
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        print(f"gpu_qlora_check: bitsandbytes is not usable ({exc}); pip install 'deals[qlora]'. Not run.", file=sys.stderr)
        return 2

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from rich.table import Table
    from transformers import Qwen2Config

    from deals.pricer.train import PriceCollator

    from deals.framework.text import report_console

    console = report_console()
    device = torch.device("cuda" if cuda else "cpu")
    compute = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else (torch.float16 if cuda else torch.float32)
    config = Qwen2Config(**(QWEN25_7B if args.dims == "7b" else TINY))
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    t0 = time.perf_counter()
    model = build_random_4bit(config, device, compute)
    if cuda:
        torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    memory_4bit = torch.cuda.memory_allocated() / 2**30 if cuda else None
    checkpointing = not args.no_checkpointing
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    if not cuda:
        from deals.pricer.modeling import keep_4bit_trainable

        keep_4bit_trainable(model)
    lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.1, bias="none", task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])  # fmt: skip
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    params = [p for p in model.parameters() if p.requires_grad]
    if cuda:
        import bitsandbytes as bnb

        optimizer = bnb.optim.PagedAdamW32bit(params, lr=1e-4, weight_decay=0.001)
        optimizer_name = "paged_adamw_32bit"
    else:
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        optimizer_name = "adamw_torch"

    collate = PriceCollator(pad_token_id=0)
    generator = torch.Generator().manual_seed(1)

    def batch():
        features = []
        for _ in range(args.batch_size):
            n = args.seq_len - int(torch.randint(0, args.seq_len // 4, (1,), generator=generator))  # ragged, left-padded
            ids = torch.randint(1, config.vocab_size, (n,), generator=generator).tolist()
            labels = [-100] * (n - args.answer_tokens) + ids[n - args.answer_tokens :]
            features.append({"input_ids": ids, "labels": labels})
        out = collate(features)
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in out.items()}

    model.train()
    losses, step_seconds, tokens = [], [], 0
    for step in range(args.steps):
        inputs = batch()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        if step == 1:  # lora_B starts at zero, so lora_A only gets gradients from the second step on
            with_grads = sum(1 for p in params if p.grad is not None and p.grad.abs().sum() > 0)
        torch.nn.utils.clip_grad_norm_(params, 0.3)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        losses.append(loss.detach().item())
        if step >= args.warmup:
            step_seconds.append(elapsed)
            tokens += int(inputs["attention_mask"].sum())
        console.print(f"step {step + 1}/{args.steps}  loss {losses[-1]:.4f}  {elapsed:.2f} s", highlight=False)

    timed = sum(step_seconds)
    result = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "dims": args.dims,
        "config": {k: getattr(config, k) for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size")},
        "quantization": "nf4 + double quant, compute " + str(compute).removeprefix("torch."),
        "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.1, "targets": "q,k,v,o"},
        "optimizer": optimizer_name,
        "gradient_checkpointing": checkpointing,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "trainable_params": trainable,
        "total_params": total,
        "build_seconds": build_s,
        "steps": args.steps,
        "timed_steps": len(step_seconds),
        "seconds_per_step": timed / len(step_seconds) if step_seconds else None,
        "tokens_per_s": tokens / timed if timed else None,
        "losses": losses,
        "lora_params_with_grad_at_step_2": f"{with_grads}/{len(params)}",
        "memory_after_build_gib": memory_4bit,
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "torch": torch.__version__,
        "bitsandbytes": __import__("bitsandbytes").__version__,
    }
    ok = all(math.isfinite(x) for x in losses) and with_grads == len(params)
    del model, optimizer, params
    if cuda:
        torch.cuda.empty_cache()
    if args.with_trainer and cuda:
        import tempfile

        result["trainer_smoke"] = trainer_smoke(Path(tempfile.mkdtemp(prefix="deals-gpu-smoke-")) / "out")
        console.print_json(data=result["trainer_smoke"])
        ok = ok and result["trainer_smoke"]["completed"]

    table = Table(title=f"QLoRA check: Qwen2.5-7B-shaped ({args.dims}), random weights, {result['device']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key in ("quantization", "lora", "optimizer", "batch_size", "seq_len", "trainable_params", "build_seconds",
                "seconds_per_step", "tokens_per_s", "memory_after_build_gib", "peak_allocated_gib", "peak_reserved_gib",
                "lora_params_with_grad_at_step_2"):  # fmt: skip
        value = result[key]
        table.add_row(key, f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value))
    table.add_row("losses", ", ".join(f"{x:.3f}" for x in losses))
    table.add_row("status", "[green]ok[/]" if ok else "[red]FAILED: non-finite loss or LoRA without gradients[/]")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

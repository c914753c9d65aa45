"""The systems compared, each behind one call: embed(texts) -> (n, hidden) float32 mean-pooled vectors.

Every system tokenizes inside the timed call with the same Rust tokenizer (tokenizer.json), truncates at the model
directory's max_length, and mean-pools over real tokens, so the figures compare whole text-to-vector pipelines.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tokenizers import Tokenizer

from onnxbert.runtime import Encoder, Manifest

BATCH_SIZE = 32  # sentence-transformers' default


class System(Protocol):
    name: str
    precision: str

    def embed(self, texts: list[str]) -> np.ndarray: ...


def _tokenizer(directory: Path) -> Tokenizer:
    manifest = Manifest.load(directory)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(manifest.tokenizer.max_length)
    tokenizer.enable_padding(pad_id=manifest.tokenizer.pad_id, pad_token=manifest.tokenizer.pad_token)
    return tokenizer


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask.astype(np.float32)
    return np.einsum("bth,bt->bh", hidden, weights) / np.maximum(weights.sum(1, keepdims=True), 1.0)


@dataclass
class TorchEager:
    """transformers BertModel, eager PyTorch on CPU; `sort` batches by text length as sentence-transformers does."""

    checkpoint: Path
    directory: Path
    threads: int
    sort: bool

    def __post_init__(self) -> None:
        import torch
        from transformers import BertModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.set_num_threads(self.threads)
        self.torch = torch
        self.model = BertModel.from_pretrained(str(self.checkpoint)).eval()
        self.tokenizer = _tokenizer(self.directory)
        self.name = "pytorch-sorted" if self.sort else "pytorch"
        self.precision = "fp32"

    def embed(self, texts: list[str]) -> np.ndarray:
        # sentence-transformers sorts by character length, longest first, and restores the order afterwards
        order = np.argsort([-len(t) for t in texts], kind="stable") if self.sort else np.arange(len(texts))
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(texts), BATCH_SIZE):
            index = order[start : start + BATCH_SIZE]
            encodings = self.tokenizer.encode_batch([texts[i] for i in index])
            ids = self.torch.tensor([e.ids for e in encodings])
            mask = self.torch.tensor([e.attention_mask for e in encodings])
            with self.torch.inference_mode():
                hidden = self.model(input_ids=ids, attention_mask=mask, token_type_ids=self.torch.zeros_like(ids))
            out[index] = _mean_pool(hidden.last_hidden_state.numpy(), mask.numpy())
        return out


@dataclass
class OnnxBert:
    """onnxbert's public API: Encoder.embed, its own length-sorted token-budget batching."""

    directory: Path
    variant: str
    threads: int

    def __post_init__(self) -> None:
        self.encoder = Encoder(self.directory, variant=self.variant, provider="cpu", threads=self.threads)
        self.name = f"onnxbert-{self.variant}"
        self.precision = self.variant

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.encoder.embed(texts, pooling="mean")


@dataclass
class FastEmbedSystem:
    """FastEmbed loading the same fp32 ONNX file from the model directory (when fastembed is installed)."""

    directory: Path
    threads: int

    def __post_init__(self) -> None:
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        manifest = Manifest.load(self.directory)
        name = f"onnxbert-bench/{self.directory.parent.name}"
        if name not in {m["model"] for m in TextEmbedding.list_supported_models()}:
            TextEmbedding.add_custom_model(
                model=name,
                pooling=PoolingType.MEAN,
                normalization=False,
                sources=ModelSource(hf="onnxbert/local"),
                dim=manifest.architecture.hidden_size,
                model_file="model.onnx",
            )
        self.model: Any = TextEmbedding(
            model_name=name,
            specific_model_path=str(self.directory),
            threads=self.threads,
            providers=["CPUExecutionProvider"],
        )
        self.name = "fastembed"
        self.precision = "fp32"

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(list(self.model.embed(texts, batch_size=BATCH_SIZE)), dtype=np.float32)


@dataclass
class OptimumSystem:
    """optimum's ORTModelForFeatureExtraction on the same fp32 model.onnx (when optimum-onnx is installed).

    Tokenized by the same Rust tokenizer as every other system; sentence-transformers' batching (input order,
    batches of 32), mean pooling over its last_hidden_state.
    """

    directory: Path
    threads: int

    def __post_init__(self) -> None:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForFeatureExtraction

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        self.model: Any = ORTModelForFeatureExtraction.from_pretrained(
            str(self.directory), file_name="model.onnx", session_options=options, local_files_only=True
        )
        self.tokenizer = _tokenizer(self.directory)
        self.name = "optimum"
        self.precision = "fp32"

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), BATCH_SIZE):
            encodings = self.tokenizer.encode_batch(texts[start : start + BATCH_SIZE])
            ids = torch.tensor([e.ids for e in encodings])
            mask = torch.tensor([e.attention_mask for e in encodings])
            hidden = self.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
            out.append(_mean_pool(hidden.last_hidden_state.numpy(), mask.numpy()))
        return np.concatenate(out).astype(np.float32)


def peers_available() -> dict[str, str | None]:
    """Peer name -> None when usable, else why it is skipped."""
    return {
        "fastembed": None if importlib.util.find_spec("fastembed") else "not installed (pip install fastembed)",
        "optimum": None
        if importlib.util.find_spec("optimum") and importlib.util.find_spec("optimum.onnxruntime")
        else "not installed (pip install optimum-onnx; it pins transformers<4.58, so in its own environment)",
    }


def build_systems(checkpoint: Path, directory: Path, threads: int, peers: bool) -> list[System]:
    systems: list[System] = [
        TorchEager(checkpoint, directory, threads, sort=False),
        TorchEager(checkpoint, directory, threads, sort=True),
        OnnxBert(directory, "fp32", threads),
        OnnxBert(directory, "int8", threads),
    ]
    available = peers_available() if peers else {}
    if available.get("fastembed", "") is None:
        systems.append(FastEmbedSystem(directory, threads))
    if available.get("optimum", "") is None:
        systems.append(OptimumSystem(directory, threads))
    return systems

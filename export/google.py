"""Google's original TensorFlow BERT release -> a Hugging Face checkpoint directory the rest of export reads.

The layout (`chinese_L-12_H-768_A-12/`: `bert_config.json`, `vocab.txt`, `bert_model.ckpt.index`,
`bert_model.ckpt.data-*`) is read with TensorFlow's own checkpoint reader (the `tf` extra, export only). Every weight
BertModel needs must come from the checkpoint with its shape: kernels are transposed into torch's (out, in) layout;
optimizer slots (`adam_m`, `adam_v`), `global_step` and the pre-training heads (`cls/...`) are left out. Google's
config says `"hidden_act": "gelu"`, read as transformers reads it (erf GELU), so the export matches transformers'
BertModel on the same weights, as bert-base-chinese on the hub was converted.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from onnxbert.runtime.manifest import sha256_file

from .errors import ExportError
from .jsonfile import read_json

__all__ = ["GOOGLE_FORMAT", "GoogleCheckpoint", "convert_google_checkpoint", "find_google_checkpoint"]

GOOGLE_FORMAT = "google-tf-checkpoint"
_CONFIG, _VOCAB = "bert_config.json", "vocab.txt"
_TF_EXTRA = "pip install 'onnxbert[tf]' (tensorflow-cpu, used only to read the checkpoint at export)"
# Never part of the encoder: optimizer state, the step counter, pre-training and fine-tuning heads.
_IGNORED = re.compile(r"(.*/adam_[mv]$|.*/Momentum$|^global_step$|^cls/|^output_(weights|bias)$|^(?!bert/))")
# google-research/bert's tokenization.py lists its releases by case; later ones (wwm_, small BERTs) follow the names.
_CASED_NAME = re.compile(r"(^|[_-])(multi_)?cased_L-\d+")
_LOWER_NAME = re.compile(r"(^|[_-])uncased_L-\d+|^chinese_L-\d+|^multilingual_L-\d+")


@dataclass(frozen=True)
class GoogleCheckpoint:
    """Where the release's files are: its folder, and the checkpoint prefix (`.../bert_model.ckpt`)."""

    folder: Path
    prefix: Path

    def files(self) -> list[Path]:
        """The release files export reads: config, vocabulary, checkpoint index and data shards."""
        shards = sorted(self.folder.glob(self.prefix.name + ".data-*"))
        index = self.prefix.with_name(self.prefix.name + ".index")
        return [self.folder / _CONFIG, self.folder / _VOCAB, index, *shards]


def find_google_checkpoint(path: Path) -> GoogleCheckpoint | None:
    """The release at `path` (its folder, the `bert_model.ckpt` prefix or its `.index` file), or None."""
    if path.name.endswith(".index"):
        path = path.with_name(path.name.removesuffix(".index"))
    if path.is_dir():
        if not (path / _CONFIG).is_file():
            return None
        indexes = sorted(path.glob("*.ckpt.index")) or sorted(path.glob("*.index"))
        if not indexes:
            raise ExportError(f"{path} has {_CONFIG} but no checkpoint (*.ckpt.index): an incomplete Google release")
        if len(indexes) > 1:
            names = ", ".join(p.name.removesuffix(".index") for p in indexes)
            raise ExportError(f"{path} holds several checkpoints ({names}); pass the prefix of the one to export")
        return GoogleCheckpoint(path, indexes[0].with_name(indexes[0].name.removesuffix(".index")))
    if path.with_name(path.name + ".index").is_file() and (path.parent / _CONFIG).is_file():
        return GoogleCheckpoint(path.parent, path)
    return None


def _expected(config: dict[str, Any]) -> Iterator[tuple[str, str, tuple[int, ...], bool]]:
    """(transformers name, Google name, shape in torch layout, transposed) of every BertModel weight."""
    hidden, inner = int(config["hidden_size"]), int(config["intermediate_size"])
    tables = {
        "word_embeddings": int(config["vocab_size"]),
        "position_embeddings": int(config["max_position_embeddings"]),
        "token_type_embeddings": int(config.get("type_vocab_size", 2)),
    }
    for name, rows in tables.items():
        yield f"embeddings.{name}.weight", f"bert/embeddings/{name}", (rows, hidden), False

    def dense(hf: str, tf: str, out: int, into: int) -> Iterator[tuple[str, str, tuple[int, ...], bool]]:
        yield f"{hf}.weight", f"{tf}/kernel", (out, into), True
        yield f"{hf}.bias", f"{tf}/bias", (out,), False

    def norm(hf: str, tf: str) -> Iterator[tuple[str, str, tuple[int, ...], bool]]:
        yield f"{hf}.weight", f"{tf}/gamma", (hidden,), False
        yield f"{hf}.bias", f"{tf}/beta", (hidden,), False

    yield from norm("embeddings.LayerNorm", "bert/embeddings/LayerNorm")
    for i in range(int(config["num_hidden_layers"])):
        hf, tf = f"encoder.layer.{i}", f"bert/encoder/layer_{i}"
        for part in ("query", "key", "value"):
            yield from dense(f"{hf}.attention.self.{part}", f"{tf}/attention/self/{part}", hidden, hidden)
        yield from dense(f"{hf}.attention.output.dense", f"{tf}/attention/output/dense", hidden, hidden)
        yield from norm(f"{hf}.attention.output.LayerNorm", f"{tf}/attention/output/LayerNorm")
        yield from dense(f"{hf}.intermediate.dense", f"{tf}/intermediate/dense", inner, hidden)
        yield from dense(f"{hf}.output.dense", f"{tf}/output/dense", hidden, inner)
        yield from norm(f"{hf}.output.LayerNorm", f"{tf}/output/LayerNorm")


_POOLER = (
    ("pooler.dense.weight", "bert/pooler/dense/kernel", True),
    ("pooler.dense.bias", "bert/pooler/dense/bias", False),
)


def _reader(prefix: Path) -> Any:
    # TensorFlow's start-up lines say nothing to a user here; it only reads tensors, so oneDNN's kernels are moot.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ExportError(f"{prefix} is a Google TensorFlow checkpoint; reading it needs {_TF_EXTRA}") from error
    try:
        return tf.train.load_checkpoint(str(prefix))
    except Exception as error:  # TensorFlow raises its own error types for unreadable or truncated files
        raise ExportError(f"TensorFlow could not read the checkpoint {prefix}: {error}") from error


def _weights(checkpoint: GoogleCheckpoint, config: dict[str, Any]) -> dict[str, npt.NDArray[np.float32]]:
    """BertModel's state dict from the checkpoint: every weight present with its shape, else an error naming it."""
    reader = _reader(checkpoint.prefix)
    shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    expected = list(_expected(config))
    pooler = [(hf, tf, (int(config["hidden_size"]),) * (2 if t else 1), t) for hf, tf, t in _POOLER]
    if all(tf in shapes for _, tf, _, _ in pooler):
        expected += pooler  # Google's releases all carry the pooler; a checkpoint without it exports hidden states
    wanted = {tf for _, tf, _, _ in expected} | {tf for _, tf, _ in _POOLER}
    missing = [tf for _, tf, _, _ in expected if tf not in shapes]
    unknown = sorted(name for name in shapes if name not in wanted and not _IGNORED.match(name))
    if missing or unknown:
        raise ExportError(
            f"{checkpoint.prefix} does not hold BERT's variables for {_CONFIG}: "
            + (f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"unexpected {unknown[:5]}{' ...' if len(unknown) > 5 else ''}" if unknown else "")
        )
    weights: dict[str, npt.NDArray[np.float32]] = {}
    for hf, tf, shape, transposed in expected:
        stored = tuple(reversed(shape)) if transposed else shape
        if shapes[tf] != stored:
            raise ExportError(
                f"{checkpoint.prefix}: {tf} has shape {list(shapes[tf])}, {_CONFIG} implies {list(stored)}"
            )
        value = np.asarray(reader.get_tensor(tf), dtype=np.float32)
        weights[hf] = np.ascontiguousarray(value.T if transposed else value)
    return weights


def google_lowercase(folder: Path, vocab: list[str]) -> tuple[bool, str]:
    """Whether Google's tokenizer lower-cased (and stripped accents) for this release, and what said so.

    The release's folder name first (as google-research/bert's tokenization.py checks it), else the vocabulary: a
    cased one holds capitalised word pieces.
    """
    name = folder.name
    if _CASED_NAME.search(name) and "uncased" not in name:
        return False, f"folder name {name!r} (a cased release)"
    if _LOWER_NAME.search(name):
        return True, f"folder name {name!r} (an uncased or Chinese release)"
    words = [w.removeprefix("##") for w in vocab if w and not (w.startswith("[") and w.endswith("]"))]
    capitals = sum(1 for w in words if any(c.isupper() for c in w))
    cased = capitals > 0.01 * max(1, sum(1 for w in words if any(c.isalpha() for c in w)))
    return (not cased), f"vocabulary: {capitals} word pieces with capitals"


def convert_google_checkpoint(checkpoint: GoogleCheckpoint, target: Path, lowercase: bool | None) -> dict[str, Any]:
    """Write config.json, model.safetensors, vocab.txt and tokenizer_config.json into `target`.

    Returns what the manifest records of the source: its format, the release files' hashes, the lower-casing used.
    """
    from safetensors.numpy import save_file

    config = read_json(checkpoint.folder / _CONFIG)
    vocab_path = checkpoint.folder / _VOCAB
    if not vocab_path.is_file():
        raise ExportError(f"{checkpoint.folder} has no {_VOCAB}: Google's release ships one beside {_CONFIG}")
    vocab = vocab_path.read_text(encoding="utf-8").splitlines()
    required = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    absent = [key for key in required if key not in config]
    if absent:
        raise ExportError(f"{checkpoint.folder / _CONFIG} lacks {absent}")
    if len(vocab) != int(config["vocab_size"]):
        raise ExportError(f"{_VOCAB} has {len(vocab)} lines but {_CONFIG} says vocab_size {config['vocab_size']}")
    weights = _weights(checkpoint, config)
    if lowercase is None:
        lowercase, decided_by = google_lowercase(checkpoint.folder, vocab)
    else:
        decided_by = "the --lowercase / --no-lowercase option"
    target.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(target / "model.safetensors"))
    hf_config = {
        **config,
        "architectures": ["BertModel"],
        "model_type": "bert",
        "layer_norm_eps": float(config.get("layer_norm_eps", 1e-12)),  # Google's layer_norm: epsilon 1e-12
        "pad_token_id": 0,
    }
    (target / "config.json").write_text(json.dumps(hf_config, indent=2), encoding="utf-8")
    (target / _VOCAB).write_bytes(vocab_path.read_bytes())
    # Google's BasicTokenizer: lower-casing strips accents too; Chinese characters are always split.
    tokenizer = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase, "tokenize_chinese_chars": True}
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2), encoding="utf-8")
    return {
        "format": GOOGLE_FORMAT,
        "files": {path.name: sha256_file(path) for path in checkpoint.files()},
        "lowercase": {"value": lowercase, "from": decided_by},
    }

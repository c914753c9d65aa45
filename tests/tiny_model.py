"""The tiny random BERT the tests use: its checkpoint is built here; its exported directory is committed.

tests/data/tiny-model is what `onnxbert export` writes for this checkpoint (fp32, int8 with no quality budget, fp16),
so the runtime and server tests run in an install with no torch. After a change to what export writes, regenerate it:

    python tests/tiny_model.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

TINY_MODEL = Path(__file__).parent / "data" / "tiny-model"
TINY_VARIANTS = "fp32,int8,fp16"

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


def export_tiny(checkpoint: Path, out: Path) -> Path:
    """The tiny checkpoint exported as the committed fixture is (random weights: int8 quality means nothing)."""
    from onnxbert.export import export_model

    # The recipe is pinned so that the committed graph does not depend on which recipe timed fastest on one day.
    export_model(
        checkpoint,
        out,
        variants=TINY_VARIANTS,
        int8_quality="any",
        int8_recipe="static+rows",
        progress=False,
        force=True,
    )
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = build_tiny_checkpoint(Path(scratch) / "tiny-checkpoint")
        fresh = export_tiny(checkpoint, Path(scratch) / "tiny-model")
        manifest = json.loads((fresh / "onnxbert.json").read_text(encoding="utf-8"))
        manifest["source"]["model"] = "tests/tiny_model.py (random weights, seed 0)"  # not a temporary path
        (fresh / "onnxbert.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
        if TINY_MODEL.exists():
            shutil.rmtree(TINY_MODEL)
        shutil.copytree(fresh, TINY_MODEL)
    print(f"wrote {TINY_MODEL}")

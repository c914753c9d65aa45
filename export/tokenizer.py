"""The exported tokenizer.json: the checkpoint's own (or one built from vocab.txt) with padding and truncation reset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from tokenizers.implementations.bert_wordpiece import BertWordPieceTokenizer

from .errors import ExportError
from .family import family_of
from .jsonfile import load_json, read_json
from .source import Checkpoint

__all__ = [
    "default_pooling",
    "load_tokenizer",
    "lowercases",
    "resolve_max_length",
    "unknown_share",
    "write_tokenizer_config",
]

_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
}


def load_tokenizer(checkpoint: Checkpoint) -> Tokenizer:
    """A fast tokenizer with no baked-in padding or truncation (MiniLM's ships fixed 128-token padding)."""
    path = checkpoint.path
    if (path / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    else:
        options = read_json(path / "tokenizer_config.json")
        strip = options.get("strip_accents")
        tokenizer = BertWordPieceTokenizer(
            str(path / "vocab.txt"),
            lowercase=bool(options.get("do_lower_case", True)),
            handle_chinese_chars=bool(options.get("tokenize_chinese_chars", True)),
            strip_accents=None if strip is None else bool(strip),
        )._tokenizer
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


# BERT's WordPiece names, then RoBERTa / XLM-R's: the first of each role the vocabulary holds is written.
_SPECIAL = {
    "unk_token": ("[UNK]", "<unk>"),
    "sep_token": ("[SEP]", "</s>"),
    "pad_token": ("[PAD]", "<pad>"),
    "cls_token": ("[CLS]", "<s>"),
    "mask_token": ("[MASK]", "<mask>"),
}


def write_tokenizer_config(checkpoint: Checkpoint, directory: Path, tokenizer: Tokenizer, max_length: int) -> None:
    """Write tokenizer_config.json and special_tokens_map.json beside tokenizer.json.

    transformers, TEI and FastEmbed then load the directory too; model_max_length is the exported max_length.
    """
    config = read_json(checkpoint.path / "tokenizer_config.json")
    special = {}
    for role, names in _SPECIAL.items():
        present = [name for name in names if tokenizer.token_to_id(name) is not None]
        if present:
            special[role] = present[0]
    config = {k: v for k, v in config.items() if k not in ("name_or_path", "added_tokens_decoder")}
    config.update(special)
    config.update(
        model_max_length=max_length,
        do_lower_case=lowercases(tokenizer),
        truncation_side="right",
        padding_side="right",
        tokenizer_class=config.get("tokenizer_class", family_of(checkpoint.config["model_type"]).tokenizer_class),
    )
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")


def lowercases(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer's normalizer lower-cases, read from its serialized form."""
    text = tokenizer.to_str()
    return '"lowercase":true' in text.replace(" ", "") or '"type":"Lowercase"' in text.replace(" ", "")


def resolve_max_length(checkpoint: Checkpoint, requested: int | None, positions: int) -> int:
    """Tokens per text: as asked, else sentence-transformers' max_seq_length, else what the position table holds.

    `positions`: the table's rows a text can use (RoBERTa's first pad_token_id + 1 rows are never a text's).
    """
    if requested is not None:
        if not 2 <= requested <= positions:
            raise ExportError(f"--max-length {requested} must be in [2, {positions}] (the model's position table)")
        return requested
    sentence = read_json(checkpoint.path / "sentence_bert_config.json").get("max_seq_length")
    tokenizer_limit = read_json(checkpoint.path / "tokenizer_config.json").get("model_max_length")
    for candidate in (sentence, tokenizer_limit):
        if isinstance(candidate, int) and 2 <= candidate <= positions:
            return candidate
    return positions


def default_pooling(checkpoint: Checkpoint, has_pooler: bool) -> tuple[str, str]:
    """The pooling sentence-transformers uses for this checkpoint, and where that was read from."""
    modules: Any = []
    listed = checkpoint.path / "modules.json"
    if listed.is_file():
        modules = load_json(listed)
        if not (isinstance(modules, list) and all(isinstance(m, dict) for m in modules)):
            raise ExportError(f"{listed} is not a list of modules (JSON objects), as sentence-transformers writes it")
    folders = [m.get("path") for m in modules if str(m.get("type", "")).endswith("Pooling")] or ["1_Pooling"]
    config_path = checkpoint.path / str(folders[0]) / "config.json"
    flags = read_json(config_path)
    chosen = [name for key, name in _POOLING_FLAGS.items() if flags.get(key)]
    if len(chosen) == 1:
        return chosen[0], f"{config_path.parent.name}/config.json"
    return (
        ("pooler", "BERT pooler (no sentence-transformers pooling config)")
        if has_pooler
        else (
            "cls",
            "[CLS] (no pooler weights, no sentence-transformers pooling config)",
        )
    )


def unknown_share(tokenizer_file: Path, texts: list[str]) -> float:
    """The share of the texts' tokens that the vocabulary maps to its unknown token ([UNK]).

    A held-out text the vocabulary cannot spell (Chinese through an English WordPiece vocabulary: 64% [UNK] for
    all-MiniLM-L6-v2) has vectors built mostly from one token, whose neighbours sit close together; its int8 figures
    describe that, not the model on text it was made for. 0.0 for a tokenizer without an unknown token (byte-level BPE).
    """
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    token = getattr(tokenizer.model, "unk_token", None)
    unknown = tokenizer.token_to_id(token) if token else None
    if unknown is None:
        return 0.0
    tokenizer.no_padding()
    tokenizer.no_truncation()
    ids = [i for encoding in tokenizer.encode_batch(texts, add_special_tokens=False) for i in encoding.ids]
    return sum(1 for i in ids if i == unknown) / max(1, len(ids))

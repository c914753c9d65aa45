"""Small random checkpoints of every supported source kind beyond the tiny BERT (tests/tiny_model.py).

- `build_family_checkpoint`: RoBERTa, XLM-R, DistilBERT and ELECTRA saved by transformers, each with the tokenizer
  kind its family ships, trained here (byte-level BPE, a SentencePiece-style unigram, WordPiece), and each a different
  pooler / pooling-config situation.
- `write_release`: Google's original TensorFlow release, built as Google's was: a TF1 checkpoint
  (`bert_model.ckpt.*`) with Google's variable names and [in, out] kernels, plus the pre-training heads, optimizer
  slots and global_step that export must leave out; `bert_config.json`; a Chinese vocabulary of 21,128 lines like
  bert-base-chinese's.

`python tests/families.py OUT` exports each into OUT/<name> (CI embeds them again in a torch-free install).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tiny_model import TINY_VOCAB, tiny_vocab_file

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter, when write_release imports it
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

FAMILY_TYPES = ("roberta", "xlm-roberta", "distilbert", "electra")
RELEASE = "chinese_L-2_H-32_A-2"
VOCAB_LINES = 21128  # bert-base-chinese's vocabulary size
_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa / XLM-R ids 0..4; pad_token_id 1
_SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}

# Per family: (sentence-transformers pooling written, or None; whether the checkpoint keeps its pooler weights)
POOLING = {
    "roberta": ("mean", False),
    "xlm-roberta": ("cls", True),
    "distilbert": ("mean", False),
    "electra": (None, False),
}


def _corpus() -> list[str]:
    from onnxbert.export.sentences import VERIFICATION_SENTENCES

    return list(VERIFICATION_SENTENCES) * 2


def _roberta_tokenizer(directory: Path, kind: str) -> int:
    from tokenizers import normalizers, pre_tokenizers, processors
    from tokenizers.implementations import ByteLevelBPETokenizer, SentencePieceUnigramTokenizer

    tokenizer: Any
    if kind == "roberta":
        tokenizer = ByteLevelBPETokenizer()
        tokenizer.train_from_iterator(_corpus(), vocab_size=400, special_tokens=_SPECIAL, show_progress=False)
        tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    else:
        tokenizer = SentencePieceUnigramTokenizer()
        # XLM-R's layout, which transformers' XLMRobertaTokenizer rebuilds around the vocabulary: no normalizer
        # (real checkpoints carry a precompiled one), whitespace split, then Metaspace.
        tokenizer.normalizer = normalizers.Sequence([])
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
        )
        tokenizer.train_from_iterator(
            _corpus(), vocab_size=1500, special_tokens=_SPECIAL, unk_token="<unk>", show_progress=False
        )
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
    tokenizer.save(str(directory / "tokenizer.json"))
    names = dict(zip(("bos", "pad", "eos", "unk", "mask"), _SPECIAL, strict=True))
    config = {f"{role}_token": name for role, name in names.items()} | {"cls_token": "<s>", "sep_token": "</s>"}
    config["tokenizer_class"] = "RobertaTokenizer" if kind == "roberta" else "XLMRobertaTokenizer"
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return int(tokenizer.get_vocab_size())


def _wordpiece_tokenizer(directory: Path) -> int:
    from tokenizers.implementations import BertWordPieceTokenizer

    vocab = tiny_vocab_file(directory)
    BertWordPieceTokenizer(str(vocab), lowercase=True).save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    return len(TINY_VOCAB)


def build_family_checkpoint(model_type: str, directory: Path, *, seed: int = 0) -> Path:
    """A 2-layer random `model_type` encoder as transformers saves it, with its tokenizer and pooling config."""
    import torch
    from transformers import (
        DistilBertConfig,
        DistilBertModel,
        ElectraConfig,
        ElectraForPreTraining,
        RobertaConfig,
        RobertaModel,
        XLMRobertaConfig,
        XLMRobertaModel,
    )

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    pooling, keep_pooler = POOLING[model_type]
    model: Any
    if model_type in ("roberta", "xlm-roberta"):
        vocab = _roberta_tokenizer(directory, model_type)
        config_class, model_class = (
            (RobertaConfig, RobertaModel) if model_type == "roberta" else (XLMRobertaConfig, XLMRobertaModel)
        )
        config = config_class(
            vocab_size=vocab, max_position_embeddings=130, pad_token_id=1, type_vocab_size=1, **_SHAPE
        )
        model = model_class(config, add_pooling_layer=keep_pooler)
    elif model_type == "distilbert":
        vocab = _wordpiece_tokenizer(directory)
        config = DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
        model = DistilBertModel(config)
    else:
        vocab = _wordpiece_tokenizer(directory)
        # A discriminator as released: ElectraForPreTraining (weights under `electra.`), embeddings narrower than
        # the hidden size (the embedding projection).
        config = ElectraConfig(vocab_size=vocab, embedding_size=16, **_SHAPE)
        model = ElectraForPreTraining(config)
    model.eval().save_pretrained(directory)
    if pooling is not None:
        (directory / "1_Pooling").mkdir()
        modes = (("cls_token", "cls"), ("mean_tokens", "mean"))
        flags = {f"pooling_mode_{key}": pooling == name for key, name in modes}
        (directory / "1_Pooling" / "config.json").write_text(json.dumps(flags), encoding="utf-8")
    return directory


def chinese_vocab() -> list[str]:
    """21,128 lines laid out as bert-base-chinese's: specials, ASCII, full-width punctuation, word pieces, CJK."""
    special = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<S>", "<T>"]
    ascii_ = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    punctuation = list("，。！？；：“”‘’（）【】《》、…—·")
    pieces = ["the", "hello", "world", "bert", "google", "and", "emoji", "cafe", "naive", "##s", "##ing", "##ed", "##e"]
    head = special + ascii_ + punctuation + pieces + [f"##{d}" for d in "0123456789"]
    cjk = [chr(c) for c in range(0x4E00, 0x9FA6)]
    vocab = (head + cjk + [f"##{c}" for c in cjk])[:VOCAB_LINES]
    assert len(vocab) == VOCAB_LINES
    return vocab


def _google_names(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """transformers' BertModel weights under Google's names and layout (kernels [in, out]), written out by hand."""
    out: dict[str, np.ndarray] = {}
    for key, tensor in state.items():
        value = tensor.detach().numpy()
        parts = key.split(".")
        if parts[0] == "encoder":  # encoder.layer.3.attention... -> encoder/layer_3/attention...
            parts = ["encoder", f"layer_{parts[2]}", *parts[3:]]
        *path, leaf = parts
        if path[-1] == "LayerNorm":
            name = "/".join(path) + ("/gamma" if leaf == "weight" else "/beta")
        elif path[0] == "embeddings" and leaf == "weight":
            name = "/".join(path)
        elif leaf == "weight":
            name, value = "/".join(path) + "/kernel", value.T
        else:
            name = "/".join(path) + "/bias"
        out["bert/" + name] = np.ascontiguousarray(value)
    return out


def write_release(
    folder: Path, *, seed: int = 0, drop: str | None = None, reshape: str | None = None
) -> tuple[Path, Any]:
    """Google's release layout with random weights; returns the folder and transformers' model with those weights."""
    import tensorflow as tf
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True)
    vocab = chinese_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = {
        "attention_probs_dropout_prob": 0.1,
        "directionality": "bidi",
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "pooler_fc_size": 32,
        "type_vocab_size": 2,
        "vocab_size": len(vocab),
    }
    (folder / "bert_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**config)).eval()
    for parameter in model.parameters():  # LayerNorm's ones / zeros would hide a gamma / beta swap
        parameter.data.add_(torch.randn_like(parameter) * 0.05)
    variables = _google_names(model.state_dict())
    rng = np.random.default_rng(seed)
    heads = {
        "cls/predictions/output_bias": rng.standard_normal(len(vocab)).astype(np.float32),
        "cls/predictions/transform/dense/kernel": rng.standard_normal((32, 32)).astype(np.float32),
        "cls/seq_relationship/output_weights": rng.standard_normal((2, 32)).astype(np.float32),
        "bert/pooler/dense/kernel/adam_m": np.zeros((32, 32), np.float32),
        "bert/pooler/dense/kernel/adam_v": np.zeros((32, 32), np.float32),
    }
    if drop is not None:
        del variables[drop]
    if reshape is not None:
        variables[reshape] = variables[reshape].T.copy()
    with tf.compat.v1.Graph().as_default():
        for name, value in {**variables, **heads}.items():
            tf.compat.v1.get_variable(name, initializer=tf.constant(value))
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(folder / "bert_model.ckpt"), write_meta_graph=False)
    (folder / "checkpoint").unlink(missing_ok=True)  # Google's releases ship without TF's bookkeeping file
    return folder, model


if __name__ == "__main__":
    from transformers.utils import logging as hf_logging

    from onnxbert.export import export_model

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar, once per checkpoint

    out = Path(sys.argv[1])
    sources = {name: build_family_checkpoint(name, out / "checkpoints" / name) for name in FAMILY_TYPES}
    sources["google-chinese"] = write_release(out / "checkpoints" / RELEASE)[0]
    for name, checkpoint in sources.items():
        export_model(checkpoint, out / name, variants="fp32,int8", int8_quality="any", progress=False, force=True)
        print(f"exported {name} to {out / name}")

"""RoBERTa, XLM-RoBERTa, DistilBERT and ELECTRA: exported, fused, verified, packed, and equal to transformers."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from pathlib import Path

import numpy as np
import torch
from families import FAMILY_TYPES, POOLING, build_family_checkpoint
from transformers import AutoModel, AutoTokenizer

from onnxbert.export import export_model
from onnxbert.export.family import family_of
from onnxbert.export.optimize import expected_fusions
from onnxbert.runtime import Encoder
from onnxbert.runtime.manifest import Manifest

pytestmark = pytest.mark.export

TEXTS = [
    "The man is playing the guitar.",
    "今天天气真好啊",
    "A woman runs with her dog, and the cat sat on the mat!",
    "hello",
    "Mixed 中文 and English text, with full-width punctuation：“你好”。",
    "the weather is good today " * 6,
]


@pytest.fixture(scope="module", params=FAMILY_TYPES)
def family_export(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    model_type = request.param
    root = tmp_path_factory.mktemp(model_type)
    checkpoint = build_family_checkpoint(model_type, root / "checkpoint")
    export_model(checkpoint, root / "model", variants="fp32,int8", int8_quality="any", progress=False)
    return model_type, checkpoint, root / "model"


def _reference(
    checkpoint: Path, texts: list[str], with_pooler: bool
) -> tuple[list[np.ndarray], np.ndarray | None, list[list[int]]]:
    """transformers' hidden states (one text at a time, no padding), pooler output, and its token ids."""
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    model = AutoModel.from_pretrained(str(checkpoint)).eval()
    hidden, pooled, ids = [], [], []
    for text in texts:
        batch = tokenizer(text, return_tensors="pt", truncation=True, max_length=128)
        with torch.inference_mode():
            out = model(**batch)
        hidden.append(out.last_hidden_state[0].numpy())
        if with_pooler:
            pooled.append(out.pooler_output[0].numpy())
        ids.append(batch["input_ids"][0].tolist())
    return hidden, np.stack(pooled) if pooled else None, ids


def test_manifest_describes_the_family(family_export: tuple[str, Path, Path]) -> None:
    model_type, _, directory = family_export
    manifest = Manifest.load(directory)
    family = family_of(model_type)
    pooling, keeps_pooler = POOLING[model_type]
    assert manifest.architecture.model_type == model_type
    assert manifest.architecture.has_pooler is keeps_pooler
    assert [o.name for o in manifest.outputs] == ["last_hidden_state"] + (["pooler_output"] if keeps_pooler else [])
    assert manifest.default_pooling == (pooling or "cls")
    names = [spec.name for spec in manifest.inputs]
    assert names == (["input_ids", "attention_mask"] + ([] if model_type == "distilbert" else ["token_type_ids"]))
    assert manifest.architecture.position_offset == (2 if family.positions_after_padding else 0)
    assert manifest.default_variant == "fp32"
    for name in ("fp32", "int8"):
        variant = manifest.variants[name]
        assert variant.state == "passed", variant.verification
        assert variant.packed is not None, f"{name} has no packed twin"
    fused = manifest.variants["fp32"].fusions
    assert fused == expected_fusions(2, embedding_fused=family.embedding_fused)


def test_hidden_states_match_transformers(family_export: tuple[str, Path, Path]) -> None:
    model_type, checkpoint, directory = family_export
    hidden, pooled, ids = _reference(checkpoint, TEXTS, POOLING[model_type][1])
    for packing in (False, True):
        encoder = Encoder(directory, variant="fp32", packing=packing)
        assert [row.tolist() for row in encoder.tokenize(TEXTS).ids] == ids
        out = encoder.encode(TEXTS)
        worst = max(float(np.abs(a - b).max()) for a, b in zip(out.last_hidden_state, hidden, strict=True))
        assert worst <= 1e-4, (packing, worst)
        if pooled is None:
            assert out.pooler_output is None
        else:
            assert out.pooler_output is not None
            assert float(np.abs(out.pooler_output - pooled).max()) <= 1e-4
        means = encoder.embed(TEXTS, pooling="mean", normalize=False)
        assert float(np.abs(means - np.stack([h.mean(axis=0) for h in hidden])).max()) <= 1e-4


def test_int8_embeds_close_to_fp32(family_export: tuple[str, Path, Path]) -> None:
    _, _, directory = family_export
    fp32 = Encoder(directory, variant="fp32").embed(TEXTS)
    int8 = Encoder(directory, variant="int8").embed(TEXTS)
    assert float(np.sum(fp32 * int8, axis=1).min()) > 0.98

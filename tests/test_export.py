"""Export: files, manifest, graph interface, fusion / quantization counts, shapes, and the refusal paths."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export tests need the export extra")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from tiny_model import TINY_MODEL, build_tiny_checkpoint  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import BertModel  # noqa: E402

from onnxbert.cli import main as cli_main  # noqa: E402
from onnxbert.export import ExportError, VerificationError, export_model, parse_variants  # noqa: E402
from onnxbert.export import verify as verify_module  # noqa: E402
from onnxbert.export.optimize import expected_fusions, fusion_counts, operator_counts  # noqa: E402
from onnxbert.runtime import Encoder, Manifest, ModelDirectoryError  # noqa: E402
from onnxbert.runtime.manifest import sha256_file  # noqa: E402
from onnxbert.runtime.session import cpu_flags, cpu_model, int8_kernel  # noqa: E402

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def test_export_writes_every_file(tiny_export_dir: Path) -> None:
    names = {p.name for p in tiny_export_dir.iterdir()}
    assert names == {
        "onnxbert.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "config.json",
        "model.onnx",
        "model.int8.onnx",
        "model.fp16.onnx",
        "model.packed.onnx",  # padding-free twins of the CPU variants: kilobytes, weights read from the files above
        "model.int8.packed.onnx",
    }
    assert (tiny_export_dir / "model.packed.onnx").stat().st_size < (tiny_export_dir / "model.onnx").stat().st_size / 10
    assert not list(tiny_export_dir.parent.glob(".*staging*"))  # the staging directory is gone


def test_manifest_validates_and_matches_files(tiny_export_dir: Path) -> None:
    manifest = Manifest.load(tiny_export_dir)
    assert manifest.format_version == 3
    assert manifest.architecture.num_layers == 2 and manifest.architecture.hidden_size == 32
    assert manifest.architecture.has_pooler
    assert manifest.default_variant == "fp32"
    assert manifest.default_pooling == "pooler"  # no sentence-transformers config: BERT's pooler
    assert manifest.tokenizer.max_length == 512
    assert manifest.tokenizer.lowercase is True
    assert set(manifest.versions) >= {"torch", "transformers", "onnxruntime", "onnx", "onnxbert"}
    for variant in manifest.variants.values():
        path = tiny_export_dir / variant.file
        assert sha256_file(path) == variant.sha256
        assert path.stat().st_size == variant.bytes
    for name in ("fp32", "int8"):
        assert manifest.variants[name].state == "passed", manifest.variants[name].verification
    assert manifest.variants["int8"].provider == "cpu"
    assert manifest.variants["fp16"].provider == "cuda"
    fp16 = manifest.variants["fp16"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # fp16 runs only on CUDA: never "passed" here
        assert fp16.state == "unverified" and "CUDA" in fp16.reason
    checked = manifest.tokenizer.verification
    assert checked["texts"] == 64 and checked["mismatches"] == 0 and checked["state"] == "passed"
    assert checked["against"].startswith("BertTokenizer")  # transformers' own, for this checkpoint
    assert manifest.variants["fp32"].verification["max_abs_hidden"] <= 1e-4
    assert manifest.variants["fp32"].verification["max_abs_mean_packed"] <= 1e-4
    assert manifest.variants["int8"].verification["mean_cosine_packed"] >= 0.99
    for name in ("fp32", "int8"):
        twin = manifest.variants[name].packed
        assert twin is not None and sha256_file(tiny_export_dir / twin.file) == twin.sha256
    assert manifest.variants["fp16"].packed is None  # CUDA's Attention with a 3D mask is unverified
    assert manifest.tokenizer.sha256 == sha256_file(tiny_export_dir / "tokenizer.json")


def test_int8_records_its_three_texts(tiny_export_dir: Path) -> None:
    recipe = Manifest.load(tiny_export_dir).variants["int8"].recipe
    text = recipe["text"]  # an English vocabulary: the English default
    assert text["language"] == "en"
    assert text["calibration"]["text"] == "STS-B train" and text["calibration"]["sentences"] == 512
    assert text["selection"] == {
        "text": "STS-B dev",
        "sentences": 2910,
        "sha256": text["selection"]["sha256"],
        "pairs": 1500,
    }
    assert recipe["gate"]["texts"] == 2910
    # held out: Python's documentation gated (the model's language), Chinese reviews, Shakespeare and French reported
    assert {name: part["gated"] for name, part in text["held_out"].items()} == {
        "python-docs": True,
        "chinese-reviews": False,
        "shakespeare": False,
        "plone-french": False,
    }
    assert set(recipe["held_out"]) == {"python-docs", "chinese-reviews", "shakespeare", "plone-french"}
    for name, figures in recipe["held_out"].items():
        assert figures["texts"] == 1000 and figures["sha256"] == text["held_out"][name]["sha256"]
        assert 0.0 <= figures["top10_agreement"] <= 1.0 and -1.0 <= figures["min_cosine"] <= figures["mean_cosine"]
        assert isinstance(figures["failures"], list) and figures["gated"] is (name == "python-docs")
        assert 0.0 <= figures["unknown_tokens"] <= 1.0
    # the tiny vocabulary spells little English and less Chinese; info says so beside the figures
    held = recipe["held_out"]
    assert held["chinese-reviews"]["unknown_tokens"] > held["python-docs"]["unknown_tokens"] > 0.05
    # its speed is this CPU's, and the record says so
    assert recipe["measured_on"] == {"cpu": cpu_model(), "int8_kernel": int8_kernel(platform.machine(), cpu_flags())}
    info = subprocess.run(
        [sys.executable, "-m", "onnxbert", "info", str(tiny_export_dir)], capture_output=True, text=True, check=True
    )
    line = next(line for line in info.stdout.splitlines() if "held-out chinese-reviews" in line)
    assert f"{held['chinese-reviews']['unknown_tokens']:.0%} of its tokens are [UNK] in this vocabulary" in line
    line = next(line for line in info.stdout.splitlines() if "x fp32 at export" in line)
    assert line.strip().startswith("recipe static+rows, pinned: ")  # tiny_model.py pins it
    assert f"on {cpu_model()}, {recipe['measured_on']['int8_kernel']}; int8 on this CPU: " in line
    assert line.endswith(
        "on x86 CPUs without VNNI: exact u8 x u8 via session.x64quantprecision: u8 x s8 would saturate at 16 bits"
    )  # a plain recipe (static+rows)


def test_tokenizer_has_no_baked_padding_or_truncation(tiny_export_dir: Path) -> None:
    saved = json.loads((tiny_export_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["padding"] is None
    assert saved["truncation"] is None
    config = json.loads((tiny_export_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["model_max_length"] == 512 and config["do_lower_case"] is True and config["pad_token"] == "[PAD]"


def test_directory_loads_in_transformers_tokenizer(tiny_export_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_export_dir))
    assert tokenizer("hello world")["input_ids"] == [2, 14, 15, 3]
    assert tokenizer.model_max_length == 512


@pytest.mark.parametrize("variant", ["model.onnx", "model.int8.onnx", "model.fp16.onnx"])
def test_graph_interface(tiny_export_dir: Path, variant: str) -> None:
    graph = onnx.load(str(tiny_export_dir / variant)).graph
    assert [i.name for i in graph.input] == INPUTS
    for tensor in graph.input:
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in tensor.type.tensor_type.shape.dim] == ["batch", "sequence"]
    outputs = {o.name: o for o in graph.output}
    assert list(outputs) == ["last_hidden_state", "pooler_output"]
    for tensor in outputs.values():
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    hidden_dims = outputs["last_hidden_state"].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in hidden_dims] == ["batch", "sequence", 32]


@pytest.mark.parametrize("variant", ["model.onnx", "model.int8.onnx", "model.fp16.onnx"])
def test_fusion_counts_match_architecture(tiny_export_dir: Path, variant: str) -> None:
    cuda = variant == "model.fp16.onnx"  # CUDA keeps SkipLayerNormalization; the CPU graphs split it (faster there)
    assert fusion_counts(operator_counts(tiny_export_dir / variant)) == expected_fusions(2, skip_layernorm=cuda)
    assert expected_fusions(2) == {
        "EmbedLayerNormalization": 1,
        "Attention": 2,
        "SkipLayerNormalization": 0,
        "LayerNormalization": 4,
        "Gelu": 2,
    }


def test_int8_graph_is_quantized_and_fp16_has_half_weights(tiny_export_dir: Path) -> None:
    counts = operator_counts(tiny_export_dir / "model.int8.onnx")
    recipe = Manifest.load(tiny_export_dir).variants["int8"].recipe
    assert recipe["name"] == "static+rows"  # pinned by tests/tiny_model.py
    # per layer: the QKV projection inside attention, then attention output, FFN in and FFN out
    assert counts["QAttention"] == 2 and counts.get("Attention", 0) == 0
    assert counts["MatMulIntegerToFloat"] == 3 * 2 and counts.get("MatMul", 0) == 0
    assert counts["QuantizeLinear"] == 4 * 2 and counts["ReduceMax"] == 2 * 2  # static ranges, and per-row ones
    fp16 = onnx.load(str(tiny_export_dir / "model.fp16.onnx")).graph
    kinds = {t.data_type for t in fp16.initializer if t.dims and np.prod(t.dims) > 1}
    assert onnx.TensorProto.FLOAT not in kinds and onnx.TensorProto.FLOAT16 in kinds


@pytest.mark.parametrize(("batch", "length"), [(1, 1), (7, 1), (1, 2), (7, 37), (1, 512), (7, 512)])
def test_shapes_run_and_match_torch(tiny_export_dir: Path, tiny_checkpoint: Path, batch: int, length: int) -> None:
    rng = np.random.default_rng(batch * 1000 + length)
    ids = rng.integers(5, 45, size=(batch, length), dtype=np.int64)
    mask = np.ones_like(ids)
    if batch > 1 and length > 1:
        mask[1:, length // 2 :] = 0  # padded rows; their outputs are masked out below
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    model = BertModel.from_pretrained(str(tiny_checkpoint)).eval()
    with torch.inference_mode():
        ref = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    for variant, tolerance in (("model.onnx", 1e-4), ("model.int8.onnx", 0.1)):
        session = ort.InferenceSession(str(tiny_export_dir / variant), providers=["CPUExecutionProvider"])
        hidden, pooler = session.run(None, feeds)
        assert hidden.shape == (batch, length, 32) and pooler.shape == (batch, 32)
        delta = np.abs(hidden - ref.last_hidden_state.numpy()) * mask[:, :, None]
        assert delta.max() <= tolerance, variant
        assert np.abs(pooler - ref.pooler_output.numpy()).max() <= tolerance, variant


def test_refuses_to_overwrite_without_force(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="--force"):
        export_model(tiny_checkpoint, out, variants="fp32", progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    export_model(tiny_checkpoint, out, variants="fp32", force=True, progress=False)
    assert not (out / "keep.txt").exists()
    assert Manifest.load(out).variants.keys() == {"fp32"}


def test_vocab_txt_only_checkpoint_exports(tmp_path: Path) -> None:
    checkpoint = build_tiny_checkpoint(tmp_path / "ck", tokenizer_json=False, seed=1)
    assert not (checkpoint / "tokenizer.json").exists()
    out = tmp_path / "model"
    export_model(checkpoint, out, variants="fp32", progress=False)
    encoder = Encoder(out)
    assert encoder.tokenize("Hello World!").ids[0].tolist() == [2, 14, 15, 25, 3]  # [CLS] hello world ! [SEP]
    assert encoder.embed(["hello world", "今天天气真好啊"]).shape == (2, 32)


def test_broken_checkpoint_json_is_an_error_naming_the_file(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Not JSON, not UTF-8, or not the JSON shape the file has: the file is named, never a parser's bare message or a
    traceback (a list where an object belongs raised AttributeError)."""
    checkpoint = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, checkpoint)
    config = (checkpoint / "config.json").read_bytes()
    for name, content, message in [
        ("config.json", b'{"model_type": ', "config.json is not valid JSON"),
        ("config.json", b"\xff\xfe{}", "config.json is not valid JSON"),
        ("config.json", b"[1, 2]", "config.json holds a JSON list, not an object"),
        ("modules.json", b'{"path": "1_Pooling"}', "modules.json is not a list of modules"),
    ]:
        (checkpoint / "config.json").write_bytes(config)
        (checkpoint / name).write_bytes(content)
        with pytest.raises(ExportError, match=message):
            export_model(checkpoint, tmp_path / "out", variants="fp32", force=True, progress=False)


def test_broken_google_config_is_an_error_naming_the_file(tmp_path: Path) -> None:
    """Google's bert_config.json is read before TensorFlow is needed: broken, nested too deep or not an object, the
    file is named (one nested too deep ended in the CLI's bare 'maximum recursion depth exceeded')."""
    release = tmp_path / "chinese_L-2_H-32_A-2"
    release.mkdir()
    (release / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n", encoding="utf-8")
    (release / "bert_model.ckpt.index").write_bytes(b"")
    for content, message in [
        (b'{"hidden_size": ', "bert_config.json is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "bert_config.json is not valid JSON"),
        (b'"hidden_size"', "bert_config.json holds a JSON str, not an object"),
    ]:
        (release / "bert_config.json").write_bytes(content)
        with pytest.raises(ExportError, match=message):
            export_model(release, tmp_path / "out", variants="fp32", progress=False)
        assert not (tmp_path / "out").exists()


def test_checkpoint_without_pooler_exports_hidden_states_only(tmp_path: Path) -> None:
    checkpoint = build_tiny_checkpoint(tmp_path / "ck", pooler=False, seed=2)
    out = tmp_path / "model"
    export_model(checkpoint, out, variants="fp32", progress=False)
    manifest = Manifest.load(out)
    assert not manifest.architecture.has_pooler
    assert [o.name for o in manifest.outputs] == ["last_hidden_state"]
    assert manifest.default_pooling == "cls"
    encoder = Encoder(out)
    assert encoder.encode("hello").pooler_output is None
    with pytest.raises(ValueError, match="pooler"):
        encoder.embed("hello", pooling="pooler")


def test_unsupported_architecture_names_what_is_supported(tmp_path: Path) -> None:
    checkpoint = tmp_path / "gpt2"
    checkpoint.mkdir()
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2}
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=r"'gpt2'.*not supported.*bert.*roberta.*xlm-roberta.*distilbert.*electra"):
        export_model(checkpoint, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_failing_gate_writes_nothing(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(verify_module.GATES, "int8", {"mean_cosine": 1.5})  # a bar no int8 graph can clear
    out = tmp_path / "model"
    with pytest.raises(VerificationError) as failure:
        export_model(tiny_checkpoint, out, variants="fp32,int8", int8_quality="any", progress=False)
    assert failure.value.figures["int8"]["state"] == "failed"
    assert failure.value.figures["fp32"]["state"] == "passed"
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory left behind


def test_cli_failing_gate_exits_nonzero_with_figures(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(verify_module.GATES, "fp32", {"max_abs_hidden": 0.0})
    code = cli_main(["export", str(tiny_checkpoint), "--output", str(tmp_path / "m"), "--variants", "fp32"])
    assert code == 1
    err = capsys.readouterr().err
    assert "failed verification" in err and "max_abs_hidden" in err


def test_cli_export_prints_summary(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["export", str(tiny_checkpoint), "--output", str(tmp_path / "m"), "--variants", "fp32,int8"]
    code = cli_main([*args, "--int8-quality", "any"])
    captured = capsys.readouterr()
    assert code == 0
    assert "[onnxbert export] verifying int8" in captured.err  # progress on stderr
    lines = captured.out.splitlines()
    assert lines[1].split()[:2] == ["variant", "file"]
    assert any(line.startswith("int8 ") and "[passed]" in line for line in lines)


def test_pickle_checkpoint_is_announced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = build_tiny_checkpoint(tmp_path / "ck", seed=3)
    model = BertModel.from_pretrained(str(checkpoint))
    (checkpoint / "model.safetensors").unlink()
    torch.save(model.state_dict(), checkpoint / "pytorch_model.bin")
    export_model(checkpoint, tmp_path / "out", variants="fp32", progress=False)
    assert "pickle" in capsys.readouterr().err


def test_mistyped_local_path_is_no_such_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for typo in ("./ckpt_typo", str(tmp_path / "ckpt_typo"), "models/bert/base"):
        with pytest.raises(ExportError, match="no such directory"):
            export_model(typo, tmp_path / "out", progress=False)


def test_parse_variants_and_bad_options(tiny_checkpoint: Path, tmp_path: Path) -> None:
    assert parse_variants("int8, fp32") == ["fp32", "int8"]
    with pytest.raises(ExportError, match="fp32, int8, fp16"):
        parse_variants("fp8")
    with pytest.raises(ExportError, match="opset"):
        export_model(tiny_checkpoint, tmp_path / "x", opset=13, progress=False)
    with pytest.raises(ExportError, match="max-length"):
        export_model(tiny_checkpoint, tmp_path / "x", max_length=513, progress=False)


def test_gate_figure_that_was_not_measured_fails(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(verify_module.GATES, "fp32", {"max_abs_hidden": 1e-4, "max_abs_ghost": 1.0})
    with pytest.raises(VerificationError) as failure:
        export_model(tiny_checkpoint, tmp_path / "m", variants="fp32", progress=False)
    assert failure.value.figures["fp32"]["failures"] == ["max_abs_ghost was not measured"]


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="fp16 is verified on CUDA")
def test_unverified_fp16_is_never_the_default(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    assert cli_main(["export", str(tiny_checkpoint), "--output", str(out), "--variants", "fp16"]) == 0
    printed = capsys.readouterr().out
    assert "default variant: none" in printed and "[unverified: no CUDA provider" in printed
    manifest = Manifest.load(out)
    assert manifest.default_variant is None and manifest.variants["fp16"].state == "unverified"
    with pytest.raises(ModelDirectoryError, match="loads only a verified default, and this directory's is none"):
        Encoder(out)
    with pytest.warns(UserWarning, match="'fp16' is unverified"):
        Encoder(out, variant="fp16", provider="cpu")
    assert cli_main(["info", str(out)]) == 0
    assert "fp16: unverified (no CUDA provider" in capsys.readouterr().out


def test_tokenizer_that_disagrees_with_transformers_fails(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenizers import normalizers

    from onnxbert.export import build as build_module

    def cased(checkpoint: object) -> Tokenizer:  # a tokenizer that forgets the checkpoint's lower-casing
        tokenizer = Tokenizer.from_file(str(tiny_checkpoint / "tokenizer.json"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
        return tokenizer

    monkeypatch.setattr(build_module, "load_tokenizer", cased)
    with pytest.raises(VerificationError, match="disagrees with transformers' BertTokenizer") as failure:
        export_model(tiny_checkpoint, tmp_path / "m", variants="fp32", progress=False)
    assert failure.value.figures["tokenizer"]["mismatches"] > 0
    assert failure.value.figures["tokenizer"]["state"] == "failed"
    assert not (tmp_path / "m").exists()


def test_committed_tiny_model_is_what_export_writes_now(tiny_export_dir: Path) -> None:
    """tests/data/tiny-model (the torch-free tests' model) must not drift from the exporter: else regenerate it."""
    hint = "regenerate it: python tests/tiny_model.py"
    committed, fresh = Manifest.load(TINY_MODEL), Manifest.load(tiny_export_dir)
    assert committed.format_version == fresh.format_version, hint
    assert committed.architecture == fresh.architecture and committed.tokenizer == fresh.tokenizer, hint
    assert {n: (v.state, v.packed is not None) for n, v in committed.variants.items()} == {
        n: (v.state, v.packed is not None) for n, v in fresh.variants.items()
    }, hint
    texts = ["hello world", "the cat sat on the mat .", "今天天气真好啊"]
    for variant in ("fp32", "int8"):
        np.testing.assert_allclose(
            Encoder(TINY_MODEL, variant=variant).embed(texts),
            Encoder(tiny_export_dir, variant=variant).embed(texts),
            atol=1e-5,
            err_msg=hint,
        )

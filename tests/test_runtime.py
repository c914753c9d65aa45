"""Runtime Encoder: batching invariance, order, threads, bad input, load-time checks, providers, Chinese."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_model import TINY_VOCAB

from onnxbert.runtime import Encoder, Manifest, ModelDirectoryError, ProviderError, available_cpus
from onnxbert.runtime.batching import plan_batches
from onnxbert.runtime.errors import REEXPORT_HINT

WORDS = ["the", "man", "is", "playing", "a", "guitar", "dog", "runs", "hello", "world", "今天", "好"]


def random_texts(count: int, seed: int, longest: int = 60) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(0, longest)))) for _ in range(count)]


def test_text_alone_equals_text_in_mixed_batch(minilm_dir: Path) -> None:
    encoder = Encoder(minilm_dir, variant="fp32")
    texts = [*random_texts(49, seed=1, longest=120), "A man is playing a guitar."]
    batched = encoder.embed(texts)
    alone = np.stack([encoder.embed(text)[0] for text in texts])
    assert np.abs(batched - alone).max() <= 1e-5
    tokens = encoder.encode(texts)
    single = encoder.encode(texts[7])
    assert np.abs(tokens.last_hidden_state[7] - single.last_hidden_state[0]).max() <= 1e-5


def test_input_order_is_restored(tiny_model_dir: Path) -> None:
    encoder = Encoder(tiny_model_dir, max_batch_size=4)  # many small batches, run longest first
    texts = random_texts(40, seed=2)
    pooled = encoder.embed(texts, pooling="cls")
    out = encoder.encode(texts)
    for index, text in enumerate(texts):
        assert out.input_ids[index].tolist() == encoder.tokenize(text).ids[0].tolist()
        np.testing.assert_allclose(pooled[index], encoder.embed(text, pooling="cls")[0], atol=1e-5)
        assert out.last_hidden_state[index].shape == (len(out.input_ids[index]), 32)


def test_plan_batches_respects_budget_and_covers_everything() -> None:
    lengths = np.array([5, 300, 12, 12, 80, 2, 512, 40], dtype=np.int64)
    batches = plan_batches(lengths, max_batch_tokens=600, max_batch_size=3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 600
    assert batches[0].tolist() == [6]  # the longest text runs alone: 2 x 512 > 600


def test_plan_batches_cuts_where_padding_outweighs_a_run() -> None:
    one_long = np.array([100] + [10] * 31, dtype=np.int64)  # one run would pad 31 texts to 100 tokens
    batches = plan_batches(one_long, max_batch_tokens=8192, max_batch_size=32, run_overhead=20)
    assert [b.tolist() for b in batches] == [[0], list(range(1, 32))]
    alike = np.full(64, 12, dtype=np.int64)  # nothing to save: the fewest runs the size cap allows
    assert [len(b) for b in plan_batches(alike, max_batch_tokens=8192, max_batch_size=32)] == [32, 32]
    lengths = np.random.default_rng(0).integers(5, 40, 32)

    def cost(plan: list[np.ndarray], overhead: float) -> float:
        return sum(overhead + len(b) * float(lengths[b].max()) for b in plan)

    for overhead in (0.0, 20.0, 1e6):  # never worse than any fixed run size, at any overhead
        plan = plan_batches(lengths, max_batch_tokens=8192, max_batch_size=32, run_overhead=overhead)
        order = np.argsort(-lengths, kind="stable")
        for size in (1, 4, 8, 16, 32):
            fixed = [order[i : i + size] for i in range(0, 32, size)]
            assert cost(plan, overhead) <= cost(fixed, overhead) + 1e-9


def test_workers_run_a_call_at_once_with_the_serial_results(tiny_model_dir: Path) -> None:
    """workers=3: a call's runs go to three threads at once; vectors, hidden states and order are exactly workers=1's,
    also when several callers share the Encoder and its workers."""
    serial = Encoder(tiny_model_dir, threads=1, max_batch_size=2)  # 2 rows a run: many runs a call
    parallel = Encoder(tiny_model_dir, threads=1, workers=3, max_batch_size=2)
    assert parallel.workers == 3 and "workers=3" in repr(parallel)
    texts = random_texts(60, seed=4)
    assert np.array_equal(parallel.embed(texts), serial.embed(texts))
    assert np.array_equal(parallel.embed(texts, pooling="cls"), serial.embed(texts, pooling="cls"))
    ours, theirs = parallel.encode(texts), serial.encode(texts)
    for got, want in zip(ours.last_hidden_state, theirs.last_hidden_state, strict=True):
        assert np.array_equal(got, want)
    inputs = [random_texts(30, seed=200 + i) for i in range(4)]
    with ThreadPoolExecutor(4) as callers:
        for got, batch in zip(callers.map(parallel.embed, inputs), inputs, strict=True):
            assert np.array_equal(got, serial.embed(batch))
    ran_on: set[str] = set()
    session = parallel._session

    class Recorder:  # the real session, noting which thread each run is on
        def run(self, names: object, feeds: object) -> object:
            ran_on.add(threading.current_thread().name)
            return session.run(names, feeds)  # type: ignore[arg-type]

    parallel._session = Recorder()  # type: ignore[assignment]
    assert np.array_equal(parallel.embed(texts), serial.embed(texts))
    assert len(ran_on) >= 2 and all(name.startswith("onnxbert-run") for name in ran_on), ran_on
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="workers"):
            Encoder(tiny_model_dir, workers=bad)  # type: ignore[arg-type]


def test_sixteen_threads_get_exactly_the_serial_results(minilm_dir: Path) -> None:
    encoder = Encoder(minilm_dir, variant="fp32")
    inputs = [random_texts(12, seed=100 + i) for i in range(16)]
    serial = [encoder.embed(texts) for texts in inputs]
    results: list[np.ndarray | None] = [None] * 16
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                results[i] = encoder.embed(inputs[i])
                assert np.array_equal(results[i], serial[i])
        except BaseException as error:  # collected and re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    for got, want in zip(results, serial, strict=False):
        assert got is not None and np.array_equal(got, want)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (None, "str or a list of str"),
        (42, "str or a list of str"),
        (b"bytes", "str or a list of str"),
        (["ok", "fine", 3], r"texts\[2\] is int"),
        (["ok", None], r"texts\[1\] is NoneType"),
        (["ok", "bad \ud800 surrogate"], r"texts\[1\] cannot be encoded"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_index(tiny_model_dir: Path, texts: object, message: str) -> None:
    encoder = Encoder(tiny_model_dir)
    with pytest.raises(ValueError, match=message):
        encoder.embed(texts)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        encoder.encode(texts)  # type: ignore[arg-type]


def test_empty_list_and_empty_strings(tiny_model_dir: Path) -> None:
    encoder = Encoder(tiny_model_dir)
    assert encoder.embed([]).shape == (0, 32) and encoder.embed([]).dtype == np.float32
    assert encoder.encode([]).last_hidden_state == []
    for pooling in ("pooler", "cls", "mean", "max"):
        vectors = encoder.embed(["", "   ", "\n\t"], pooling=pooling, normalize=True)
        assert vectors.shape == (3, 32) and np.isfinite(vectors).all()
        np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)  # whitespace normalizes away


def test_a_text_without_tokens_is_a_value_error(model_copy: Path) -> None:
    """A tokenizer without [CLS] [SEP] leaves an empty text no tokens: an error naming it, never a crash or padding."""
    tokenizer = json.loads((model_copy / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["post_processor"] = None
    (model_copy / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    for packing in (True, False):
        encoder = Encoder(model_copy, verify_hashes=False, packing=packing)
        assert encoder.embed(["hello", "dog"]).shape == (2, 32)
        for texts in (["hello", ""], [" "]):
            for pooling in ("cls", "mean", "max"):
                with pytest.raises(ValueError, match=rf"texts\[{len(texts) - 1}\] has no tokens"):
                    encoder.embed(texts, pooling=pooling)
            with pytest.raises(ValueError, match="has no tokens"):
                encoder.encode(texts)


def test_single_string_and_dtype(tiny_model_dir: Path) -> None:
    encoder = Encoder(tiny_model_dir)
    vector = encoder.embed("hello world")
    assert vector.shape == (1, 32) and vector.dtype == np.float32
    unit = encoder.embed(["hello", "dog"], normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="'pooler', 'cls', 'mean', 'max'"):
        encoder.embed("hello", pooling="sum")


def test_overlong_text_is_truncated_and_flagged_or_rejected(tiny_model_dir: Path) -> None:
    encoder = Encoder(tiny_model_dir, max_length=16)
    long_text = "the dog runs " * 10  # 30 words -> 32 tokens
    out = encoder.encode(["hello", long_text])
    assert out.truncated.tolist() == [False, True]
    assert len(out.input_ids[1]) == 16 and out.input_ids[1][-1] == TINY_VOCAB.index("[SEP]")
    with pytest.raises(ValueError, match=r"texts\[1\] has 32 tokens, over max_length=16"):
        encoder.embed(["hello", long_text], truncate=False)
    with pytest.raises(ValueError, match="max_length"):
        Encoder(tiny_model_dir, max_length=513)


def test_ten_thousand_texts_come_back_in_order(tiny_model_dir: Path) -> None:
    encoder = Encoder(tiny_model_dir)
    unique = random_texts(50, seed=3)
    texts = [unique[i % 50] for i in range(10_000)]
    vectors = encoder.embed(texts, pooling="mean")
    expected = encoder.embed(unique, pooling="mean")
    assert vectors.shape == (10_000, 32)
    np.testing.assert_allclose(vectors, np.tile(expected, (200, 1)), atol=1e-5)


def test_chinese_is_split_into_characters(tiny_model_dir: Path) -> None:
    encoder = Encoder(tiny_model_dir)
    ids = encoder.tokenize("今天天气真好啊").ids[0].tolist()
    assert [TINY_VOCAB[i] for i in ids] == ["[CLS]", "今", "天", "天", "气", "真", "好", "啊", "[SEP]"]
    out = encoder.encode("今天天气真好啊", return_offsets=True)
    assert out.offsets is not None and out.offsets[0][1:-1] == [(i, i + 1) for i in range(7)]
    assert np.isfinite(encoder.embed("今天天气真好啊")).all()


def test_repr_threads_and_provider(tiny_model_dir: Path) -> None:
    encoder = Encoder(tiny_model_dir, variant="int8", provider="cpu", threads=1)
    assert encoder.variant == "int8" and encoder.provider == "cpu" and encoder.threads == 1
    assert "variant='int8'" in repr(encoder) and "provider='cpu'" in repr(encoder)
    assert Encoder(tiny_model_dir).threads == available_cpus()
    assert encoder.spinning and not Encoder(tiny_model_dir, spinning=False).spinning  # ORT's default is to spin
    with pytest.raises(ValueError, match="threads"):
        Encoder(tiny_model_dir, threads=0)
    with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda'"):
        Encoder(tiny_model_dir, provider="tpu")
    with pytest.raises(ValueError, match="variant='bf16'"):
        Encoder(tiny_model_dir, variant="bf16")


def test_cuda_that_is_not_there_is_an_error(tiny_model_dir: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        encoder = Encoder(tiny_model_dir, provider="cuda")
        assert encoder.provider == "cuda" and encoder.variant == "fp16"
        return
    with pytest.raises(ProviderError, match="CUDAExecutionProvider") as failure:
        Encoder(tiny_model_dir, provider="cuda")
    assert "CPUExecutionProvider" in str(failure.value)  # names what is available


# ---- load-time checks -------------------------------------------------------------------------------------------


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "copy"))


def test_truncated_graph_is_refused(model_copy: Path) -> None:
    graph = model_copy / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:5000])
    with pytest.raises(ModelDirectoryError, match=r"truncated or replaced.*re-export"):
        Encoder(model_copy)


def test_git_lfs_pointer_is_refused(model_copy: Path) -> None:
    (model_copy / "model.onnx").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", encoding="utf-8"
    )
    with pytest.raises(ModelDirectoryError, match="Git LFS pointer"):
        Encoder(model_copy)


def test_same_size_corruption_fails_the_hash(model_copy: Path) -> None:
    graph = model_copy / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[-10] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ModelDirectoryError, match="sha256"):
        Encoder(model_copy)


def test_tokenizer_from_another_model_is_refused(model_copy: Path, minilm_dir: Path) -> None:
    shutil.copyfile(minilm_dir / "tokenizer.json", model_copy / "tokenizer.json")
    with pytest.raises(ModelDirectoryError, match=r"30522 tokens.*another model"):
        Encoder(model_copy)


def test_format_1_manifest_is_read_with_its_states(model_copy: Path) -> None:
    manifest = json.loads((model_copy / "onnxbert.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 1  # before states: `passed`, and `verified: false` for fp16 without CUDA
    for name, variant in manifest["variants"].items():
        del variant["state"]
        variant["verification"] = {"passed": True, **({"verified": False} if name == "fp16" else {})}
    manifest["default_variant"] = "fp16"  # as an export of fp16 alone on a CPU machine wrote it
    (model_copy / "onnxbert.json").write_text(json.dumps(manifest), encoding="utf-8")
    loaded = Manifest.load(model_copy)
    assert {n: v.state for n, v in loaded.variants.items()} == {
        "fp32": "passed",
        "int8": "passed",
        "fp16": "unverified",
    }
    with pytest.raises(ModelDirectoryError, match=r"loads only a verified default.*fp16 unverified"):
        Encoder(model_copy)
    assert Encoder(model_copy, variant="fp32").variant == "fp32"


def test_format_2_manifest_is_read_without_position_offset(model_copy: Path) -> None:
    manifest = json.loads((model_copy / "onnxbert.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 2  # before the BERT family: no position offset
    del manifest["architecture"]["position_offset"]
    (model_copy / "onnxbert.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert Manifest.load(model_copy).architecture.position_offset == 0
    assert Encoder(model_copy).embed("hello").shape == (1, 32)


def test_corrupt_tokenizer_names_the_file(model_copy: Path) -> None:
    (model_copy / "tokenizer.json").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ModelDirectoryError, match=r"tokenizer\.json is not a readable tokenizer\.json.*re-export"):
        Encoder(model_copy)


def test_missing_or_foreign_manifest(model_copy: Path, tmp_path: Path) -> None:
    manifest = json.loads((model_copy / "onnxbert.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 99
    (model_copy / "onnxbert.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelDirectoryError, match="format_version 99"):
        Encoder(model_copy)
    for broken in (b'{"format": ', b"[" * 100_000):  # cut short; nested deeper than json reads
        (model_copy / "onnxbert.json").write_bytes(broken)
        with pytest.raises(ModelDirectoryError, match=r"onnxbert\.json is not valid JSON"):
            Encoder(model_copy)
    (model_copy / "onnxbert.json").unlink()
    with pytest.raises(ModelDirectoryError, match=r"no onnxbert\.json"):
        Encoder(model_copy)
    with pytest.raises(ModelDirectoryError, match="not a directory"):
        Encoder(tmp_path / "nowhere")


def _edit_manifest(directory: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    manifest = json.loads((directory / "onnxbert.json").read_text(encoding="utf-8"))
    edit(manifest)
    (directory / "onnxbert.json").write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "message"),
    [  # each names the field; none reaches a file, an array or a session
        (
            lambda m: m["variants"]["fp32"].update(file="../copy/model.onnx"),
            r"fp32\.file '\.\./copy/model\.onnx' is not",
        ),
        (lambda m: m["tokenizer"].update(file="/etc/hostname"), r"tokenizer\.file '/etc/hostname' is not a file name"),
        (lambda m: m["variants"]["fp32"]["packed"].update(file="a\\b.onnx"), r"fp32\.packed\.file 'a\\\\b\.onnx'"),
        (lambda m: m["variants"]["fp32"].update(file="x" * 1_000_000), r"fp32\.file 'x+\.\.\. is not"),  # cut short
        (
            lambda m: m["variants"]["fp32"].update(file="\ud800.onnx"),
            r"fp32\.file '\\ud800\.onnx' is not",
        ),  # lone surrogate
        (lambda m: m["variants"]["fp32"].update(file="model\x00.onnx"), r"fp32\.file 'model\\x00\.onnx' is not"),
        (lambda m: m["architecture"].update(hidden_size="32"), r"architecture\.hidden_size is '32', not int"),
        (lambda m: m["variants"]["fp32"].update(bytes=True), r"fp32\.bytes is True, not int"),
        (lambda m: m["inputs"][0].update(shape={"batch": 1}), r"inputs\[0\]\.shape is \{'batch': 1\}, not list"),
        (lambda m: m["tokenizer"].update(max_length=10**9), r"max_length is 1000000000, not within \[2, \d+\]"),
        (lambda m: m["tokenizer"].update(pad_id=-1), r"pad_id is -1, not a token of its \d+"),
        (lambda m: m["architecture"].update(num_layers=0), r"architecture\.num_layers is 0, not positive"),
        (lambda m: m["variants"]["int8"]["recipe"].update(weight_levels="127"), r"int8\.recipe: weight_levels '127'"),
        (lambda m: m["variants"].update(int4=m["variants"].pop("int8")), r"variants\.int4: not one of"),
        (lambda m: m["variants"].update(fp32=None), r"malformed \(AttributeError"),
        (lambda m: m.update(default_pooling="bogus"), r"default_pooling 'bogus' not in"),
        (lambda m: m.update(default_variant="int4"), r"default_variant 'int4' is not one of"),
        (lambda m: m["variants"]["fp32"].update(state="maybe"), r"variants\.fp32\.state 'maybe' is not among"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_its_field(
    model_copy: Path, edit: Callable[[dict[str, Any]], object], message: str
) -> None:
    _edit_manifest(model_copy, edit)
    with pytest.raises(ModelDirectoryError, match=message) as failure:
        Encoder(model_copy)
    assert str(failure.value).endswith(REEXPORT_HINT) and len(str(failure.value)) < 400


def test_info_names_an_unreadable_recipe_record(model_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from onnxbert.cli import main

    _edit_manifest(model_copy, lambda m: m["variants"]["int8"]["recipe"].update(gate={}, held_out={"docs": 5}))
    assert main(["info", str(model_copy)]) == 0
    assert "its recipe record is unreadable (KeyError('speed_vs_fp32'))" in capsys.readouterr().out
    assert Encoder(model_copy, variant="int8").embed("hello").shape == (1, 32)  # the runtime reads none of it


def test_graph_inputs_must_match_manifest(model_copy: Path) -> None:
    manifest = json.loads((model_copy / "onnxbert.json").read_text(encoding="utf-8"))
    manifest["inputs"] = manifest["inputs"][:2]  # claims there is no token_type_ids
    (model_copy / "onnxbert.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelDirectoryError, match="takes inputs"):
        Encoder(model_copy)


def test_variant_not_exported_hint_keeps_the_others(model_copy: Path) -> None:
    manifest = json.loads((model_copy / "onnxbert.json").read_text(encoding="utf-8"))
    del manifest["variants"]["int8"]
    (model_copy / "onnxbert.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelDirectoryError, match=r"--variants fp32,int8,fp16 --force` \(keeps the others\)"):
        Encoder(model_copy, variant="int8")


def test_exact_int8_only_where_the_cpu_lacks_vnni(tiny_model_dir: Path) -> None:
    from onnxbert.runtime.session import cpu_flags, exact_int8_needed

    assert exact_int8_needed("x86_64", frozenset({"avx2", "fma"}))  # AVX2 only: u8 x s8 saturates at 16 bits
    assert exact_int8_needed("x86_64", frozenset({"avx2", "avx512f", "avx512bw"}))  # AVX-512 without VNNI too
    assert exact_int8_needed("x86_64", frozenset())  # flags unknown: exact first
    for vnni in ("avx512_vnni", "avx_vnni", "amx_int8"):
        assert not exact_int8_needed("x86_64", frozenset({"avx2", vnni}))
    assert not exact_int8_needed("aarch64", frozenset())
    import platform

    from onnxbert.runtime.session import int8_kernel, merge_cpu_flags

    proc = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})
    assert merge_cpu_flags(None, proc) == proc  # numpy's CPUID view unavailable: /proc/cpuinfo alone
    assert merge_cpu_flags(frozenset({"avx2", "avx512f", "avx512_vnni"}), proc) == proc  # agree: /proc adds AMX
    # An emulated Haswell on an AMX host: /proc/cpuinfo is the host's, CPUID (what ORT dispatches on) is not
    emulated = merge_cpu_flags(frozenset({"avx2", "fma"}), proc)
    assert emulated == {"avx2", "fma"} and exact_int8_needed("x86_64", emulated)
    # AVX-512 VNNI hidden from this process's CPUID (benchmarks/cpuid_mask.c): /proc's AMX is not this process's
    masked = merge_cpu_flags(frozenset({"avx2", "avx512f"}), proc)
    assert masked == {"avx2", "avx512f"} and exact_int8_needed("x86_64", masked)
    assert int8_kernel("x86_64", proc).startswith("AMX-INT8")
    assert int8_kernel("x86_64", frozenset({"avx2", "avx512_vnni"})).startswith("AVX-512 VNNI")
    assert int8_kernel("x86_64", frozenset({"avx2", "avx_vnni"})).startswith("AVX-VNNI")
    assert int8_kernel("x86_64", frozenset({"avx2", "avx512f"})).startswith("AVX-512 without VNNI (exact")
    assert int8_kernel("x86_64", frozenset({"avx2"})).startswith("AVX2 without VNNI (exact")
    assert int8_kernel("aarch64", frozenset()).startswith("aarch64")

    options = Encoder(tiny_model_dir, variant="int8")._session.get_session_options()
    try:
        entry = options.get_session_config_entry("session.x64quantprecision")
    except RuntimeError:  # not set
        entry = None
    assert (entry == "1") == exact_int8_needed(platform.machine(), cpu_flags())


def test_cpu_name_names_the_core_a_generic_name_hides() -> None:
    from onnxbert.runtime.session import describe_cpu

    amd = {"vendor_id": "AuthenticAMD", "model name": "AMD EPYC"}
    # Cloud VMs name Zen 2, 3 and 4 alike; their int8 / fp32 ceilings differ (1.19x on Zen 2, 1.54x on Zen 3)
    assert describe_cpu(amd | {"cpu family": "23", "model": "49"}) == "AMD EPYC (Zen 2: family 23, model 49)"
    assert describe_cpu(amd | {"cpu family": "25", "model": "1"}) == "AMD EPYC (Zen 3: family 25, model 1)"
    assert describe_cpu(amd | {"cpu family": "25", "model": "17"}) == "AMD EPYC (Zen 4: family 25, model 17)"
    assert describe_cpu(amd | {"cpu family": "25", "model": "144"}) == "AMD EPYC (family 25, model 144)"  # unknown
    intel = {"vendor_id": "GenuineIntel", "model name": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"}
    assert describe_cpu(intel | {"cpu family": "6", "model": "143"}).endswith("2.70GHz (family 6, model 143)")
    assert describe_cpu({"model name": "Neoverse"}) == "Neoverse"  # no x86 family: the name alone
    assert describe_cpu({}) == ""

"""The benchmark report writer and its checker (no timing here: the suite itself runs in CI with --quick)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("torch", reason="the benchmarks need the export extra")

from benchmarks import report
from onnxbert.export.quality import nearest, rankdata, shared_share, spearman, top_k_agreement

SYSTEMS = ["pytorch", "pytorch-sorted", "onnxbert-fp32", "onnxbert-int8"]


def fake_results() -> dict:
    def row(p50: float) -> dict:
        return {
            "p50_ms": p50,
            "p90_ms": p50 * 1.1,
            "p99_ms": p50 * 1.3,
            "mean_ms": p50,
            "calls": 10,
            "sequences_per_s": 1000 / p50,
            "real_tokens_per_s": 16000 / p50,
            "gflops": 50.0,
            "peak_share": 0.3,
            "speedup_vs_pytorch": 10.0 / p50,
        }

    workloads = {
        name: {
            "kind": kind,
            "sequences": 8,
            "real_tokens": 128,
            "gflop": 1.0,
            "systems": {s: row(10.0 / (i + 1)) for i, s in enumerate(SYSTEMS)},
        }
        for name, kind in (("1x16", "shape"), ("8x128", "shape"), ("sts-dev", "text"))
    }
    quality = {"sentences": 10, "pairs": 5, "reference": "pytorch (fp32)"}
    quality |= {
        s: {"mean_cosine": 0.99, "min_cosine": 0.9, "max_abs_diff": 0.1, "top10_agreement": 0.95, "sts_spearman": 0.93}
        for s in SYSTEMS
    }
    return {
        "date": "2026-11-24T00:00:00+00:00",
        "settings": {"models": ["minilm"], "threads": 2, "quick": True, "repeats": 3},
        "environment": {
            "cpu": {"model": "test cpu", "flags": ["avx2"]},
            "cpus_available_to_process": 2,
            "threads": 2,
            "python": "3.11",
            "versions": {"onnxruntime": "1.32.0"},
        },
        "gemm_peak": {"fp32_gflops": 200.0, "int8_gops": 700.0, "shape": "2048x768 @ 768x3072"},
        "peers": {"fastembed": "not installed"},
        "dependency_closure": {"onnxbert[cpu] (serve time)": {"mb": 200.0, "packages": ["numpy"]}},
        "models": {
            "minilm": {
                "config": {
                    "hidden_size": 384,
                    "intermediate_size": 1536,
                    "num_hidden_layers": 6,
                    "num_attention_heads": 12,
                },
                "systems": SYSTEMS,
                "workloads": workloads,
                "quality": quality,
                "cold_start": {"pytorch": {"cold_start_s": 5.0, "peak_rss_mb": 400.0}},
            }
        },
    }


def test_written_report_passes_the_check(tmp_path: Path) -> None:
    report.write(fake_results(), tmp_path)
    assert report.check(tmp_path) == []
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "minilm onnxbert-int8: 4.00x PyTorch on real text" in text
    assert "Each call after a 50 ms idle pause" in text  # a run that did not record its pause used 50 ms
    results = fake_results()
    results["settings"]["pause_s"] = 0.3
    report.write(results, tmp_path)
    assert "Each call after a 300 ms idle pause" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "int8 on this CPU: **AVX2 without VNNI (exact u8 x u8 via session.x64quantprecision" in text  # no recipe


def test_report_header_names_the_kernel_the_measured_int8_graph_runs(tmp_path: Path) -> None:
    results = fake_results()  # an AVX2 CPU without VNNI
    gate = {"mean_cosine": 0.999, "top10_agreement": 0.97, "spearman_drop": 0.0, "texts": 10, "passed": True}
    budget = {"min_mean_cosine": 0.998, "min_top10": 0.97, "max_spearman_drop": 0.005}
    plain = {"name": "static+rows", "gate": gate, "budget": budget}
    pair_safe = plain | {"name": "static+rows-pairsafe", "weight_levels": 127, "weight_pair_limit": 128}
    for recipe, kernel in ((pair_safe, "u8 x s8: the weights' pairs cannot saturate"), (plain, "exact u8 x u8")):
        results["models"]["minilm"]["int8_recipe"] = recipe
        report.write(results, tmp_path)
        header = (tmp_path / "report.md").read_text(encoding="utf-8").splitlines()[2]
        assert header.startswith(f"int8 on this CPU: **AVX2 without VNNI ({kernel}"), header


def test_check_finds_broken_output(tmp_path: Path) -> None:
    assert report.check(tmp_path) == [
        "results.json: " + str(FileNotFoundError(2, "No such file or directory", str(tmp_path / "results.json")))
    ]
    results = fake_results()
    results["models"]["minilm"]["workloads"]["1x16"]["systems"]["onnxbert-fp32"]["p50_ms"] = 0.0
    report.write(results, tmp_path)
    (tmp_path / "throughput.png").write_bytes(b"not a png")
    problems = report.check(tmp_path)
    assert any("1x16/onnxbert-fp32" in p for p in problems)
    assert any("throughput.png" in p for p in problems)
    results = fake_results()
    results["settings"]["quick"] = False  # a full run measures MiniLM's int8 on unseen text too
    report.write(results, tmp_path)
    assert report.check(tmp_path) == ["minilm: a full run without the int8-on-unseen-text section"]


def test_quality_metrics() -> None:
    assert rankdata(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    vectors = np.random.default_rng(0).standard_normal((30, 8))
    assert top_k_agreement(vectors, vectors * 2.0) == 1.0
    other = np.random.default_rng(1).standard_normal((30, 8))
    assert top_k_agreement(vectors, other) < 0.6
    # the vectorized count against one set intersection per row
    left, right = nearest(vectors, 5), nearest(other, 5)
    by_sets = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(left, right, strict=True)])
    assert 0 < shared_share(left, right) == pytest.approx(by_sets)


def test_held_out_figures_of_a_recipe_without_a_budget_are_not_called_within_budget() -> None:
    held = {"texts": 1000, "mean_cosine": 0.9999, "top10_agreement": 0.909, "gated": False, "failures": []}
    gate = {"texts": 2910, "mean_cosine": 0.9999, "top10_agreement": 0.915, "spearman_drop": None}
    pinned = {"name": "static+rows", "gate": gate, "held_out": {"chinese-reviews": held}}
    pinned["budget"] = {"min_mean_cosine": -1.0, "min_top10": 0.0, "max_spearman_drop": float("inf")}
    line = report._recipe_lines({"int8_recipe": pinned})[0]
    assert "top-10 0.909 (no budget)" in line and "within budget" not in line

    strict = pinned | {"budget": {"min_mean_cosine": 0.998, "min_top10": 0.97, "max_spearman_drop": 0.005}}
    strict["held_out"] = {"chinese-reviews": held | {"failures": ["top10_agreement=0.909 (needs >= 0.97)"]}}
    assert "top-10 0.909 (outside budget)" in report._recipe_lines({"int8_recipe": strict})[0]
    strict["held_out"]["chinese-reviews"]["unknown_tokens"] = 0.64  # a text mostly outside the vocabulary says so
    line = report._recipe_lines({"int8_recipe": strict})[0]
    assert "top-10 0.909 (outside budget; 64% of its tokens are [UNK] in this vocabulary)" in line


def test_report_gives_int8_speed_per_kernel_class(tmp_path: Path) -> None:
    results = fake_results()

    def measured(ratio: float, safeguard: bool) -> dict:
        gemm = {"fp32_gflops": 300.0, "int8_gops": 400.0, "shape": "2048x768 @ 768x3072"}
        return {"texts": 2910, "int8_vs_fp32": ratio, "exact_int8_safeguard": safeguard, "gemm": gemm} | {
            "vs_unmasked": {"max_abs_diff": 0.0, "min_cosine": 1.0}
        }

    avx2 = measured(1.16, True) | {"int8_vs_fp32_rounds": [1.3, 1.1, 1.16], "int8_pairs_saturate": True}
    avx2["bulk"] = {"threads": 1, "workers": 2, "int8_vs_fp32": 1.25, "int8_vs_fp32_rounds": [1.2, 1.25, 1.3]}
    classes = {"amx": measured(1.77, False), "avx2": avx2}  # amx: a record from before the kernel probe
    skipped = {"avx512": "this CPU has no avx512f"}
    results["models"]["minilm"]["isa_classes"] = {"threads": 2, "rounds": 3, "classes": classes, "skipped": skipped}
    report.write(results, tmp_path)
    assert report.check(tmp_path) == []
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert (
        "minilm int8 / fp32 per int8 kernel class (this CPU, newer features hidden): amx 1.77x, avx2 1.16x (bulk 1.25x)"
        in text
    )
    avx2_row = (
        "| avx2 | amx, avx512, avx_vnni | yes | on | 300 | 400 | 1.33x | **1.16x** (rounds 1.10-1.30x) "
        "| **1.25x** (rounds 1.20-1.30x) | 1.000000 |"
    )
    assert avx2_row in text
    assert "| amx | nothing | - | off | 300 | 400 | 1.33x | **1.77x** | - | 1.000000 |" in text  # an older record
    assert "- avx512: not measured (this CPU has no avx512f)" in text

    # No CPUID faulting: the avx2 class hidden by the XGETBV stand-in says so in its row and below the table
    classes["avx2"] |= {"hidden": ["avx512"], "hidden_by": "XGETBV"}
    report.write(results, tmp_path)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| avx2 | avx512 (XGETBV) | yes | on |" in text and "whose XGETBV reports no AVX-512 or AMX" in text

    # A real AVX2-only CPU: nothing to hide, and the report does not say that anything was
    results["models"]["minilm"]["isa_classes"]["classes"] = {"avx2": avx2 | {"hidden": [], "hidden_by": "nothing"}}
    report.write(results, tmp_path)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "per int8 kernel class (this CPU's own kernels, nothing hidden): avx2 1.16x" in text
    assert "Nothing hidden: this CPU's own int8 kernels" in text and "hidden from CPUID, so" not in text


def test_row_width_times_each_width_and_restores_the_runtime_default(tiny_model_dir: Path, tmp_path: Path) -> None:
    from benchmarks.row_width import run_row_width
    from onnxbert.runtime import packing

    defaults = packing.pack_rows.__defaults__
    texts = [f"sentence number {i} " + "word " * (i % 23) for i in range(120)]
    result = run_row_width(tiny_model_dir, [16, 48], 2, 1, tmp_path, corpora={"made-up": texts})
    assert packing.pack_rows.__defaults__ == defaults  # the runtime's own width again after the run
    assert set(result["seconds"]) == {"made-up", "groups of 32 (made-up)"}
    for by_variant in result["seconds"].values():
        assert set(by_variant) == {"fp32", "int8"}
        assert all(len(times) == 2 and min(times) > 0 for times in by_variant["int8"].values())
        assert set(by_variant["fp32"]) == {"16", "48"}
    table = (tmp_path / "row_width.md").read_text(encoding="utf-8")
    assert "| made-up | 120 | int8 |" in table and "16 tokens | 48 tokens" in table
    assert (tmp_path / "row_width.json").is_file()


def test_bench_cache_is_re_exported_when_the_default_int8_graph_changed(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A cached export whose int8 graph is not what `prepare` would export now (the plain graph `auto` chose before
    it became pair-safe, or a pinned recipe) is not reused, or the suite would time another graph as the default."""
    from benchmarks.models import _current

    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    manifest = json.loads((directory / "onnxbert.json").read_text())
    del manifest["variants"]["fp16"]  # the suite exports fp32 and int8, each with its packed twin
    (directory / "onnxbert.json").write_text(json.dumps(manifest))
    assert manifest["variants"]["int8"]["recipe"]["name"] == "static+rows"
    assert _current(directory, "static+rows") and not _current(directory, "auto")

    manifest["variants"]["int8"]["recipe"] |= {"name": "static+rows-pairsafe", "weight_pair_limit": 128}
    (directory / "onnxbert.json").write_text(json.dumps(manifest))
    assert not _current(directory, "auto")  # pinned, even if pair-safe: not what the default's search chose
    manifest["variants"]["int8"]["recipe"]["requested"] = "auto"
    (directory / "onnxbert.json").write_text(json.dumps(manifest))
    assert _current(directory, "auto") and not _current(directory, "static+rows")

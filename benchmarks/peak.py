"""The machine's GEMM ceiling, measured in the same run with one-MatMul ONNX graphs (fp32 and int8)."""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxbert.runtime.session import Provider, cpu_flags, create_session, exact_int8_needed

M, K, N = 2048, 768, 3072  # a bert-base FFN projection over 2048 tokens


def _session(graph: onnx.ModelProto, threads: int, *, fits_16_bits: bool = True) -> ort.InferenceSession:
    return create_session(
        graph.SerializeToString(),
        provider=Provider.CPU,
        threads=threads,
        memory_arena=True,
        int8_fits_16_bits=fits_16_bits,
    )


def _fp32_graph() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((K, N)).astype(np.float32), "W")
    node = helper.make_node("MatMul", ["A", "W"], ["Y"])
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [M, K])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [M, N])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _int8_graph(weights: np.ndarray | None = None, rows: int = M) -> onnx.ModelProto:
    # The op int8 BERT graphs run: uint8 activations x int8 weights -> int32. Full 8-bit weights: under the safeguard
    # ONNX Runtime leaves weights within +-64 on the fast kernel, so narrower ones would not time the exact one.
    if weights is None:
        weights = np.random.default_rng(0).integers(-127, 128, (K, N), dtype=np.int8)
    node = helper.make_node("MatMulInteger", ["A", "W"], ["Y"])
    graph = helper.make_graph(
        [node],
        "gemm8",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [rows, weights.shape[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [rows, weights.shape[1]])],
        [numpy_helper.from_array(weights, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def int8_pairs_saturate() -> bool:
    """Whether this process's int8 GEMM, without the safeguard, saturates each pair of u8 x s8 products at 16 bits.

    ONNX Runtime's AVX2 and AVX-512-without-VNNI kernels do, its VNNI and AMX kernels do not: which kernel class the
    process really runs, whatever CPU flags it reads.
    """
    depth = 64
    session = _session(_int8_graph(np.full((depth, 8), 127, np.int8), rows=4), threads=1)
    (product,) = session.run(None, {"A": np.full((4, depth), 255, np.uint8)})
    return bool((product != depth * 255 * 127).any())  # saturated: 32767 per pair, about half of it


def _best_rate(session: ort.InferenceSession, feed: np.ndarray, seconds: float) -> float:
    session.run(None, {"A": feed})
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        session.run(None, {"A": feed})
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return 2.0 * M * K * N / best / 1e9


def gemm_peaks(threads: int, seconds: float = 2.0) -> dict[str, Any]:
    """Best-of-N GFLOP/s (fp32) and GOP/s (int8) of a single large MatMul on `threads` threads.

    `int8_gops`: the u8 x s8 kernel a pair-safe graph (the default) runs; its speed does not depend on the values.
    Where the CPU lacks VNNI, also `int8_safeguarded_gops`: the exact u8 x u8 kernel a plain 8-bit graph needs there.
    """
    rng = np.random.default_rng(1)
    fp32 = _best_rate(_session(_fp32_graph(), threads), rng.standard_normal((M, K)).astype(np.float32), seconds)
    activations = rng.integers(0, 255, (M, K), dtype=np.uint8)
    peaks = {
        "fp32_gflops": fp32,
        "int8_gops": _best_rate(_session(_int8_graph(), threads), activations, seconds),
        "shape": f"{M}x{K} @ {K}x{N}",
    }
    if exact_int8_needed(platform.machine(), cpu_flags()):
        safeguarded = _session(_int8_graph(), threads, fits_16_bits=False)
        peaks["int8_safeguarded_gops"] = _best_rate(safeguarded, activations, seconds)
    return peaks

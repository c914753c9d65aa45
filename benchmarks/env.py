"""The environment every result row is recorded with: CPU, flags, cores, threads, versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "fma", "f16c")
_PACKAGES = (
    "onnxbert",
    "onnxruntime",
    "onnxruntime-gpu",
    "tokenizers",
    "numpy",
    "torch",
    "transformers",
    "onnx",
    "fastembed",
    "optimum",
    "optimum-onnx",
)


def int8_isa(flags: list[str], recipe: dict[str, Any] | None = None) -> str:
    """Which int8 GEMM ONNX Runtime runs on the CPU a result was recorded on (flags as `cpu_info` records them).

    `recipe`: the measured int8 graph's manifest record; without VNNI its weights decide whether the fast u8 x s8
    kernel runs (pair-safe weights) or the exact u8 x u8 safeguard (plain 8-bit weights, and results without it).
    """
    from onnxbert.runtime.session import int8_fits_16_bits, int8_kernel

    fits = recipe is not None and int8_fits_16_bits(recipe)
    return int8_kernel("x86_64" if flags else platform.machine(), frozenset(flags), fits_16_bits=fits)


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and the features int8 depends on, as ONNX Runtime's kernels see them (CPUID)."""
    from onnxbert.runtime.session import cpu_flags, cpu_model

    flags = cpu_flags()
    return {"model": cpu_model(), "flags": [f for f in _FLAGS_OF_INTEREST if f in flags]}


def versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def environment(threads: int) -> dict[str, Any]:
    from onnxbert.runtime import available_cpus

    return {
        "cpu": cpu_info(),
        "logical_cpus_host": os.cpu_count(),
        "cpus_available_to_process": available_cpus(),
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions(),
        "env": {
            k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE") if k in os.environ
        },
    }

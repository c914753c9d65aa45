"""The environment every result row is recorded with: CPU, flags, cores, threads, versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
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


def int8_isa(flags: list[str]) -> str:
    """Which int8 instructions ONNX Runtime has here: what int8's speed-up over fp32 depends on."""
    for flag, name in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI")):
        if flag in flags:
            return name
    if "avx512f" in flags:
        return "AVX-512 without VNNI (exact int8 via session.x64quantprecision)"
    return "AVX2 without VNNI (exact int8 via session.x64quantprecision)" if "avx2" in flags else "no x86 SIMD seen"


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "", platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    return {"model": model, "flags": [f for f in _FLAGS_OF_INTEREST if f in flags]}


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

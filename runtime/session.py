"""ONNX Runtime sessions: explicit provider, checked after start; thread count from the CPUs this process may use."""

from __future__ import annotations

import enum
import importlib
import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .errors import ProviderError, parse_choice

__all__ = [
    "PAIR_SAFE_WEIGHT_LEVELS",
    "PAIR_SUM_LIMIT",
    "Provider",
    "available_cpus",
    "cpu_flags",
    "cpu_model",
    "create_session",
    "describe_cpu",
    "exact_int8_needed",
    "int8_fits_16_bits",
    "int8_kernel",
    "int8_kernel_without_vnni",
    "merge_cpu_flags",
]

_ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class Provider(str, enum.Enum):
    """Where the graph runs. `auto` is CUDA when onnxruntime-gpu can offer it, else CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    @classmethod
    def parse(cls, value: str | Provider) -> Provider:
        """Normalize a user string to the enum, or say which values are allowed."""
        return parse_choice(cls, value, "provider")

    def resolve(self) -> Provider:
        """Turn `auto` into the concrete provider this onnxruntime build offers."""
        if self is not Provider.AUTO:
            return self
        return Provider.CUDA if _ORT_NAMES["cuda"] in ort.get_available_providers() else Provider.CPU


def _cgroup_cpu_limit() -> int | None:
    """CPUs allowed by a cgroup v2 quota (containers), or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, int(int(quota) // int(period)))


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup quota. Not the host's core count."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity API
        count = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return min(count, limit) if limit else count


# x86 features with an int8 dot product that accumulates u8 x s8 products in 32 bits (no 16-bit saturation).
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# numpy's CPUID names -> /proc/cpuinfo's, for the features int8 and the benchmarks' reports care about.
_NUMPY_NAMES = {
    "AVX2": "avx2",
    "FMA3": "fma",
    "F16C": "f16c",
    "AVX512F": "avx512f",
    "AVX512BW": "avx512bw",
    "AVX512VNNI": "avx512_vnni",
}
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def _proc_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _cpuid_flags() -> frozenset[str] | None:
    """The features CPUID and the OS grant this process, as numpy's dispatcher found them; None where unknown."""
    features: dict[str, bool] | None = None
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, numpy 1
        try:
            features = importlib.import_module(module).__cpu_features__
            break
        except (ImportError, AttributeError):
            continue
    if features is None:
        return None
    return frozenset(name for key, name in _NUMPY_NAMES.items() if features.get(key))


def merge_cpu_flags(cpuid: frozenset[str] | None, proc: frozenset[str]) -> frozenset[str]:
    """One view of the CPU: CPUID's where known, plus what only /proc/cpuinfo names (avx_vnni, amx_int8).

    /proc/cpuinfo adds to CPUID only when the two agree on AVX2, AVX-512F and AVX-512 VNNI; where they disagree (an
    emulator, CPUID masked for this process) CPUID alone decides.
    """
    if cpuid is None:
        return proc
    agree = all((flag in cpuid) == (flag in proc) for flag in ("avx2", "avx512f", "avx512_vnni"))
    return cpuid | (proc & {"avx_vnni", "amx_int8"}) if agree else cpuid


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU features ONNX Runtime's kernels will see, named as /proc/cpuinfo names them.

    ORT picks its int8 kernels by CPUID, which numpy's dispatcher also reads (on every OS); /proc/cpuinfo (Linux)
    adds the features numpy does not probe. Empty where neither can be read.
    """
    cpuid = _cpuid_flags() if platform.machine().lower() in _X86 else None
    return merge_cpu_flags(cpuid, _proc_flags())


# AMD (family, first model, last model) -> core. Cloud VMs often name only "AMD EPYC", yet int8 / fp32 differs by core:
# Zen 2 multiplies vector integers on one pipe, so its int8 GEMM barely beats fp32 (1.19x, against Zen 3's 1.54x).
_AMD_CORES = (
    (23, 0x00, 0x2F, "Zen/Zen+"),
    (23, 0x30, 0xFF, "Zen 2"),
    (25, 0x00, 0x0F, "Zen 3"),
    (25, 0x10, 0x1F, "Zen 4"),
    (25, 0x20, 0x5F, "Zen 3"),
    (25, 0x60, 0x7F, "Zen 4"),
    (25, 0xA0, 0xAF, "Zen 4"),
    (26, 0x00, 0xFF, "Zen 5"),
)


def describe_cpu(fields: dict[str, str]) -> str:
    """A CPU's name from /proc/cpuinfo's fields: the model name, plus family and model (and AMD's core) on x86."""
    name = fields.get("model name", "").strip()
    try:
        family, model = int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        return name
    name = name or fields.get("vendor_id", "").strip() or "CPU"
    amd = fields.get("vendor_id", "").strip() == "AuthenticAMD"
    core = next((core for f, low, high, core in _AMD_CORES if amd and f == family and low <= model <= high), None)
    return f"{name} ({core + ': ' if core else ''}family {family}, model {model})"


def cpu_model() -> str:
    """The CPU's name, for records that name the CPU a figure was measured on; its core where the name hides it."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return describe_cpu(fields) or platform.processor() or platform.machine() or "unknown"


# ONNX Runtime's u8 x s8 kernels for CPUs without VNNI (AVX2, plain AVX-512) add each two products of adjacent weight
# rows (2i, 2i + 1) into 16 bits, saturating. Weights where every such pair has |w[2i] + w[2i + 1]| <= 128 cannot
# saturate it (255 * 128 = 32,640 <= 32,767), so those kernels are exact on them without the safeguard. 7-bit weights
# (|w| <= 64, ONNX Runtime's reduce_range idea) meet it too, at twice the rounding error.
PAIR_SUM_LIMIT = 128
PAIR_SAFE_WEIGHT_LEVELS = 64


def int8_fits_16_bits(recipe: dict[str, Any]) -> bool:
    """Whether an int8 variant's recipe (its manifest record) keeps every pair of weights within PAIR_SUM_LIMIT."""
    pair_limit = recipe.get("weight_pair_limit")
    return int(recipe.get("weight_levels", 127)) <= PAIR_SAFE_WEIGHT_LEVELS or (
        pair_limit is not None and int(pair_limit) <= PAIR_SUM_LIMIT
    )


def exact_int8_needed(machine: str, flags: frozenset[str]) -> bool:
    """Whether ONNX Runtime must be told to run u8 x s8 int8 exactly (`session.x64quantprecision`).

    x86 CPUs without VNNI (AVX2, plain AVX-512) multiply with an instruction that saturates each pair of products at
    16 bits. The option converts weights to u8 there (exact, slower), but on VNNI / AMX CPUs it also takes the
    int8 GEMM off their fast kernels (ORT 1.32 on an AMX Xeon: 3,842 -> 335 GOP/s), so it is set only where needed.
    An x86 CPU whose flags cannot be read is treated as one without VNNI: exact first.
    """
    return machine.lower() in _X86 and not (flags & _VNNI_FLAGS)


def int8_kernel(machine: str, flags: frozenset[str], *, fits_16_bits: bool = False) -> str:
    """Which int8 GEMM ONNX Runtime runs on this CPU, in words: what int8's speed-up over fp32 depends on.

    `fits_16_bits`: the graph's weight pairs stay within PAIR_SUM_LIMIT, so no safeguard is needed.
    """
    for flag, name in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI")):
        if flag in flags:
            return f"{name} (u8 x s8, 32-bit accumulation)"
    if machine.lower() not in _X86:
        return f"{machine} (ONNX Runtime's int8 kernels for it)"
    isa = "AVX-512 without VNNI" if "avx512f" in flags else "AVX2 without VNNI" if "avx2" in flags else "no AVX2 seen"
    return f"{isa} ({int8_kernel_without_vnni(fits_16_bits)})"


def int8_kernel_without_vnni(fits_16_bits: bool) -> str:
    """How an x86 CPU without VNNI runs an int8 graph, in words: fast where its weight pairs cannot saturate."""
    if fits_16_bits:
        return "u8 x s8: the weights' pairs cannot saturate its 16-bit sums"
    return "exact u8 x u8 via session.x64quantprecision: u8 x s8 would saturate at 16 bits"


def create_session(
    graph: Path | bytes,
    *,
    provider: Provider,
    threads: int | None,
    memory_arena: bool,
    spinning: bool = True,
    int8_fits_16_bits: bool = False,
) -> ort.InferenceSession:
    """Start a session on exactly `provider`; a provider that does not come up active is an error, not a fallback.

    `graph`: a graph file, or serialized bytes (export's calibration and the benchmarks build graphs in memory).
    `int8_fits_16_bits`: its int8 weights cannot saturate (`int8_fits_16_bits(recipe)`): no safeguard needed.
    """
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads={threads!r} must be a positive int, or None for the CPUs this process may use")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = memory_arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads spin-wait for the next run by default: lowest latency for back-to-back calls, but on a
    # machine shared with an event loop (a server) the spinning steals the cores that loop needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    # int8 graphs multiply uint8 activations by int8 weights (U8S8); without VNNI that saturates at 16 bits
    # (all-MiniLM-L6-v2 static+rows on an AMD EPYC Zen 3: top-10 neighbours 0.921 instead of 0.971).
    if not int8_fits_16_bits and exact_int8_needed(platform.machine(), cpu_flags()):
        options.add_session_config_entry("session.x64quantprecision", "1")
    wanted = _ORT_NAMES[provider.value]
    available = ort.get_available_providers()
    if wanted not in available:
        raise ProviderError(
            f"provider={provider.value!r} needs {wanted}, but this onnxruntime offers {available}; "
            "for CUDA install 'onnxbert[gpu]' (onnxruntime-gpu) in place of 'onnxbert[cpu]'"
        )
    providers: list[str] = [wanted] if provider is Provider.CPU else [wanted, _ORT_NAMES["cpu"]]
    source = str(graph) if isinstance(graph, Path) else graph
    session = ort.InferenceSession(source, sess_options=options, providers=providers)
    active = session.get_providers()
    if not active or active[0] != wanted:
        raise ProviderError(
            f"provider={provider.value!r} was requested but the session runs on {active}: {wanted} failed to "
            "start (usually missing CUDA / cuDNN libraries or no visible GPU; onnxruntime logs the cause above). "
            f"Available providers: {available}"
        )
    return session

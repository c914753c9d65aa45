"""int8 on an x86 CPU without VNNI, run for real: the process runs under QEMU's user-mode emulator as a Haswell
(AVX2, no AVX-512, no VNNI), so ONNX Runtime dispatches its AVX2 int8 kernels, whose u8 x s8 multiply saturates
each pair of products at 16 bits. On the VNNI / AMX machines tests usually run on, those kernels never run and a
saturation test passes either way; here it cannot.

Each check has a control that runs the same graph with the runtime's safeguard (`session.x64quantprecision`) turned
off and must come out saturated: proof that the emulated CPU really took the saturating path, so the exact result
is not vacuous. Speed under emulation means nothing and is not measured.

Needs `qemu-x86_64` (Debian: `apt-get install qemu-user`); skipped without it, unless ONNXBERT_REQUIRE_EMULATION=1
(CI sets it once QEMU is installed), which turns the skip into a failure.

QEMU has no AVX-512, so the AVX-512-without-VNNI class (Skylake-SP) is run another way: natively, with the features
above it hidden from CPUID (benchmarks/cpuid_mask.c; needs Linux CPUID faulting and a C compiler, skipped without).
Where CPUID faulting is absent the benchmarks time the avx2 class with libraries whose XGETBV reads no AVX-512 state;
the last test checks that patch on a library built here.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EMULATED_CPU = "Haswell"  # AVX2 + FMA, no AVX-512, no VNNI: the AMD Zen 2/3 class of int8 kernel
_QEMU = shutil.which("qemu-x86_64") or shutil.which("qemu-x86_64-static")
TEXTS = [
    "The weather is lovely today.",
    "今天天气真好啊",
    "A man is playing a guitar on the stage while the crowd sings along.",
    "def f(x): return x + 1",
    "Ein Mann spielt Gitarre.",
    "The quick brown fox jumps over the lazy dog, then sleeps in the afternoon sun.",
]

# Run inside the emulated (or the native) process: embed TEXTS with the int8 variant and report what the runtime
# decided. argv: model directory, output .npy, "safeguard" or "no-safeguard".
_CHILD = r"""
import json, platform, sys
import numpy as np
import onnxbert.runtime.session as session
if sys.argv[3] == "no-safeguard":
    session.exact_int8_needed = lambda machine, flags: False
from onnxbert.runtime import Encoder
encoder = Encoder(sys.argv[1], variant="int8", threads=1)
np.save(sys.argv[2], encoder.embed(json.loads(sys.argv[4])))
options = encoder._session.get_session_options()
try:
    exact = options.get_session_config_entry("session.x64quantprecision") == "1"
except RuntimeError:
    exact = False
flags = session.cpu_flags()
fits = session.int8_fits_16_bits(encoder.manifest.variants["int8"].recipe)
kernel = session.int8_kernel(platform.machine(), flags, fits_16_bits=fits)
print(json.dumps({"flags": sorted(flags), "exact": exact, "kernel": kernel}))
"""


def _emulation() -> str:
    required = os.environ.get("ONNXBERT_REQUIRE_EMULATION") == "1"
    reason = None
    if platform.machine().lower() not in ("x86_64", "amd64"):
        reason = f"emulating an x86 CPU needs an x86-64 host, not {platform.machine()}"
    elif _QEMU is None:
        reason = "qemu-x86_64 not installed (apt-get install qemu-user)"
    if reason is None:
        return str(_QEMU)
    if required:
        pytest.fail(f"ONNXBERT_REQUIRE_EMULATION=1 but {reason}")
    pytest.skip(reason)


def _embed(
    model: Path, out: Path, *, emulated: bool, safeguard: bool, masked: dict[str, str] | None = None
) -> tuple[np.ndarray, dict[str, object]]:
    command = [sys.executable, "-c", _CHILD, str(model), str(out), "safeguard" if safeguard else "no-safeguard"]
    command.append(json.dumps(TEXTS))
    if emulated:
        command = [_emulation(), "-cpu", EMULATED_CPU, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, **(masked or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(out), json.loads(done.stdout.strip().splitlines()[-1])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))


def test_int8_on_an_avx2_cpu_matches_the_native_cpu_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The committed tiny model's int8 variant: the emulated AVX2 CPU gives the native vectors bit for bit (integer
    GEMMs are exact; the float ops round alike here), and without the safeguard it saturates."""
    _emulation()
    native, _ = _embed(tiny_model_dir, tmp_path / "native.npy", emulated=False, safeguard=True)
    avx2, seen = _embed(tiny_model_dir, tmp_path / "avx2.npy", emulated=True, safeguard=True)
    saturated, _ = _embed(tiny_model_dir, tmp_path / "saturated.npy", emulated=True, safeguard=False)

    assert not {"avx512f", "avx512_vnni", "avx_vnni", "amx_int8"} & set(seen["flags"]), seen  # CPUID, not the host's
    assert "avx2" in seen["flags"] and seen["exact"] is True, seen
    assert str(seen["kernel"]).startswith("AVX2 without VNNI"), seen
    np.testing.assert_allclose(avx2, native, rtol=0, atol=1e-5)
    assert np.abs(saturated - native).max() > 1e-4, "the emulated CPU did not saturate: the check above proves nothing"


@pytest.mark.slow
def test_real_int8_model_on_an_avx2_cpu(minilm_int8_dir: Path, tmp_path: Path) -> None:
    """all-MiniLM-L6-v2's int8 variant (the default export, pair-safe): on the emulated AVX2 CPU the runtime leaves
    the safeguard off, ONNX Runtime runs its saturating u8 x s8 kernel, and each vector stays within int8 rounding of
    the native one. Not bit for bit where a layer stays fp32: it rounds a few ulps differently on AVX2 and AVX-512,
    and a value on an int8 boundary moves one level, which later layers carry. That this emulated kernel does
    saturate a graph that is not pair-safe is the tiny model's check above."""
    _emulation()
    native, _ = _embed(minilm_int8_dir, tmp_path / "native.npy", emulated=False, safeguard=True)
    avx2, seen = _embed(minilm_int8_dir, tmp_path / "avx2.npy", emulated=True, safeguard=True)
    assert seen["exact"] is False and "pairs cannot saturate" in str(seen["kernel"]), seen
    assert _cosines(avx2, native).min() >= 0.9995


@pytest.mark.parametrize("kernel_class", ["avx512", "avx2"])
def test_int8_with_vnni_hidden_from_cpuid_matches_the_native_cpu(
    kernel_class: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Natively, with VNNI and AMX (and for avx2 AVX-512) hidden from CPUID: ONNX Runtime takes that class's
    saturating u8 x s8 kernel, the runtime sets its safeguard, and the vectors are the native ones; the control
    without the safeguard saturates."""
    from onnxbert.runtime.session import cpu_flags

    # the mask is a benchmark tool (repo root): the CPU-only deployment tier, run from tests/, has no benchmarks/
    isa_classes = pytest.importorskip("benchmarks.isa_classes")
    hidden, needs = isa_classes.CLASSES[kernel_class]
    library = isa_classes.mask_library(tmp_path / "mask")
    if not isinstance(library, Path):
        pytest.skip(library)
    if needs not in cpu_flags():
        pytest.skip(f"this CPU has no {needs}")
    masked = {"LD_PRELOAD": str(library), "ONNXBERT_HIDE_CPUID": ",".join(hidden)}
    native, _ = _embed(tiny_model_dir, tmp_path / "native.npy", emulated=False, safeguard=True)
    exact, seen = _embed(tiny_model_dir, tmp_path / "exact.npy", emulated=False, safeguard=True, masked=masked)
    saturated, _ = _embed(tiny_model_dir, tmp_path / "sat.npy", emulated=False, safeguard=False, masked=masked)

    assert not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(seen["flags"]), seen
    assert ("avx512f" in seen["flags"]) == (kernel_class == "avx512") and seen["exact"] is True, seen
    np.testing.assert_allclose(exact, native, rtol=0, atol=1e-5)
    assert np.abs(saturated - native).max() > 1e-4, "no saturation with the safeguard off: the mask did not take"


def test_pair_safe_int8_runs_the_fast_kernel_exactly_on_an_avx2_cpu(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A pair-safe int8 graph (static+rows-pairsafe: 8-bit weights, each |w[2i] + w[2i+1]| <= 128) on the emulated
    AVX2 CPU: the runtime leaves the safeguard off, so ONNX Runtime runs its saturating u8 x s8 kernel, and the vectors
    are still the native CPU's. Its weights reach past 7 bits, so this is not the 7-bit case in disguise."""
    import onnx
    from onnx import numpy_helper

    from onnxbert.export import export_model

    _emulation()
    model = tmp_path / "model"
    export_model(tiny_checkpoint, model, int8_quality="any", int8_recipe="static+rows-pairsafe", progress=False)
    weights = [
        numpy_helper.to_array(init).astype(np.int32)
        for init in onnx.load(str(model / "model.int8.onnx")).graph.initializer
        if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 2
    ]
    assert max(int(np.abs(w).max()) for w in weights) > 64
    assert max(int(np.abs(w[0::2] + w[1::2]).max()) for w in weights) <= 128
    native, _ = _embed(model, tmp_path / "native.npy", emulated=False, safeguard=True)
    avx2, seen = _embed(model, tmp_path / "avx2.npy", emulated=True, safeguard=True)

    assert seen["exact"] is False and "pairs cannot saturate" in str(seen["kernel"]), seen
    np.testing.assert_allclose(avx2, native, rtol=0, atol=1e-5)


_XCR0_SOURCE = r"""
unsigned int xcr0_low(void) {
    unsigned int low, high;
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    return low;
}
"""


def test_xgetbv_patch_reads_no_avx512_state(tmp_path: Path) -> None:
    """benchmarks' avx2 stand-in for CPUs without CPUID faulting: after `patch_xgetbv` a library's XGETBV reads
    XCR0 = 7 (x87, SSE and AVX state: no AVX-512 or AMX), and its other bytes are untouched."""
    isa_classes = pytest.importorskip("benchmarks.isa_classes")
    compiler, objdump = shutil.which(os.environ.get("CC", "cc")), shutil.which("objdump")
    if platform.machine() != "x86_64" or compiler is None or objdump is None:
        pytest.skip("needs an x86-64 host, a C compiler and objdump")
    (tmp_path / "xcr0.c").write_text(_XCR0_SOURCE)
    native, patched = tmp_path / "libnative.so", tmp_path / "libpatched.so"
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(native), str(tmp_path / "xcr0.c")], check=True)
    shutil.copy(native, patched)

    assert isa_classes.patch_xgetbv(patched, objdump) == 1
    before, after = native.read_bytes(), patched.read_bytes()
    assert len(before) == len(after) and sum(a != b for a, b in zip(before, after, strict=True)) == 3
    assert ctypes.CDLL(str(native)).xcr0_low() & 7 == 7  # this CPU saves AVX state (more where it has AVX-512)
    assert ctypes.CDLL(str(patched)).xcr0_low() == 7
    assert isa_classes.patch_xgetbv(patched, objdump) == 0  # nothing left to patch


def test_the_int8_kernel_probe_tells_a_saturating_kernel_from_an_exact_one() -> None:
    """benchmarks' probe of which int8 kernel a process runs (each isa-classes child refuses to measure a class whose
    kernel it contradicts): it reads saturation on the emulated AVX2 CPU, and on this CPU what its VNNI implies."""
    peak = pytest.importorskip("benchmarks.peak")
    from onnxbert.runtime.session import cpu_flags, exact_int8_needed

    assert peak.int8_pairs_saturate() == exact_int8_needed(platform.machine(), cpu_flags())
    probe = "from benchmarks.peak import int8_pairs_saturate; print(int8_pairs_saturate())"
    root = str(Path(__file__).resolve().parents[1])
    command = [_emulation(), "-cpu", EMULATED_CPU, sys.executable, "-c", probe]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True"]

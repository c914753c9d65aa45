"""int8 against fp32 under each int8 kernel class this CPU can stand in for, measured in one run.

    python -m benchmarks isa-classes [--model minilm] [--rounds 3] [--out DIR]

ONNX Runtime picks its int8 GEMM by CPUID: AMX, AVX-512 VNNI, AVX-512 without VNNI (saturating u8 x s8, so the runtime
sets its exact u8 x u8 safeguard), AVX2 without VNNI (the same). Each class runs in a child process with the features
above it hidden from CPUID (benchmarks/cpuid_mask.c, Linux CPUID faulting), natively and at full speed, and reports
what the runtime saw, which int8 kernel ONNX Runtime took (a probe that saturates without VNNI: a child whose kernel
contradicts its class refuses to measure), the one-MatMul GEMM ceilings, int8 / fp32 through `Encoder.embed` on the
STS-B dev sentences (fp32 and int8 alternating, `--rounds` each, median), and how far the int8 vectors move from the
unmasked CPU's (they should not beyond int8 rounding: the safeguard, or pair-safe weights, keep every class exact),
and int8 against that class's own fp32 on STS-B dev and held-out Python documentation.

Where the CPU has no CPUID faulting (most cloud VMs), the avx2 class is stood in for another way: the child imports
copies of onnxruntime and numpy whose XGETBV instructions report no AVX-512 or AMX register state (`avx2_stand_in`),
so both take their AVX2 paths. That needs objdump (binutils) and a CPU without AVX-VNNI, which is a CPUID bit only.

What this is not: another core. A real AMD EPYC Zen 2 runs ONNX Runtime's AVX2 int8 GEMM at 1.1-1.3x its fp32 GEMM
where Zen 4's cores, AVX-512 hidden, run it at ~1.95x; this measures the kernel each class gets, on this core. The
report says so beside every figure.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CLASSES: dict[str, tuple[tuple[str, ...], str]] = {
    # class: (features hidden, the feature the unmasked CPU needs for this class to stand in for real hardware)
    "amx": ((), "amx_int8"),
    "avx512-vnni": (("amx",), "avx512_vnni"),
    "avx512": (("amx", "avx512_vnni", "avx_vnni"), "avx512f"),
    "avx2": (("amx", "avx512", "avx_vnni"), "avx2"),
}
_SATURATING = frozenset({"avx512", "avx2"})  # classes whose u8 x s8 multiply saturates pairs of products at 16 bits
_FLAG_OF = {"amx": "amx_int8", "avx512": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni"}
_SOURCE = Path(__file__).with_name("cpuid_mask.c")
# XGETBV reads which register state the OS saves; with only x87, SSE and AVX state (XCR0 = 7) a library takes no
# AVX-512 or AMX path. `push 7; pop rax` fills the instruction's three bytes; EDX (XCR0's upper half) keeps what it
# held, and no feature these libraries test lives there.
_XGETBV = b"\x0f\x01\xd0"
_XCR0_AVX_ONLY = b"\x6a\x07\x58"
_STAND_IN = "XGETBV"  # how a stand-in class was masked, in its record and table row
_PROBE_TEXTS = 64  # the vectors compared across classes
_HELD_OUT_TEXTS = 1000  # export's held-out Python documentation, judged in every class


def mask_library(cache: Path) -> Path | str:
    """The compiled LD_PRELOAD library, or why it cannot be had here."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return "CPUID faulting is Linux x86-64 only"
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "/proc/cpuinfo unreadable"
    if " cpuid_fault" not in flags:
        return "this CPU (or its hypervisor) has no CPUID faulting (no cpuid_fault in /proc/cpuinfo)"
    library = cache / "cpuid_mask.so"
    if not library.exists() or library.stat().st_mtime < _SOURCE.stat().st_mtime:
        cache.mkdir(parents=True, exist_ok=True)
        compiler = os.environ.get("CC", "cc")
        try:
            subprocess.run(
                [compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(_SOURCE)],
                check=True,
                capture_output=True,
                text=True,
            )
        except (OSError, subprocess.CalledProcessError) as failure:
            return f"could not compile {_SOURCE.name} with {compiler}: {failure}"
    return library


def patch_xgetbv(library: Path, objdump: str) -> int:
    """Make every XGETBV instruction in `library` (a shared object, edited in place) read XCR0 = 7; how many."""
    data = bytearray(library.read_bytes())
    if _XGETBV not in data:  # cheap test before disassembling
        return 0
    headers = subprocess.run([objdump, "-h", str(library)], capture_output=True, text=True, check=True).stdout
    sections = [
        (int(address, 16), int(size, 16), int(offset, 16))
        for size, address, offset in re.findall(
            r"^\s*\d+\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", headers, re.MULTILINE
        )
    ]
    code = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True, check=True
    ).stdout
    count = 0
    # An instruction's address, not a byte search: the same three bytes occur inside other instructions and data.
    for match in re.finditer(r"^\s*([0-9a-f]+):\s+xgetbv\s*$", code, re.MULTILINE):
        address = int(match.group(1), 16)
        start, _, offset = next(s for s in sections if s[0] <= address < s[0] + s[1])
        at = address - start + offset
        if data[at : at + 3] != _XGETBV:
            raise RuntimeError(f"{library.name}: objdump's xgetbv at {address:#x} is not 0f 01 d0 in the file")
        data[at : at + 3] = _XCR0_AVX_ONLY
        count += 1
    library.write_bytes(bytes(data))
    return count


def avx2_stand_in(cache: Path) -> Path | str:
    """A folder to put first on PYTHONPATH, whose onnxruntime and numpy see no AVX-512 or AMX state; or why none.

    Built once per onnxruntime and numpy version (~30 s: disassembling ~70 MB of ONNX Runtime).
    """
    import onnxruntime

    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return "the XGETBV stand-in is for Linux x86-64"
    objdump = shutil.which("objdump")
    if objdump is None:
        return "no CPUID faulting, and no objdump (binutils) for the XGETBV stand-in"
    folder = cache / f"avx2-stand-in-onnxruntime-{onnxruntime.__version__}-numpy-{np.__version__}"
    if folder.is_dir():
        return folder
    building = folder.with_name(folder.name + ".partial")
    shutil.rmtree(building, ignore_errors=True)
    for module in (onnxruntime, np):
        package = Path(str(module.__file__)).parent
        for source in (package, package.with_name(package.name + ".libs")):  # numpy.libs: its bundled OpenBLAS
            if source.is_dir():
                shutil.copytree(source, building / source.name, symlinks=True)
    patched = {
        str(library.relative_to(building)): count
        for library in sorted(building.rglob("*.so*"))
        if library.is_file() and not library.is_symlink() and (count := patch_xgetbv(library, objdump))
    }
    for package in ("onnxruntime", "numpy"):
        if not any(name.startswith(f"{package}/") for name in patched):
            shutil.rmtree(building, ignore_errors=True)
            return f"found no XGETBV in {package}'s libraries: the stand-in would not take"
    (building / "xgetbv_patched.json").write_text(json.dumps(patched, indent=2))
    building.rename(folder)
    return folder


def _child(name: str, directory: Path, threads: int, rounds: int, limit: int, out: Path) -> None:
    """Run in the masked process: what the runtime sees, GEMM ceilings, int8 / fp32 on real text, probe vectors."""
    from benchmarks.peak import gemm_peaks, int8_pairs_saturate
    from onnxbert.export.quality import cosines, top_k_agreement
    from onnxbert.export.sts import sts_pairs, unique_sentences
    from onnxbert.export.texts import python_docs
    from onnxbert.runtime import Encoder
    from onnxbert.runtime.session import cpu_flags, int8_fits_16_bits, int8_kernel

    texts = unique_sentences(sts_pairs("dev"), limit)
    flags = cpu_flags()
    seen = sorted(flags & {_FLAG_OF[feature] for feature in CLASSES[name][0] if feature in ("avx512", "avx512_vnni")})
    if seen:  # numpy reads CPUID and XGETBV as ONNX Runtime does: a mask that did not take must not be measured
        raise SystemExit(f"isa-classes {name}: this process still sees {', '.join(seen)}")
    # The flags are what the libraries read; the GEMM's own arithmetic says which int8 kernel ONNX Runtime took.
    saturates = int8_pairs_saturate()
    if saturates != (name in _SATURATING):
        kernel = "saturates pairs of u8 x s8 products" if saturates else "multiplies u8 x s8 exactly"
        raise SystemExit(f"isa-classes {name}: ONNX Runtime's int8 GEMM here {kernel}: not the {name} class's kernel")
    encoders = {variant: Encoder(directory, variant=variant, threads=threads) for variant in ("fp32", "int8")}
    # Bulk: one-thread runs, `threads` of them at once (Encoder's workers) — what embed-corpus runs.
    bulk = {variant: Encoder(directory, variant=variant, threads=1, workers=threads) for variant in encoders}
    seconds: dict[str, list[float]] = {variant: [] for variant in encoders}
    bulk_seconds: dict[str, list[float]] = {variant: [] for variant in bulk}
    for encoder in [*encoders.values(), *bulk.values()]:
        encoder.embed(texts[:256])  # warm: first-run allocations and weight packing
    vectors = {}
    for _ in range(rounds):
        for variant, encoder in encoders.items():
            start = time.perf_counter()
            vectors[variant] = encoder.embed(texts)
            seconds[variant].append(time.perf_counter() - start)
        for variant, encoder in bulk.items():
            start = time.perf_counter()
            encoder.embed(texts)
            bulk_seconds[variant].append(time.perf_counter() - start)
    # int8 against this class's own fp32, as export's gate judges: does the budget's figure hold on this CPU class?
    docs = python_docs(_HELD_OUT_TEXTS)
    held = {variant: encoder.embed(docs) for variant, encoder in encoders.items()}
    quality = {
        text: {
            "texts": len(pair["fp32"]),
            "mean_cosine": float(cosines(pair["int8"], pair["fp32"]).mean()),
            "top10_agreement": top_k_agreement(pair["int8"], pair["fp32"]),
        }
        for text, pair in (("sts-dev", vectors), ("python-docs", held))
    }
    np.save(out / f"{name}.npy", encoders["int8"].embed(texts[:_PROBE_TEXTS]))
    recipe = encoders["int8"].manifest.variants["int8"].recipe
    record = {
        "class": name,
        "flags": sorted(flags),
        "int8_kernel": int8_kernel(platform.machine(), flags, fits_16_bits=int8_fits_16_bits(recipe)),
        "exact_int8_safeguard": _safeguard_set(encoders["int8"]),  # the int8 session's own, read back
        "int8_pairs_saturate": saturates,
        "gemm": gemm_peaks(threads, seconds=1.5),
        "texts": len(texts),
        "seconds": seconds,
        "int8_vs_fp32": statistics.median(seconds["fp32"]) / statistics.median(seconds["int8"]),
        # Each round's fp32 pass and int8 pass run back to back: their ratio shows how far the VM's drift moves it.
        "int8_vs_fp32_rounds": [f / i for f, i in zip(seconds["fp32"], seconds["int8"], strict=True)],
        "bulk": {
            "threads": 1,
            "workers": threads,
            "seconds": bulk_seconds,
            "int8_vs_fp32": statistics.median(bulk_seconds["fp32"]) / statistics.median(bulk_seconds["int8"]),
            "int8_vs_fp32_rounds": [f / i for f, i in zip(bulk_seconds["fp32"], bulk_seconds["int8"], strict=True)],
        },
        "quality": quality,
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=2))


def _top10(record: dict[str, Any], text: str) -> str:
    figures = record.get("quality", {}).get(text)
    return f"{figures['top10_agreement']:.4f}" if figures else "-"


def _safeguard_set(encoder: Any) -> bool:
    options = encoder._session.get_session_options()
    try:
        return bool(options.get_session_config_entry("session.x64quantprecision") == "1")
    except RuntimeError:  # never set
        return False


def run_classes(
    model: str, cache: Path, out: Path, threads: int, rounds: int, directory: Path | None = None
) -> dict[str, Any]:
    """`python -m benchmarks isa-classes`: measure every class and write isa_classes.{json,md} to `out`.

    `directory`: an exported model directory to measure instead of `model`'s export.
    """
    from benchmarks.env import cpu_info
    from benchmarks.models import prepare
    from onnxbert.runtime import Manifest

    if directory is not None:
        manifest = Manifest.load(directory)
        model = f"{manifest.source.get('model')}, int8 recipe {manifest.variants['int8'].recipe.get('name', '?')}"
    source = directory or prepare(model, cache).directory
    summary = {"model": model, "cpu": cpu_info()} | measure_classes(source, cache, threads, rounds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "isa_classes.json").write_text(json.dumps(summary, indent=2))
    (out / "isa_classes.md").write_text(render(summary), encoding="utf-8")
    return summary


def _masking(
    name: str, hidden: tuple[str, ...], real: frozenset[str], library: Path | str, cache: Path, stand_in: bool
) -> tuple[dict[str, str], str] | str:
    """The environment that hides `hidden` from a class's child and how it hides them; or why it cannot."""
    if not hidden:
        return {}, "nothing hidden"
    if isinstance(library, Path):
        return {"LD_PRELOAD": " ".join(filter(None, [str(library), os.environ.get("LD_PRELOAD", "")]))}, "CPUID"
    if name != "avx2":
        return library
    if "avx_vnni" in real:
        return f"{library}; the XGETBV stand-in cannot hide AVX-VNNI (a CPUID bit)"
    if not stand_in:
        return f"{library}; the XGETBV stand-in is left to `python -m benchmarks isa-classes`"
    site = avx2_stand_in(cache)
    if not isinstance(site, Path):
        return f"{library}; {site}"
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")]))}, _STAND_IN


def measure_classes(
    directory: Path, cache: Path, threads: int, rounds: int, limit: int = 10**6, stand_in: bool = True
) -> dict[str, Any]:
    """Every class this CPU can stand in for, each in its own masked child process, on up to `limit` texts.

    `stand_in`: without CPUID faulting, measure the avx2 class with `avx2_stand_in` (built once, ~30 s).
    """
    from onnxbert.runtime.session import cpu_flags

    library = mask_library(cache)
    real = cpu_flags()
    scratch = cache / "isa_classes"  # each child's record and probe vectors
    scratch.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, (hidden, needs) in CLASSES.items():
        if needs not in real:
            skipped[name] = f"this CPU has no {needs}"
            continue
        hidden = tuple(feature for feature in hidden if _FLAG_OF[feature] in real)  # a real AVX2 CPU: nothing to hide
        masking = _masking(name, hidden, real, library, cache, stand_in)
        if isinstance(masking, str):
            skipped[name] = masking
            continue
        variables, how = masking
        env = dict(os.environ, ONNXBERT_HIDE_CPUID=",".join(hidden)) | variables
        command = [sys.executable, "-m", "benchmarks.isa_classes", name, str(directory), str(threads), str(rounds)]
        command.append(str(limit))
        print(
            f"isa-classes: {name} (hiding {', '.join(hidden) or 'nothing'}, by {how}) ...", file=sys.stderr, flush=True
        )
        subprocess.run([*command, str(scratch)], env=env, check=True)
        results[name] = json.loads((scratch / f"{name}.json").read_text()) | {"hidden": list(hidden), "hidden_by": how}
    reference = next(iter(results), None)
    for name, record in results.items():
        vectors, base = np.load(scratch / f"{name}.npy"), np.load(scratch / f"{reference}.npy")
        cos = np.sum(vectors * base, axis=1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(base, axis=1))
        record["vs_unmasked"] = {"max_abs_diff": float(np.abs(vectors - base).max()), "min_cosine": float(cos.min())}
    return {"threads": threads, "rounds": rounds, "classes": results, "skipped": skipped}


def render(summary: dict[str, Any]) -> str:
    """isa_classes.md: the CPU, what was run, and the table."""
    cpu = summary["cpu"]
    lines = [
        f"# int8 vs fp32 per int8 kernel class ({summary['model']}, {summary['threads']} threads)",
        "",
        f"CPU: {cpu['model']} ({', '.join(cpu['flags'])}).",
        "",
        *table_lines(summary),
    ]
    return "\n".join(lines) + "\n"


def _spread(record: dict[str, Any]) -> str:
    """' (rounds 1.66-2.42x)': the lowest and highest paired-round ratio, where the record has them."""
    rounds = record.get("int8_vs_fp32_rounds")
    return f" (rounds {min(rounds):.2f}-{max(rounds):.2f}x)" if rounds and len(rounds) > 1 else ""


def _bulk(record: dict[str, Any]) -> str:
    """'**2.24x** (rounds ...)' for the bulk mode's int8 / fp32, '-' for a run before it was measured."""
    bulk = record.get("bulk")
    return f"**{bulk['int8_vs_fp32']:.2f}x**{_spread(bulk)}" if bulk else "-"


def _int8_gemm(gemm: dict[str, Any]) -> str:
    """'744', or '420 (safeguarded 297)' where the class lacks VNNI and the run measured both kernels."""
    safeguarded = gemm.get("int8_safeguarded_gops")
    return f"{gemm['int8_gops']:.0f}" + (f" (safeguarded {safeguarded:.0f})" if safeguarded else "")


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def hidden_from(name: str, record: dict[str, Any]) -> list[str]:
    """The features a class's child did not see (records before 2026-12-02 did not say: the class's list)."""
    return list(record.get("hidden", CLASSES[name][0]))


def _hidden(name: str, record: dict[str, Any]) -> str:
    """'amx, avx512': what the class's child did not see, and ' (XGETBV)' where the stand-in hid it."""
    hidden = ", ".join(hidden_from(name, record)) or "nothing"
    return f"{hidden} ({_STAND_IN})" if record.get("hidden_by") == _STAND_IN else hidden


def table_lines(summary: dict[str, Any]) -> list[str]:
    """What the classes are, one table row per class measured, and a line per class skipped (also the suite's)."""
    first = next(iter(summary["classes"].values()), None)
    masked = any(hidden_from(name, r) for name, r in summary["classes"].items())
    how = (
        "Each class runs on this CPU with the features above it hidden from CPUID, so ONNX Runtime takes that "
        "class's kernels: the kernel choice is measured, not another core's rates (the CPU named above is the "
        "silicon of every row). "
        if masked
        else "Nothing hidden: this CPU's own int8 kernels at its own rates. "
    )
    lines = [
        f"{how}Real text: {first['texts'] if first else 0} STS-B dev sentences through Encoder.embed, fp32 "
        f"and int8 alternating, median of {summary['rounds']} rounds each (in brackets: the lowest and highest "
        "ratio of one round's fp32 pass to its int8 pass); bulk: the same with one-thread runs, one per thread "
        "at once (`Encoder(threads=1, workers=N)`, as embed-corpus runs). Vectors: int8 on the first "
        f"{_PROBE_TEXTS} of them against the unmasked CPU's int8. Top-10: int8 against this class's own fp32 (as "
        f"export's gate judges) on those sentences and on {_HELD_OUT_TEXTS} of Python's documentation (held out).",
        "",
        "| class | hidden | u8 x s8 pairs saturate (probe) | int8 session's exact u8 x u8 safeguard | "
        "GEMM fp32 GFLOP/s | GEMM int8 GOP/s | ceiling int8 / fp32 | int8 / fp32 on real text | "
        "the same, bulk | int8 vectors vs unmasked: min cosine | top-10 STS-B dev | top-10 Python docs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in summary["classes"].items():
        gemm = r["gemm"]
        lines.append(
            f"| {name} | {_hidden(name, r)} | {_yes_no(r.get('int8_pairs_saturate'))} "
            f"| {'on' if r['exact_int8_safeguard'] else 'off'} "
            f"| {gemm['fp32_gflops']:.0f} | {_int8_gemm(gemm)} | {gemm['int8_gops'] / gemm['fp32_gflops']:.2f}x "
            f"| **{r['int8_vs_fp32']:.2f}x**{_spread(r)} | {_bulk(r)} | {r['vs_unmasked']['min_cosine']:.6f} "
            f"| {_top10(r, 'sts-dev')} "
            f"| {_top10(r, 'python-docs')} |"
        )
    lines += [
        "",
        "The GEMM ceilings: one MatMul through the runtime's session on the u8 x s8 kernel the default (pair-safe) "
        "int8 graph runs; in brackets, where the class lacks VNNI, with the exact u8 x u8 safeguard a plain 8-bit "
        "graph needs there (runs before 2026-12-04 measured only that one). The probe: a MatMulInteger of 255 x 127 "
        "pairs without the safeguard, run in each child, which refuses to measure unless it saturates in the classes "
        "without VNNI and is exact in the others (- : a run before the probe). /proc/cpuinfo is not "
        "masked: a process that hides only AMX still reads amx_int8 there, so its int8_kernel text (in the JSON) says "
        "AMX; ONNX Runtime dispatches by CPUID, as the int8 GEMM ceiling of that row shows.",
    ]
    if any(r.get("hidden_by") == _STAND_IN for r in summary["classes"].values()):
        lines.append(
            "(XGETBV): no CPUID faulting here, so that class ran with copies of onnxruntime and numpy whose XGETBV "
            "reports no AVX-512 or AMX register state: both take their AVX2 paths, on this core."
        )
    lines += [f"- {name}: not measured ({why})" for name, why in summary["skipped"].items()]
    return lines


if __name__ == "__main__":
    _child(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6]))

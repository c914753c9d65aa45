"""Cold start (fresh process to first embedding), peak RSS, and the size of each stack's dependency closure."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

_ONNXBERT = """
from onnxbert.runtime import Encoder
Encoder({directory!r}, variant={variant!r}, provider="cpu", threads={threads}).embed("hello world")
"""
# The floor: ONNX Runtime and tokenizers alone on the same fp32 graph, no manifest, no hash checks, no packing.
_BARE = """
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer
options = ort.SessionOptions()
options.intra_op_num_threads = {threads}
session = ort.InferenceSession({graph!r}, options, providers=["CPUExecutionProvider"])
ids = np.array([Tokenizer.from_file({tokenizer!r}).encode("hello world").ids], dtype=np.int64)
feeds = {{"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}}
session.run(None, {{i.name: feeds[i.name] for i in session.get_inputs()}})
"""
_TORCH = """
import torch
from tokenizers import Tokenizer
from transformers import BertModel
torch.set_num_threads({threads})
tokenizer = Tokenizer.from_file({tokenizer!r})
ids = torch.tensor([tokenizer.encode("hello world").ids])
with torch.inference_mode():
    BertModel.from_pretrained({checkpoint!r}).eval()(input_ids=ids, attention_mask=torch.ones_like(ids))
"""
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child would report its parent's peak.
_REPORT = """
import json
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss_mb": int(hwm.split()[1]) / 1024}))
"""


def _measure(code: str, runs: int) -> dict[str, float]:
    seconds, rss = [], []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code) + _REPORT],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        seconds.append(time.perf_counter() - start)
        rss.append(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"])
    seconds.sort()
    return {"cold_start_s": seconds[len(seconds) // 2], "peak_rss_mb": max(rss), "runs": runs}


def cold_starts(checkpoint: Path, directory: Path, threads: int, runs: int) -> dict[str, dict[str, float]]:
    return {
        "pytorch": _measure(
            _TORCH.format(threads=threads, tokenizer=str(directory / "tokenizer.json"), checkpoint=str(checkpoint)),
            runs,
        ),
        "onnxruntime-bare-fp32": _measure(
            _BARE.format(
                threads=threads, graph=str(directory / "model.onnx"), tokenizer=str(directory / "tokenizer.json")
            ),
            runs,
        ),
        "onnxbert-fp32": _measure(_ONNXBERT.format(directory=str(directory), variant="fp32", threads=threads), runs),
        "onnxbert-int8": _measure(_ONNXBERT.format(directory=str(directory), variant="int8", threads=threads), runs),
    }


def _closure(roots: list[str]) -> dict[str, int]:
    """Installed distributions reachable from `roots` through unconditional requirements, with bytes on disk."""
    seen: dict[str, int] = {}
    stack = list(roots)
    while stack:
        name = stack.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[key] = sum(
            Path(str(f.locate())).stat().st_size for f in dist.files or [] if Path(str(f.locate())).is_file()
        )
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                stack.append(requirement.name)
    return seen


def dependency_closures() -> dict[str, Any]:
    stacks = {
        "onnxbert[cpu] (serve time)": ["numpy", "tokenizers", "onnxruntime"],
        "pytorch + transformers": ["torch", "transformers", "tokenizers", "numpy"],
    }
    result = {}
    for label, roots in stacks.items():
        sizes = _closure(roots)
        result[label] = {"mb": sum(sizes.values()) / 1e6, "packages": sorted(sizes)}
    return result

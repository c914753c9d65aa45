"""The runtime never imports torch, transformers, onnx, optimum or onnxruntime.transformers: proven in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = ("torch", "transformers", "onnx", "optimum", "onnxruntime.transformers", "onnxruntime.quantization")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"blocked at serve time: {name}")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_runtime_imports_and_runs_without_heavy_modules(tiny_model_dir: Path) -> None:
    result = run_blocked(
        f"""
        import json, sys
        from onnxbert.runtime import Encoder
        encoder = Encoder({str(tiny_model_dir)!r})
        vectors = encoder.embed(["hello world", "今天天气真好啊"], normalize=True)
        tokens = encoder.encode("hello world").last_hidden_state[0]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "onnx", "optimum"))
        print(json.dumps({{"shape": list(vectors.shape), "tokens": list(tokens.shape), "heavy": heavy,
                          "first": vectors[0, :3].tolist()}}))
        """
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {**report, "shape": [2, 32], "tokens": [4, 32], "heavy": []}
    from onnxbert.runtime import Encoder

    expected = Encoder(tiny_model_dir).embed("hello world", normalize=True)[0, :3]
    np.testing.assert_allclose(report["first"], expected, atol=1e-6)


def test_cli_embed_and_info_run_without_heavy_modules(tiny_model_dir: Path) -> None:
    result = run_blocked(
        f"""
        from onnxbert.cli import main
        raise SystemExit(main(["embed", {str(tiny_model_dir)!r}, "hello", "world"]) or
                         main(["info", {str(tiny_model_dir)!r}]))
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert json.loads(lines[0])["index"] == 0 and len(json.loads(lines[1])["embedding"]) == 32
    assert any(line.startswith("fp32: passed, model.onnx") for line in lines)


def test_blocker_really_blocks() -> None:
    result = run_blocked("import onnx")
    assert result.returncode != 0 and "blocked at serve time: onnx" in result.stderr

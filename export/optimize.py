"""ONNX Runtime's BERT fusions (fp32, fp16) and dynamic int8 quantization, with operator counts checked."""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers import optimizer
from onnxruntime.transformers.fusion_options import FusionOptions

from .errors import ExportError

__all__ = ["expected_fusions", "fuse", "operator_counts", "quantize_int8", "to_fp16"]

_GELU_OPS = ("BiasGelu", "FastGelu", "Gelu")
_ATTENTION_OPS = ("Attention", "MultiHeadAttention")


def operator_counts(path: Path) -> dict[str, int]:
    """How many nodes of each op type the graph at `path` holds."""
    model = onnx.load(str(path), load_external_data=False)
    return dict(collections.Counter(node.op_type for node in model.graph.node))


def expected_fusions(num_layers: int) -> dict[str, int]:
    """One embedding fusion; per layer one attention, two skip layer norms and one gelu."""
    return {
        "EmbedLayerNormalization": 1,
        "Attention": num_layers,
        "SkipLayerNormalization": 2 * num_layers,
        "Gelu": num_layers,
    }


def fusion_counts(counts: dict[str, int]) -> dict[str, int]:
    """Group the fused op types the way `expected_fusions` names them (Q* variants count as their float op)."""

    def total(names: tuple[str, ...]) -> int:
        return sum(counts.get(name, 0) + counts.get("Q" + name, 0) for name in names)

    return {
        "EmbedLayerNormalization": total(("EmbedLayerNormalization",)),
        "Attention": total(_ATTENTION_OPS),
        "SkipLayerNormalization": total(("SkipLayerNormalization",)),
        "Gelu": total(_GELU_OPS),
    }


def check_fusions(path: Path, num_layers: int) -> dict[str, int]:
    """The fused counts of the graph; a missing fusion is an error, never a slower graph written quietly."""
    found = fusion_counts(operator_counts(path))
    wanted = expected_fusions(num_layers)
    if found != wanted:
        raise ExportError(
            f"ONNX Runtime's BERT fusions did not all apply to {path.name}: found {found}, expected {wanted} for "
            f"{num_layers} layers. The graph pattern is not one the optimizer knows (check the transformers and "
            "onnxruntime versions in the README)"
        )
    return found


def _optimize(source: Path, *, num_heads: int, hidden_size: int, use_gpu: bool) -> Any:
    options = FusionOptions("bert")
    # opt_level=0: fusions only, no onnxruntime graph rewrites baked into the file, so it stays portable.
    return optimizer.optimize_model(
        str(source),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
        opt_level=0,
        use_gpu=use_gpu,
    )


def fuse(source: Path, target: Path, *, num_heads: int, hidden_size: int, num_layers: int) -> dict[str, int]:
    """fp32 fused graph for any provider."""
    _optimize(source, num_heads=num_heads, hidden_size=hidden_size, use_gpu=False).save_model_to_file(str(target))
    return check_fusions(target, num_layers)


def to_fp16(source: Path, target: Path, *, num_heads: int, hidden_size: int, num_layers: int) -> dict[str, int]:
    """fp16 weights and compute for the CUDA provider; inputs stay int64 and outputs float32."""
    model = _optimize(source, num_heads=num_heads, hidden_size=hidden_size, use_gpu=True)
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(target))
    graph = onnx.load(str(target))
    floats = [t.name for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    if floats:
        raise ExportError(f"fp16 conversion left float32 weights {floats[:5]} in {target.name}")
    outputs = {o.name: o.type.tensor_type.elem_type for o in graph.graph.output}
    if any(kind != onnx.TensorProto.FLOAT for kind in outputs.values()):
        raise ExportError(f"fp16 graph outputs must stay float32, found {outputs}")
    return check_fusions(target, num_layers)


# Which fused ops get int8 weights. Measured on all-MiniLM-L6-v2 (64 verification texts, mean-pooled cosine to
# fp32): MatMul + Attention + EmbedLayerNormalization 0.9909 mean / 0.960 worst; MatMul only 0.9932 / 0.973 at
# ~20% less speed (the fused QKV projections stay fp32). Quantized attention costs most of the quality.
INT8_OP_TYPES = ("MatMul",)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(source: Path, target: Path, *, num_layers: int) -> tuple[dict[str, int], dict[str, Any]]:
    """Dynamic int8 with per-channel weights (per-tensor loses ~21% of top-10 neighbours on MiniLM)."""
    recipe: dict[str, Any] = {
        "method": "dynamic",
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": False,
        "op_types": list(INT8_OP_TYPES),
        "excluded_nodes": [],
    }
    with _quiet_root_logger():  # the quantizer logs a pre-processing hint meant for CNNs on every call
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(INT8_OP_TYPES),
            # onnxruntime 1.32 cannot infer the element type of the fused contrib ops' outputs without this.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    counts = operator_counts(target)
    quantized = counts.get("MatMulInteger", 0) + counts.get("QAttention", 0)
    if quantized < 3 * num_layers:  # attention output, FFN in and FFN out per layer at least
        raise ExportError(f"int8 quantization left {target.name} mostly float: only {quantized} quantized ops")
    fused = fusion_counts(counts)
    fused["MatMulInteger"] = counts.get("MatMulInteger", 0)
    fused["QAttention"] = counts.get("QAttention", 0)
    return fused, recipe

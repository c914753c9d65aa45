"""ONNX Runtime's BERT fusions (fp32 for CPUs, fp16 for CUDA), with operator counts checked."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import helper
from onnxruntime.transformers import optimizer
from onnxruntime.transformers.fusion_options import FusionOptions

from .errors import ExportError

__all__ = [
    "GraphShape",
    "expected_fusions",
    "fuse",
    "fusion_counts",
    "operator_counts",
    "split_skip_layernorm",
    "to_fp16",
]


@dataclass(frozen=True)
class GraphShape:
    """What the fusions need to know of the model: attention shape, depth, and whether embeddings fuse."""

    num_heads: int
    hidden_size: int
    num_layers: int
    embedding_fused: bool = True


_GELU_OPS = ("BiasGelu", "FastGelu", "Gelu")
_ATTENTION_OPS = ("Attention", "MultiHeadAttention")


def operator_counts(path: Path) -> dict[str, int]:
    """How many nodes of each op type the graph at `path` holds."""
    model = onnx.load(str(path), load_external_data=False)
    return dict(collections.Counter(node.op_type for node in model.graph.node))


def expected_fusions(num_layers: int, *, embedding_fused: bool = True, skip_layernorm: bool = False) -> dict[str, int]:
    """One embedding fusion; per layer one attention, one gelu and two residual layer norms.

    The CPU graphs carry the layer norms as Add + LayerNormalization (`split_skip_layernorm`), the CUDA graph as
    SkipLayerNormalization. Unfused embeddings (`Family.embedding_fused`) keep their own LayerNormalization.
    """
    norms = 2 * num_layers
    embedding_norm = 0 if embedding_fused else 1
    return {
        "EmbedLayerNormalization": 1 if embedding_fused else 0,
        "Attention": num_layers,
        "SkipLayerNormalization": norms if skip_layernorm else 0,
        "LayerNormalization": embedding_norm + (0 if skip_layernorm else norms),
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
        "LayerNormalization": counts.get("LayerNormalization", 0),
        "Gelu": total(_GELU_OPS),
    }


def check_fusions(
    path: Path, num_layers: int, *, embedding_fused: bool = True, skip_layernorm: bool = False
) -> dict[str, int]:
    """The fused counts of the graph; a missing fusion is an error, never a slower graph written quietly."""
    found = fusion_counts(operator_counts(path))
    wanted = expected_fusions(num_layers, embedding_fused=embedding_fused, skip_layernorm=skip_layernorm)
    if found != wanted:
        raise ExportError(
            f"ONNX Runtime's BERT fusions did not all apply to {path.name}: found {found}, expected {wanted} for "
            f"{num_layers} layers. The graph pattern is not one the optimizer knows (check the transformers and "
            "onnxruntime versions in the README)"
        )
    return found


def split_skip_layernorm(model: onnx.ModelProto) -> int:
    """Rewrite each SkipLayerNormalization as Add (+ bias Add) + LayerNormalization, in place; returns how many.

    Same arithmetic, but onnxruntime 1.32's CPU SkipLayerNormalization kernel is 2-3x slower than the two standard
    ops (measured: hidden 384 x 1280 tokens 1.18 ms vs 0.43 ms; hidden 768 x 4096 tokens 7.0 ms vs 2.1 ms), which
    made it 13% of MiniLM's fp32 time and 30% of its int8 time.
    """
    nodes: list[onnx.NodeProto] = []
    split = 0
    for node in model.graph.node:
        outputs = [name for name in node.output if name]
        if node.op_type != "SkipLayerNormalization" or len(outputs) != 1:
            nodes.append(node)
            continue
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        x, skip, gamma, beta = node.input[:4]
        total = f"{node.name}/residual"
        nodes.append(helper.make_node("Add", [x, skip], [total], name=total))
        if len(node.input) > 4 and node.input[4]:
            nodes.append(helper.make_node("Add", [total, node.input[4]], [total + "_bias"], name=total + "_bias"))
            total += "_bias"
        nodes.append(
            helper.make_node(
                "LayerNormalization", [total, gamma, beta], [outputs[0]], name=node.name, axis=-1, epsilon=epsilon
            )
        )
        split += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return split


def _optimize(source: Path, shape: GraphShape, *, use_gpu: bool) -> Any:
    options = FusionOptions("bert")  # ONNX Runtime's BERT fusions cover RoBERTa, DistilBERT and ELECTRA graphs too
    # opt_level=0: fusions only, no onnxruntime graph rewrites baked into the file, so it stays portable.
    return optimizer.optimize_model(
        str(source),
        model_type="bert",
        num_heads=shape.num_heads,
        hidden_size=shape.hidden_size,
        optimization_options=options,
        opt_level=0,
        use_gpu=use_gpu,
    )


def fuse(source: Path, target: Path, shape: GraphShape) -> dict[str, int]:
    """fp32 fused graph for the CPU: fusions checked, then residual layer norms split (`split_skip_layernorm`)."""
    _optimize(source, shape, use_gpu=False).save_model_to_file(str(target))
    check_fusions(target, shape.num_layers, embedding_fused=shape.embedding_fused, skip_layernorm=True)
    model = onnx.load(str(target))
    split_skip_layernorm(model)
    onnx.save(model, str(target))
    return check_fusions(target, shape.num_layers, embedding_fused=shape.embedding_fused)


def to_fp16(source: Path, target: Path, shape: GraphShape) -> dict[str, int]:
    """fp16 weights and compute for the CUDA provider; inputs stay int64 and outputs float32."""
    model = _optimize(source, shape, use_gpu=True)
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(target))
    graph = onnx.load(str(target))
    floats = [t.name for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    if floats:
        raise ExportError(f"fp16 conversion left float32 weights {floats[:5]} in {target.name}")
    outputs = {o.name: o.type.tensor_type.elem_type for o in graph.graph.output}
    if any(kind != onnx.TensorProto.FLOAT for kind in outputs.values()):
        raise ExportError(f"fp16 graph outputs must stay float32, found {outputs}")
    return check_fusions(target, shape.num_layers, embedding_fused=shape.embedding_fused, skip_layernorm=True)

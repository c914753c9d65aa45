"""The projections int8 quantizes, found from the fused graph's structure rather than from node names.

qkv               the fused Attention's input projection (H -> 3H)
attention_output  the MatMul after attention (H -> H)
ffn_in            the MatMul that feeds Gelu (H -> I)
ffn_out           the MatMul that reads Gelu's output (I -> H)
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import onnx

from .errors import ExportError

__all__ = ["GELU_OPS", "GROUPS", "Target", "find_targets"]

GROUPS = ("qkv", "attention_output", "ffn_in", "ffn_out")
GELU_OPS = {"Gelu", "BiasGelu", "FastGelu"}


@dataclass(frozen=True)
class Target:
    """One quantizable node: which group and layer it is, its activation input and its weight."""

    node: str
    group: str
    layer: int
    activation: str
    weight: str


def find_targets(model: onnx.ModelProto, num_layers: int) -> list[Target]:
    """The four projections of every layer, in graph order; any other pattern is an error, not a partial int8."""
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    targets: list[Target] = []
    layer = -1
    for node in graph.node:
        if node.op_type == "Attention":
            layer += 1
            targets.append(Target(node.name, "qkv", layer, node.input[0], node.input[1]))
        elif node.op_type == "MatMul" and node.input[1] in weights and layer >= 0:
            source = producer.get(node.input[0])
            if source is not None and source.op_type == "Attention":
                group = "attention_output"
            elif any(user.op_type in GELU_OPS for user in consumers[node.output[0]]):
                group = "ffn_in"
            elif source is not None and source.op_type in GELU_OPS:
                group = "ffn_out"
            else:
                continue
            targets.append(Target(node.name, group, layer, node.input[0], node.input[1]))
    if len({t.node for t in targets}) != len(targets) or not all(t.node for t in targets):
        raise ExportError("int8 needs unique node names on the fused graph's projections")
    per_layer = collections.Counter((t.layer, t.group) for t in targets)
    if layer + 1 != num_layers or any(per_layer[(i, g)] != 1 for i in range(num_layers) for g in GROUPS):
        raise ExportError(
            f"int8 expects one {'/'.join(GROUPS)} projection per layer in the fused graph ({num_layers} layers); "
            f"found {dict(collections.Counter(t.group for t in targets))}"
        )
    return targets

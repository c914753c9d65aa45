"""Write a variant's padding-free twin: the same fused graph, fed per-token positions and a per-run attention mask.

ONNX Runtime's fused BERT graph already has the two hooks packing needs: EmbedLayerNormalization takes optional
`position_ids` (input 8), and Attention / QAttention take a 3D (B, T, T) mask where they took a per-row one. So the
twin adds `position_ids` (int64, B x T) and `packed_mask` (int32, B x T x T; 1 where token i may attend to token j)
and rewires those inputs; nothing else changes. Its weights stay in the variant's file: every large initializer is an
ONNX external-data reference (location, offset, length) into it, so the twin costs kilobytes, and the runtime opens
one session on it for both padded and packed runs (see runtime/packing.py).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from onnxbert.runtime.packing import PACKED_INPUTS

__all__ = ["packed_name", "write_packed"]

_MASK_INPUT = {"Attention": 3, "QAttention": 5}
_POSITION_INPUT = 8  # EmbedLayerNormalization's optional position_ids
_INLINE_BYTES = 1024  # smaller tensors stay in the twin: not worth an offset, and short byte strings repeat


def packed_name(graph: Path) -> Path:
    """model.onnx -> model.packed.onnx, model.int8.onnx -> model.int8.packed.onnx."""
    return graph.with_name(graph.name.removesuffix(".onnx") + ".packed.onnx")


def _share_weights(model: onnx.ModelProto, graph: Path) -> None:
    """Point every large raw initializer at its bytes inside `graph` (the file `model` was loaded from)."""
    data = graph.read_bytes()
    cursor = 0
    for tensor in model.graph.initializer:  # serialized in this order, so each search starts past the last hit
        raw = tensor.raw_data
        if len(raw) < _INLINE_BYTES:
            continue
        offset = data.find(raw, cursor)
        if offset < 0:
            offset = data.find(raw)  # any copy of the same bytes is the same tensor
        if offset < 0:
            raise ValueError(f"initializer {tensor.name} not found in {graph.name}")
        cursor = offset + len(raw)
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", graph.name), ("offset", str(offset)), ("length", str(len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value


def _rewire(model: onnx.ModelProto) -> str | None:
    """Feed positions and the 3D mask into the fused nodes; the reason when the graph lacks them, else None."""
    nodes = model.graph.node
    embed = [n for n in nodes if n.op_type == "EmbedLayerNormalization"]
    attention = [n for n in nodes if n.op_type in _MASK_INPUT]
    if len(embed) != 1 or not attention:
        return f"{len(embed)} EmbedLayerNormalization and {len(attention)} Attention nodes (needs 1 and >= 1)"
    if any(n.op_type == "MultiHeadAttention" for n in nodes):
        return "unfused MultiHeadAttention nodes take no 3D mask"
    if any(len(n.input) <= _MASK_INPUT[n.op_type] or not n.input[_MASK_INPUT[n.op_type]] for n in attention):
        return "an Attention node takes no mask"
    inputs = list(embed[0].input) + [""] * (_POSITION_INPUT + 1 - len(embed[0].input))
    if inputs[_POSITION_INPUT]:
        return "EmbedLayerNormalization already takes position_ids"
    inputs[_POSITION_INPUT] = "position_ids_int32"
    embed[0].ClearField("input")
    embed[0].input.extend(inputs)
    for node in attention:
        node.input[_MASK_INPUT[node.op_type]] = "packed_mask"
    cast = helper.make_node("Cast", ["position_ids"], ["position_ids_int32"], to=TensorProto.INT32)
    nodes.insert(0, cast)
    types = {"int64": TensorProto.INT64, "int32": TensorProto.INT32}
    shapes = {"position_ids": ["batch", "sequence"], "packed_mask": ["batch", "sequence", "sequence"]}
    for name, dtype in PACKED_INPUTS.items():
        model.graph.input.append(helper.make_tensor_value_info(name, types[dtype], shapes[name]))
    return None


def write_packed(graph: Path) -> Path | str:
    """Write `graph`'s packed twin beside it; returns its path, or why this graph cannot have one."""
    model = onnx.load(str(graph))
    reason = _rewire(model)
    if reason is not None:
        return reason
    _share_weights(model, graph)
    target = packed_name(graph)
    onnx.save(model, str(target))
    return target

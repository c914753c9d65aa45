"""Write a variant's padding-free twin: the same fused graph, fed per-token positions and a per-run attention mask.

ONNX Runtime's fused BERT graph already has the two hooks packing needs: EmbedLayerNormalization takes optional
`position_ids` (input 8; where embeddings stay unfused, the position table's Gather takes them), and Attention /
QAttention take a 3D (B, T, T) mask where they took a per-row one. So the twin adds `position_ids` (int64, B x T) and
`packed_mask` (int32, B x T x T; 1 where token i may attend to token j) and rewires those inputs; the nodes that
computed positions and masks from the inputs are dropped. Its weights stay in the variant's file: every large
initializer is an ONNX external-data reference (location, offset, length) into it, so the twin costs kilobytes, and
the runtime opens one session on it for both padded and packed runs (see runtime/packing.py).
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


def _position_gather(model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The Gather reading the position table where embeddings are unfused, if there is exactly one.

    It is the one Gather on a 2-D table not indexed by a graph input (word and token-type tables are indexed by
    input_ids / token_type_ids, or a Cast of them).
    """
    tables = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    inputs = {i.name for i in model.graph.input}
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    found = [
        n
        for n in model.graph.node
        if n.op_type == "Gather" and n.input[0] in tables and casts.get(n.input[1], n.input[1]) not in inputs
    ]
    return found[0] if len(found) == 1 else None


def _prune(model: onnx.ModelProto) -> None:
    """Drop the nodes (and initializers) nothing reads any more: the positions and masks the graph computed itself."""
    graph = model.graph
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(out in used for out in n.output if out)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)


def _rewire(model: onnx.ModelProto, position_offset: int) -> str | None:
    """Feed positions and the 3D mask into the graph; the reason when it cannot take them, else None.

    Positions go to EmbedLayerNormalization's input 8, or, where the embeddings stay unfused (RoBERTa), to the
    position table's Gather, replacing what the graph computed from input_ids; `position_offset` is added to them.
    """
    nodes = model.graph.node
    embed = [n for n in nodes if n.op_type == "EmbedLayerNormalization"]
    attention = [n for n in nodes if n.op_type in _MASK_INPUT]
    if len(embed) > 1 or not attention:
        return f"{len(embed)} EmbedLayerNormalization and {len(attention)} Attention nodes (needs <= 1 and >= 1)"
    if any(n.op_type == "MultiHeadAttention" for n in nodes):
        return "unfused MultiHeadAttention nodes take no 3D mask"
    if any(len(n.input) <= _MASK_INPUT[n.op_type] or not n.input[_MASK_INPUT[n.op_type]] for n in attention):
        return "an Attention node takes no mask"
    gather = None if embed else _position_gather(model)
    if not embed and gather is None:
        return "no EmbedLayerNormalization and no single position-table Gather"
    positions = "position_ids"
    added: list[onnx.NodeProto] = []
    if position_offset:
        offset = helper.make_tensor("position_offset", TensorProto.INT64, [], [position_offset])
        model.graph.initializer.append(offset)
        added.append(helper.make_node("Add", [positions, "position_offset"], ["position_ids_offset"]))
        positions = "position_ids_offset"
    if embed:
        inputs = list(embed[0].input) + [""] * (_POSITION_INPUT + 1 - len(embed[0].input))
        added.append(helper.make_node("Cast", [positions], ["position_ids_int32"], to=TensorProto.INT32))
        inputs[_POSITION_INPUT] = "position_ids_int32"  # DistilBERT's fused node had its own computed positions here
        embed[0].ClearField("input")
        embed[0].input.extend(inputs)
    elif gather is not None:
        gather.input[1] = positions
    for node in attention:
        node.input[_MASK_INPUT[node.op_type]] = "packed_mask"
    for index, node in enumerate(added):
        nodes.insert(index, node)
    types = {"int64": TensorProto.INT64, "int32": TensorProto.INT32}
    shapes = {"position_ids": ["batch", "sequence"], "packed_mask": ["batch", "sequence", "sequence"]}
    for name, dtype in PACKED_INPUTS.items():
        model.graph.input.append(helper.make_tensor_value_info(name, types[dtype], shapes[name]))
    _prune(model)
    return None


def write_packed(graph: Path, position_offset: int = 0) -> Path | str:
    """Write `graph`'s packed twin beside it; returns its path, or why this graph cannot have one."""
    model = onnx.load(str(graph))
    reason = _rewire(model, position_offset)
    if reason is not None:
        return reason
    _share_weights(model, graph)
    target = packed_name(graph)
    onnx.save(model, str(target))
    return target

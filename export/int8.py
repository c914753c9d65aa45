"""int8 for CPUs: each of a layer's four projections (export/targets.py) quantized one of four ways, as a recipe says.

Modes:
  fp32     left alone
  dynamic  ONNX Runtime's classic dynamic int8: one uint8 range per batch tensor, found at run time
  static   SmoothQuant: per-channel activation ranges measured on calibration text, partly migrated into the
           weights (strength `alpha`), then one static range per tensor; costs one Mul + QuantizeLinear
  rows     one range per token, found at run time (ReduceMax/ReduceMin + blocked QuantizeLinear), output rescaled
A recipe may also keep ffn_in's largest input channel(s) in fp32 (`fp32_channels`): LayerNorm's output has a few
channels far larger than the rest (MiniLM: a peak of ~30 against a median of ~1.7), and they set the static range;
computed exactly beside the int8 MatMul (Gather, Mul, Add), they leave the range to the other channels.
Weights are int8, symmetric, one scale per output column, in every mode. A recipe may keep each pair of adjacent
weight rows within |w[2i] + w[2i + 1]| <= 128 (`weight_pair_limit`, runtime.session.PAIR_SUM_LIMIT): then the u8 x s8
kernels of CPUs without VNNI, which add each two products into 16 bits, cannot saturate, and the runtime runs such a
graph there on them without its exact-but-slower safeguard. 7-bit weights (`weight_levels=64`, ONNX Runtime's
reduce_range idea) meet the bound too, with twice the rounding error (MiniLM top-10 0.956 against 0.968 pair-safe).

Why modes per group (all-MiniLM-L6-v2 against fp32, the 2,910 STS-B dev sentences): a few tokens ([CLS], [SEP],
punctuation) carry far larger activations than the rest, so one range per batch tensor leaves ordinary tokens few
int8 levels (mean cosine 0.9934, top-10 neighbours 0.910). Static smoothed ranges cost nothing at run time and suit
the LayerNorm-fed projections; after attention and Gelu the range swings from token to token, and per-token ranges
there take it to 0.9992 / 0.966 for a few percent of speed. Clipping the static ranges (say to 80% of the calibrated
peak) is far worse (0.984 / 0.85): the outlier tokens matter.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from .calibration import Calibration, round_columns
from .errors import ExportError
from .targets import GROUPS, Target

__all__ = ["MODES", "Recipe", "expected_counts", "quantize"]

Float32Array = npt.NDArray[np.float32]

MODES = ("fp32", "dynamic", "static", "rows")
_MS = "com.microsoft"
_ROWS_OPSET = 21  # QuantizeLinear with block_size: one scale per token
_GELU_MIN = 0.17  # erf Gelu's minimum is -0.16997
_GELU_ZERO = 16  # uint8 zero point for Gelu's output
_SIDE_INPUTS = "/int8/fp32_inputs"  # the Gather of a target's fp32 channels


@dataclass(frozen=True)
class Recipe:
    """How each group is quantized, the SmoothQuant strength, and whole layers or single projections left in fp32."""

    name: str
    modes: Mapping[str, str]
    alpha: float = 0.8
    fp32_layers: tuple[int, ...] = ()
    fp32_groups: tuple[tuple[int, str], ...] = ()  # (layer, group)
    weight_levels: int = 127  # 64: 7-bit weights
    fp32_channels: int = 0  # static ffn_in: its k largest input channels (by calibration peak) computed in fp32
    weight_pair_limit: int | None = None  # PAIR_SUM_LIMIT: each |w[2i] + w[2i + 1]| within it, per column

    def __post_init__(self) -> None:
        if set(self.modes) != set(GROUPS) or not set(self.modes.values()) <= set(MODES):
            raise ValueError(f"recipe {self.name!r} must give each of {GROUPS} one of {MODES}, got {dict(self.modes)}")
        if not 1 <= self.weight_levels <= 127:
            raise ValueError(f"recipe {self.name!r}: weight_levels={self.weight_levels} must be within 1..127")
        pairs, widest = self.weight_pair_limit, 2 * self.weight_levels
        if pairs is not None and not 1 <= pairs <= widest:
            raise ValueError(f"recipe {self.name!r}: weight_pair_limit={pairs} must be within 1..{widest}")
        if not 0 <= self.fp32_channels <= 16:
            raise ValueError(f"recipe {self.name!r}: fp32_channels={self.fp32_channels} must be within 0..16")
        if self.modes["qkv"] == "rows":
            raise ValueError("qkv cannot use 'rows': the fused Attention takes one input range (QAttention)")

    def mode(self, target: Target) -> str:
        """The mode for one target node."""
        if target.layer in self.fp32_layers or (target.layer, target.group) in self.fp32_groups:
            return "fp32"
        return self.modes[target.group]

    def describe(self) -> dict[str, Any]:
        """The manifest's record of this recipe."""
        return {
            "name": self.name,
            "groups": dict(self.modes),
            "smoothquant_alpha": self.alpha,
            "fp32_layers": list(self.fp32_layers),
            "fp32_groups": [[layer, group] for layer, group in self.fp32_groups],
            "weight_levels": self.weight_levels,  # the runtime reads both: either may make the safeguard needless
            "weight_pair_limit": self.weight_pair_limit,
            "fp32_channels": self.fp32_channels,
            "weights": f"int8 symmetric in [-{self.weight_levels}, {self.weight_levels}], per output column, GPTQ "
            "rounding on the calibration text"
            + (f"; each |w[2i] + w[2i + 1]| <= {self.weight_pair_limit}" if self.weight_pair_limit else ""),
        }


def expected_counts(recipe: Recipe, targets: list[Target]) -> dict[str, int]:
    """How many QAttention and MatMulIntegerToFloat nodes the recipe's graph holds, and how many targets stay fp32.

    `fp32_channels`: how many targets compute their largest input channels in fp32 beside the int8 MatMul.
    """
    counts = {"QAttention": 0, "MatMulIntegerToFloat": 0, "fp32": 0, "fp32_channels": 0}
    for target in targets:
        mode = recipe.mode(target)
        if mode == "fp32":
            counts["fp32"] += 1
        else:
            counts["QAttention" if target.group == "qkv" else "MatMulIntegerToFloat"] += 1
        counts["fp32_channels"] += int(bool(recipe.fp32_channels) and mode == "static" and target.group == "ffn_in")
    return counts


class _Rewrite:
    """The node list being built and the initializers it adds."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.nodes: list[onnx.NodeProto] = []
        self.weights = {init.name: init for init in model.graph.initializer}

    def const(self, name: str, value: Any) -> str:
        if name not in self.weights:
            tensor = numpy_helper.from_array(np.asarray(value), name)
            self.model.graph.initializer.append(tensor)
            self.weights[name] = tensor
        return name

    def add(self, op: str, inputs: list[str], outputs: list[str], domain: str = "", **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, domain=domain or None, **attrs))

    def array(self, name: str) -> Float32Array:
        value: Float32Array = numpy_helper.to_array(self.weights[name]).astype(np.float32)
        return value


def _smoothing(peak: Float32Array, weight: Float32Array, alpha: float) -> Float32Array:
    """SmoothQuant's per-input-channel factor: activations divided by it, weight rows multiplied by it."""
    rows = np.maximum(np.abs(weight).max(axis=1), 1e-5)  # (K,)
    factor: Float32Array = (np.maximum(peak, 1e-5) ** alpha / rows ** (1 - alpha)).astype(np.float32)
    return factor


def _static_step(peak: Float32Array, weight: Float32Array, alpha: float) -> Float32Array:
    """One int8 level of the activation, per input channel: smoothed, then one range for the whole tensor."""
    smooth = _smoothing(peak, weight, alpha)
    step: Float32Array = (smooth * float((peak / smooth).max()) / 127.0).astype(np.float32)
    return step


@dataclass(frozen=True)
class _Plan:
    """Per quantized target: its mode, its static step, and whether that step is already divided out upstream."""

    mode: str
    step: Float32Array | None = None  # inf on an fp32 channel: its int8 level is 0
    fp32_channels: npt.NDArray[np.int64] | None = None  # input channels computed in fp32 beside the int8 MatMul
    prescaled: bool = False  # attention output whose step was folded into the layer's V projection
    v_divide: Float32Array | None = None  # qkv: divide the V projection (weight columns and bias) by this


def _plans(rw: _Rewrite, recipe: Recipe, targets: list[Target], peaks: Mapping[str, Float32Array]) -> dict[str, _Plan]:
    plans: dict[str, _Plan] = {}
    for target in targets:
        mode = recipe.mode(target)
        if mode == "static" and target.activation not in peaks:
            raise ExportError(f"static int8 for {target.node} needs calibration ranges")
        step = channels = None
        if mode == "static":
            peak, weight = peaks[target.activation], rw.array(target.weight)
            if recipe.fp32_channels and target.group == "ffn_in":
                channels = np.sort(np.argsort(-peak, kind="stable")[: recipe.fp32_channels]).astype(np.int64)
                rest = np.setdiff1d(np.arange(len(peak)), channels)
                step = np.full(len(peak), np.inf, dtype=np.float32)
                step[rest] = _static_step(peak[rest], weight[rest], recipe.alpha)
            else:
                step = _static_step(peak, weight, recipe.alpha)
        plans[target.node] = _Plan(mode, step, channels)
    # Attention output is V mixed by softmax weights, so dividing V's channels by the output's static step gives
    # the pre-scaled tensor for free: the Mul before QuantizeLinear disappears.
    qkv = {t.layer: t for t in targets if t.group == "qkv"}
    for target in targets:
        plan = plans[target.node]
        source = qkv[target.layer].node
        if target.group == "attention_output" and plan.mode == "static" and plans[source].mode != "fp32":
            plans[target.node] = replace(plan, prescaled=True)
            plans[source] = replace(plans[source], v_divide=plan.step)
    return plans


def _quantize_activation(rw: _Rewrite, target: Target, plan: _Plan) -> tuple[list[str], str | None]:
    """Emit the activation's quantization; returns (xq, x_scale, x_zero_point) and a per-row scale for rows."""
    p = f"{target.node}/int8/"
    x = target.activation
    if plan.mode == "dynamic":
        rw.add("DynamicQuantizeLinear", [x], [p + "x_q", p + "x_scale", p + "x_zero"])
        return [p + "x_q", p + "x_scale", p + "x_zero"], None
    one, zero = rw.const("int8/one", np.float32(1.0)), rw.const("int8/zero_point", np.uint8(128))
    if plan.mode == "static":
        if plan.step is None:
            raise ExportError(f"static int8 for {target.node} has no calibrated step")
        if not plan.prescaled:
            rw.add("Mul", [x, rw.const(p + "inverse_step", (1.0 / plan.step).astype(np.float32))], [p + "x_levels"])
            x = p + "x_levels"
        rw.add("QuantizeLinear", [x, one, zero], [p + "x_q"])
        return [p + "x_q", one, zero], None
    axis = rw.const("int8/last_axis", np.array([-1], np.int64))
    rw.add("ReduceMax", [x, axis], [p + "max"], keepdims=1)  # rows: one range per token
    if target.group == "ffn_out":
        # Gelu's output never goes below -0.17: 16 of the 256 levels cover [-0.17, 0) and the other 239 the
        # positive side, almost twice the resolution of a range symmetric around zero (127 levels a side).
        rw.add("Mul", [p + "max", rw.const("int8/gelu_levels", np.float32(1 / (255 - _GELU_ZERO)))], [p + "up"])
        rw.add("Max", [p + "up", rw.const("int8/gelu_floor", np.float32(_GELU_MIN / _GELU_ZERO))], [p + "row_scale"])
        zero_point = _GELU_ZERO
    else:
        rw.add("ReduceMin", [x, axis], [p + "min"], keepdims=1)
        rw.add("Neg", [p + "min"], [p + "neg_min"])
        rw.add("Max", [p + "max", p + "neg_min", rw.const("int8/tiny", np.float32(1e-6))], [p + "peak"])
        rw.add("Mul", [p + "peak", rw.const("int8/one_level", np.float32(1 / 127.0))], [p + "row_scale"])
        zero_point = 128
    rw.add("Mul", [p + "row_scale", rw.const("int8/zero_float", np.float32(0.0))], [p + "zeros"])  # (B, T, 1)
    rw.add("Add", [p + "zeros", rw.const(f"int8/zero_{zero_point}", np.float32(zero_point))], [p + "mids"])
    rw.add("Cast", [p + "mids"], [p + "row_zero"], to=TensorProto.UINT8)  # zero point shaped like the scale
    width = int(rw.weights[target.weight].dims[0])
    rw.add("QuantizeLinear", [x, p + "row_scale", p + "row_zero"], [p + "x_q"], axis=-1, block_size=width)
    return [p + "x_q", one, rw.const(f"int8/zero_point_{zero_point}", np.uint8(zero_point))], p + "row_scale"


# (node, mode, SmoothQuant alpha for static, weight levels, pair limit, fp32 channels) -> (w_q, scale)
_WeightCache = dict[tuple[str, str, float | None, int, int | None, int], tuple[npt.NDArray[np.int8], Float32Array]]


def _weights(
    rw: _Rewrite, target: Target, plan: _Plan, recipe: Recipe, calibration: Calibration, cache: _WeightCache
) -> tuple[npt.NDArray[np.int8], Float32Array]:
    """The int8 weight and its column scales as this plan's activation sees them (static: in activation levels)."""
    alpha = recipe.alpha if plan.step is not None else None  # a static step depends on alpha
    side = 0 if plan.fp32_channels is None else len(plan.fp32_channels)
    key = (target.node, plan.mode, alpha, recipe.weight_levels, recipe.weight_pair_limit, side)
    if key not in cache:
        weight, moment = rw.array(target.weight), calibration.moments.get(target.activation)
        if plan.step is not None:
            finite = np.isfinite(plan.step)  # fp32 channels: no int8 weight row, no part in GPTQ's moments
            step = np.where(finite, plan.step, 1.0)
            weight = np.where(finite[:, None], weight * step[:, None], 0.0).astype(np.float32)
            if moment is not None:
                moment = (moment / step[:, None] / step[None, :] * finite[:, None] * finite[None, :]).astype(np.float32)
        cache[key] = round_columns(weight, moment, levels=recipe.weight_levels, pair_limit=recipe.weight_pair_limit)
    w_q, w_scale = cache[key]
    return w_q, w_scale.copy()


def _rewrite(
    rw: _Rewrite,
    node: onnx.NodeProto,
    target: Target,
    plan: _Plan,
    recipe: Recipe,
    calibration: Calibration,
    cache: _WeightCache,
) -> None:
    (x_q, x_scale, x_zero), row_scale = _quantize_activation(rw, target, plan)
    w_q, w_scale = _weights(rw, target, plan, recipe, calibration, cache)
    p = f"{target.node}/int8/"
    if target.group == "qkv":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if set(attrs) - {"num_heads", "unidirectional"}:
            raise ExportError(f"{node.name} has Attention attributes QAttention lacks: {sorted(attrs)}")
        bias = node.input[2]
        if plan.v_divide is not None:
            width = plan.v_divide.shape[0]  # (H,): the V block is the last third of the packed projection
            w_scale[-width:] /= plan.v_divide
            values = rw.array(bias).copy()
            values[-width:] /= plan.v_divide
            bias = rw.const(p + "bias", values)
        w_q_name, w_scale_name = rw.const(p + "w_q", w_q), rw.const(p + "w_scale", w_scale)
        inputs = [x_q, w_q_name, bias, x_scale, w_scale_name, node.input[3], x_zero]
        rw.add("QAttention", inputs, list(node.output), domain=_MS, name=node.name + "/int8", **attrs)
        return
    w_q_name, w_scale_name = rw.const(p + "w_q", w_q), rw.const(p + "w_scale", w_scale)
    side = plan.fp32_channels
    out = p + "unscaled" if row_scale else p + "int8_part" if side is not None else node.output[0]
    rw.add("MatMulIntegerToFloat", [x_q, w_q_name, x_scale, w_scale_name, x_zero], [out], domain=_MS)
    if row_scale:
        rw.add("Mul", [out, row_scale], [node.output[0]])
    if side is not None:  # static only, so no row scale: the int8 part plus the fp32 channels' exact part
        rows = rw.array(target.weight)[side]  # (k, N)
        side_inputs = target.node + _SIDE_INPUTS
        rw.add("Gather", [target.activation, rw.const(p + "fp32_channels", side)], [side_inputs], axis=-1)
        if len(side) == 1:  # (B, T, 1) x (N,): a broadcast Mul, cheaper than a MatMul with K = 1
            rw.add("Mul", [side_inputs, rw.const(p + "fp32_rows", rows[0])], [p + "fp32_part"])
        else:
            rw.add("MatMul", [side_inputs, rw.const(p + "fp32_rows", rows)], [p + "fp32_part"])
        rw.add("Add", [out, p + "fp32_part"], [node.output[0]])


def quantize(
    source: Path,
    target_path: Path,
    recipe: Recipe,
    targets: list[Target],
    calibration: Calibration,
    cache: _WeightCache | None = None,
) -> dict[str, int]:
    """Write the recipe's int8 graph; its operator counts are checked against the recipe before returning.

    `cache` keeps rounded weights between calls (GPTQ rounding costs seconds; candidates share most of them).
    """
    cache = {} if cache is None else cache
    model = onnx.load(str(source))
    rw = _Rewrite(model)
    by_name = {t.node: t for t in targets}
    plans = _plans(rw, recipe, targets, calibration.peaks)
    for node in model.graph.node:
        target = by_name.get(node.name)
        if target is None or plans[target.node].mode == "fp32":
            rw.nodes.append(node)
        else:
            _rewrite(rw, node, target, plans[target.node], recipe, calibration, cache)
    del model.graph.node[:]
    model.graph.node.extend(_gelu_bias_into_matmul(rw.nodes))
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]  # the float weights now replaced
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    if any(recipe.mode(t) == "rows" for t in targets):
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, _ROWS_OPSET)
    onnx.save(model, str(target_path))
    counts = collections.Counter(node.op_type for node in model.graph.node)
    by_node = {node.name: node.op_type for node in model.graph.node}
    fp32 = [t for t in targets if recipe.mode(t) == "fp32" and by_node.get(t.node) in ("Attention", "MatMul")]
    side = sum(node.op_type == "Gather" and node.output[0].endswith(_SIDE_INPUTS) for node in model.graph.node)
    found = {op: counts[op] for op in ("QAttention", "MatMulIntegerToFloat")}
    found |= {"fp32": len(fp32), "fp32_channels": side}
    wanted = expected_counts(recipe, targets)
    if found != wanted:
        raise ExportError(f"int8 recipe {recipe.name!r} produced {found}, expected {wanted}")
    if recipe.weight_pair_limit is not None:
        _check_pairs(model, recipe.weight_pair_limit)
    return dict(counts)


def _gelu_bias_into_matmul(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """BiasGelu after an int8 MatMul becomes the MatMul's own bias input and a plain Gelu.

    The same arithmetic up to float rounding (the bias joins before the exact channels' Add, not after it), but
    onnxruntime 1.32's BiasGelu kernel runs ~3x slower than its Gelu on the int8 MatMul's output. A row-scaled MatMul
    (`rows`) feeds a Mul, not the BiasGelu, and keeps it: its bias must come after the scale.
    """
    producer = {name: node for node in nodes for name in node.output}
    readers = collections.Counter(name for node in nodes for name in node.input)
    kept: list[onnx.NodeProto] = []
    for node in nodes:
        source = producer.get(node.input[0]) if node.op_type == "BiasGelu" else None
        matmul = producer.get(source.input[0]) if source is not None and source.op_type == "Add" else source
        if (
            source is None
            or matmul is None
            or matmul.op_type != "MatMulIntegerToFloat"
            or len(matmul.input) > 5  # a weight zero point or bias of its own
            or readers[matmul.output[0]] != 1
            or readers[source.output[0]] != 1
        ):
            kept.append(node)
            continue
        matmul.input.extend(["", node.input[1]])  # no weight zero point; the bias
        kept.append(helper.make_node("Gelu", [node.input[0]], list(node.output), domain=_MS, name=node.name))
    return kept


def _check_pairs(model: onnx.ModelProto, limit: int) -> None:
    """Every int8 weight keeps |w[2i] + w[2i + 1]| <= limit: the runtime drops its safeguard on that promise."""
    for init in model.graph.initializer:
        if init.data_type != TensorProto.INT8 or len(init.dims) != 2:
            continue
        weight = numpy_helper.to_array(init).astype(np.int32)
        even = len(weight) - len(weight) % 2
        widest = int(np.abs(weight[0:even:2] + weight[1:even:2]).max(initial=0))
        if widest > limit:
            raise ExportError(f"{init.name}: a weight pair sums to {widest}, over the recipe's limit {limit}")

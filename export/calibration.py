"""What int8 learns from calibration text: activation ranges per channel, and second moments for weight rounding.

GPTQ-style rounding (Frantar et al., 2022): weights are rounded one input channel at a time, each rounding error
pushed onto the channels not yet rounded, weighted by the calibration inputs' second moments H = sum x x^T. On
all-MiniLM-L6-v2 (`static+rows`) it lifts top-10 agreement 0.966 -> 0.971 over round-to-nearest, at no run-time cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from onnxbert.runtime.packing import plan_layouts
from onnxbert.runtime.session import Provider, create_session
from onnxbert.runtime.tokenize import Tokenized

from .targets import Target

__all__ = ["Calibration", "calibrate", "round_columns"]

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Calibration:
    """Per activation tensor: max |x| per channel (K,) and the second moments sum x x^T (K, K), real tokens only."""

    peaks: dict[str, Float32Array]
    moments: dict[str, Float32Array]


def calibrate(fused: Path, targets: list[Target], tokens: Tokenized, pad_id: int) -> Calibration:
    """Run the fp32 graph on the calibration text with every quantized node's input as an extra output."""
    model = onnx.load(str(fused))
    names = sorted({t.activation for t in targets})
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names)
    session = create_session(
        model.SerializeToString(), provider=Provider.CPU, threads=None, memory_arena=True, spinning=False
    )
    wanted = {i.name for i in session.get_inputs()}
    peaks: dict[str, Float32Array] = {}
    moments: dict[str, Float32Array] = {}
    # The runtime's own padded batches (one text per row): what the Encoder feeds an unpacked graph.
    for run in plan_layouts(
        tokens, packed=False, packing_inputs=False, max_batch_tokens=8192, max_batch_size=32, pad_id=pad_id
    ):
        outputs = dict(zip(names, session.run(names, {k: v for k, v in run.feeds.items() if k in wanted}), strict=True))
        real = run.feeds["attention_mask"].astype(bool)  # (B, T)
        for name in names:
            x = outputs[name][real]  # (tokens, K)
            peak, moment = np.abs(x).max(axis=0), x.T @ x
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
            moments[name] = moments[name] + moment if name in moments else moment
    return Calibration(peaks, moments)


def round_columns(
    weight: Float32Array,
    moment: Float32Array | None,
    *,
    damping: float = 0.1,
    block: int = 128,
    levels: int = 127,
    pair_limit: int | None = None,
) -> tuple[npt.NDArray[np.int8], Float32Array]:
    """int8 weights (K, N) in [-levels, levels] with one symmetric scale per output column (N,).

    GPTQ rounding when `moment` is given; round-to-nearest otherwise. `pair_limit`: every pair of rows (2i, 2i + 1)
    also keeps |w[2i] + w[2i + 1]| <= pair_limit in each column. A column's scale grows until its largest pair fits,
    and a pair that GPTQ's pushed errors would still take over is held at the limit. Clamping alone, at the column's
    own scale, moves ~1% of MiniLM's weights by tens of levels (top-10 0.974 -> 0.923); the wider scale costs ~0.001.
    """
    scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / levels  # (N,), fixed before any error is pushed
    if pair_limit is not None and len(weight) > 1:
        even = len(weight) - len(weight) % 2
        widest = np.abs(weight[0:even:2] + weight[1:even:2]).max(axis=0)
        scale = np.maximum(scale, widest / (pair_limit - 0.5))  # rounding cannot take the widest pair over
    if moment is None:
        plain = np.clip(np.round(weight / scale), -levels, levels)
        return _pairs_within(plain, pair_limit).astype(np.int8), scale.astype(np.float32)
    w = weight.astype(np.float64)
    h = moment.astype(np.float64)
    dead = np.diag(h) == 0  # channels never active in calibration: nothing to learn, keep their rounding plain
    h[dead, dead] = 1.0
    h += damping * float(np.mean(np.diag(h))) * np.eye(len(h))
    lower = np.linalg.cholesky(h)
    inverse = np.linalg.inv(lower)
    upper = np.linalg.cholesky(inverse.T @ inverse).T  # H^-1 = U^T U, U upper triangular
    rounded = np.empty_like(w)
    for start in range(0, len(w), block):
        stop = min(start + block, len(w))
        part, errors, u = w[start:stop].copy(), np.zeros((stop - start, w.shape[1])), upper[start:stop, start:stop]
        for i in range(stop - start):
            level = np.clip(np.round(part[i] / scale), -levels, levels)
            if pair_limit is not None and (start + i) % 2 == 1:
                first = np.round(rounded[start + i - 1] / scale)
                level = np.clip(level, -pair_limit - first, pair_limit - first)
            rounded[start + i] = level * scale
            errors[i] = (part[i] - rounded[start + i]) / u[i, i]
            part[i:] -= np.outer(u[i, i:], errors[i])
        w[stop:] -= upper[start:stop, stop:].T @ errors
    return np.round(rounded / scale).astype(np.int8), scale.astype(np.float32)


def _pairs_within(levels: npt.NDArray[np.float64], limit: int | None) -> npt.NDArray[np.float64]:
    """Hold each odd row so that |row 2i + row 2i+1| <= limit (rounding-to-nearest's counterpart of the GPTQ clamp)."""
    if limit is None:
        return levels
    odd = len(levels) // 2
    first = levels[0 : 2 * odd : 2]
    levels[1 : 2 * odd : 2] = np.clip(levels[1 : 2 * odd : 2], -limit - first, limit - first)
    return levels

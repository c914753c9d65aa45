"""Choose the fastest int8 recipe that meets a quality budget, measured on held-out real text against fp32.

Calibration text is STS-B train; the gate judges on STS-B dev (sentences never seen in calibration). Candidates
are tried fastest first; when none of the fixed recipes passes, a per-layer sensitivity pass finds which layers cost
the most quality and leaves them in fp32, one more at a time. No recipe within budget is an error with every
candidate's figures: never a silent fallback to fp32 or to a weaker recipe.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from onnxbert.runtime.pooling import Pooling
from onnxbert.runtime.tokenize import TextTokenizer, Tokenized

from .errors import ExportError, VerificationError
from .graphrun import embed
from .int8 import GROUPS, Recipe, Target, calibrate, find_targets, quantize
from .sts import StsPairs, sts_pairs, unique_sentences
from .verify import spearman, top_k_agreement

if TYPE_CHECKING:
    from .pipeline import Progress

__all__ = ["BUDGETS", "LADDER", "Int8Budget", "choose_int8", "parse_recipe"]

CALIBRATION_SENTENCES = 512
EVALUATION_PAIRS = 500


@dataclass(frozen=True)
class Int8Budget:
    """The least int8 must keep of fp32, on the gate's text: mean cosine, top-10 neighbours, STS-B Spearman."""

    min_mean_cosine: float = 0.998
    min_top10: float = 0.97
    max_spearman_drop: float = 0.005

    @classmethod
    def parse(cls, value: str | Int8Budget) -> Int8Budget:
        """A preset name (strict, balanced, any) or 'cos=0.998,top10=0.97,spearman=0.005' (any subset)."""
        if isinstance(value, Int8Budget):
            return value
        text = str(value).strip()
        if text in BUDGETS:
            return BUDGETS[text]
        keys = {"cos": "min_mean_cosine", "top10": "min_top10", "spearman": "max_spearman_drop"}
        fields: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, number = part.partition("=")
            try:
                fields[keys[key.strip()]] = float(number)
            except (KeyError, ValueError):
                raise ExportError(
                    f"int8 quality {value!r} not understood: give a preset ({', '.join(BUDGETS)}) or "
                    "'cos=0.998,top10=0.97,spearman=0.005' (any of the three)"
                ) from None
        if not fields:
            raise ExportError(f"int8 quality {value!r} is empty; presets: {', '.join(BUDGETS)}")
        return replace(cls(), **fields)

    def failures(self, figures: dict[str, Any]) -> list[str]:
        """Each way `figures` misses the budget, in words."""
        found = []
        if figures["mean_cosine"] < self.min_mean_cosine:
            found.append(f"mean_cosine={figures['mean_cosine']:.5f} (needs >= {self.min_mean_cosine})")
        if figures["top10_agreement"] < self.min_top10:
            found.append(f"top10_agreement={figures['top10_agreement']:.3f} (needs >= {self.min_top10})")
        if figures["spearman_drop"] > self.max_spearman_drop:
            found.append(f"spearman_drop={figures['spearman_drop']:.4f} (needs <= {self.max_spearman_drop})")
        return found

    def describe(self) -> dict[str, float]:
        """The manifest's record of the budget."""
        return {
            "min_mean_cosine": self.min_mean_cosine,
            "min_top10": self.min_top10,
            "max_spearman_drop": self.max_spearman_drop,
        }


BUDGETS = {
    "strict": Int8Budget(),
    "balanced": Int8Budget(min_mean_cosine=0.995, min_top10=0.93, max_spearman_drop=0.01),
    "any": Int8Budget(min_mean_cosine=-1.0, min_top10=0.0, max_spearman_drop=math.inf),  # fastest, figures recorded
}


def _all(mode: str) -> dict[str, str]:
    return dict.fromkeys(GROUPS, mode)


# Fastest first (all-MiniLM-L6-v2, 2 threads, speed vs the fp32 graph; quality vs fp32 on 1000 STS-B dev sentences):
#   dynamic             2.3x  cos 0.9940  top10 0.93
#   static              2.3x  cos 0.9979  top10 0.96
#   static+rows         2.2x  cos 0.9989  top10 0.97
#   rows                ~1.8x cos 0.9990  top10 0.97
LADDER = (
    Recipe("dynamic", _all("dynamic")),
    Recipe("static", _all("static")),
    Recipe("static+rows", {**_all("static"), "ffn_out": "rows"}),
    Recipe("rows", {**_all("rows"), "qkv": "static"}),
)
_RECIPES = {recipe.name: recipe for recipe in LADDER}


def parse_recipe(value: str) -> str:
    """'auto' or one of the ladder's recipe names."""
    if value != "auto" and value not in _RECIPES:
        raise ExportError(f"int8 recipe {value!r} not understood; choose auto or one of {', '.join(_RECIPES)}")
    return value


@dataclass(frozen=True)
class _Judge:
    """fp32's vectors and STS-B Spearman on the gate's text, to judge candidates against."""

    tokens: Tokenized
    pad_id: int
    pooling: Pooling
    pairs: StsPairs
    rows: tuple[list[int], list[int]]  # each pair's left / right sentence row
    reference: np.ndarray
    reference_spearman: float
    reference_seconds: float

    def measure(self, graph: Path) -> dict[str, Any]:
        vectors, seconds = embed(graph, self.tokens, self.pad_id, self.pooling)
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        cosines = (unit * self.reference).sum(axis=1)
        left, right = unit[self.rows[0]], unit[self.rows[1]]
        score = spearman((left * right).sum(axis=1), self.pairs.scores)
        return {
            "texts": len(self.tokens.ids),
            "pairs": len(self.pairs.scores),
            "mean_cosine": float(cosines.mean()),
            "min_cosine": float(cosines.min()),
            "top10_agreement": top_k_agreement(unit, self.reference),
            "spearman": score,
            "spearman_fp32": self.reference_spearman,
            "spearman_drop": self.reference_spearman - score,
            "seconds": seconds,
            "speed_vs_fp32": self.reference_seconds / seconds,
        }


def _judge(fused: Path, tokenizer: TextTokenizer, pad_id: int, pooling: Pooling) -> _Judge:
    pairs = sts_pairs("dev").head(EVALUATION_PAIRS)
    sentences = unique_sentences(pairs)
    row = {text: i for i, text in enumerate(sentences)}
    rows = ([row[s] for s in pairs.left], [row[s] for s in pairs.right])
    tokens = tokenizer.encode(sentences)
    vectors, seconds = embed(fused, tokens, pad_id, pooling)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    score = spearman((unit[rows[0]] * unit[rows[1]]).sum(axis=1), pairs.scores)
    return _Judge(tokens, pad_id, pooling, pairs, rows, unit, score, seconds)


def _line(name: str, figures: dict[str, Any]) -> str:
    status = "pass" if figures["passed"] else "miss"
    return (
        f"int8 {name}: cos {figures['mean_cosine']:.5f}, top10 {figures['top10_agreement']:.3f}, "
        f"Spearman -{figures['spearman_drop']:.4f}, {figures['speed_vs_fp32']:.2f}x fp32 [{status}]"
    )


@dataclass
class _Search:
    """Candidates tried so far, each judged against the budget."""

    fused: Path
    scratch: Path
    targets: list[Target]
    peaks: dict[str, np.ndarray]
    judge: _Judge
    budget: Int8Budget
    say: Progress
    tried: dict[str, dict[str, Any]]

    def trial(self, recipe: Recipe) -> tuple[bool, Path, dict[str, int]]:
        graph = self.scratch / f"{len(self.tried)}.onnx"
        counts = quantize(self.fused, graph, recipe, self.targets, self.peaks)
        figures = self.judge.measure(graph)
        figures["failures"] = self.budget.failures(figures)
        figures["passed"] = not figures["failures"]
        self.tried[recipe.name] = figures
        self.say.say(_line(recipe.name, figures))
        return figures["passed"], graph, counts

    def by_sensitivity(self, base: Recipe, layers: int) -> list[int]:
        """Layers ordered by how much quality leaving each one alone in fp32 restores, most first."""
        gains = []
        for layer in range(layers):
            probe = replace(base, name=f"{base.name}, probe layer {layer} fp32", fp32_layers=(layer,))
            self.trial(probe)
            gains.append(self.tried[probe.name]["mean_cosine"])
        return [int(i) for i in np.argsort(gains)[::-1]]


def _recipe_record(recipe: Recipe, search: _Search, counts: dict[str, int], calibration: int) -> dict[str, Any]:
    fp32_nodes = [t.node for t in search.targets if recipe.mode(t) == "fp32"]
    return {
        "method": "int8",
        **recipe.describe(),
        "excluded_nodes": fp32_nodes,
        "budget": search.budget.describe(),
        "gate": search.tried[recipe.name],
        "candidates": {name: figures for name, figures in search.tried.items() if name != recipe.name},
        "calibration": {"text": "STS-B train", "sentences": calibration},
        "evaluation": {"text": "STS-B dev", "sentences": search.judge.tokens.lengths.size, "pairs": EVALUATION_PAIRS},
        "int8_ops": {op: counts.get(op, 0) for op in ("QAttention", "MatMulIntegerToFloat")},
    }


def choose_int8(
    fused: Path,
    target: Path,
    *,
    num_layers: int,
    tokenizer_path: Path,
    max_length: int,
    pad_id: int,
    pooling: Pooling,
    budget: Int8Budget,
    recipe: str,
    say: Progress,
) -> dict[str, Any]:
    """Write the fastest recipe within `budget` to `target` and return its manifest record."""
    targets = find_targets(onnx.load(str(fused), load_external_data=False), num_layers)
    tokenizer = TextTokenizer(tokenizer_path, max_length=max_length)
    calibration = unique_sentences(sts_pairs("train"), CALIBRATION_SENTENCES)
    with say.step(f"int8: calibrating on {len(calibration)} STS-B train sentences"):
        peaks = calibrate(fused, targets, tokenizer.encode(calibration), pad_id)
        judge = _judge(fused, tokenizer, pad_id, pooling)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        search = _Search(fused, Path(scratch), targets, peaks, judge, budget, say, {})
        ladder = list(LADDER) if recipe == "auto" else [_RECIPES[recipe]]
        for candidate in ladder:
            passed, graph, counts = search.trial(candidate)
            if passed:
                shutil.move(graph, target)
                return _recipe_record(candidate, search, counts, len(calibration))
        if recipe == "auto":
            base = LADDER[-1]
            order = search.by_sensitivity(base, num_layers)
            for count in range(1, num_layers):
                kept = tuple(sorted(order[:count]))
                candidate = replace(base, name=f"{base.name}, layers {list(kept)} fp32", fp32_layers=kept)
                passed, graph, counts = search.trial(candidate)
                if passed:
                    shutil.move(graph, target)
                    return _recipe_record(candidate, search, counts, len(calibration))
    raise VerificationError(
        f"no int8 recipe meets the quality budget {budget.describe()} on {judge.tokens.lengths.size} STS-B dev "
        "sentences; nothing was written. Loosen --int8-quality (presets: strict, balanced, any) or export fp32 only",
        search.tried,
    )

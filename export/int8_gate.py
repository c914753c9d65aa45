"""Choose the int8 recipe that meets a quality budget and runs fastest on this machine, judged against fp32.

The text comes in three parts (export/int8_text.py): calibration, selection and held-out. Each candidate is run
through the runtime's Encoder (export/judge.py) and judged on the selection text; one within budget there must also
hold it on the gated held-out text (the model's language), or it is not taken. On these texts top-10 must clear the
budget by the headroom (Int8Budget.gated), so that text no search saw keeps the budget itself. Every recipe of the
ladder is judged and timed; of those within budget (each timed again against fp32 in paired rounds), the one measured
fastest here is chosen. When none passes, a sensitivity pass ranks the projections (each alone in fp32, by the mean
cosine to fp32 on a sample of the selection text; the top few judged alone on the whole texts and ranked again by their
worst margin over selection and gated held-out text) and leaves the top of that ranking in fp32, one more at a time.
By default only pair-safe recipes are judged (`auto`: one graph that every x86 CPU runs exactly on its fast kernel);
`auto-vnni` judges the plain ones.
No recipe within budget is an error with every candidate's figures: never a silent fallback to fp32 or to a weaker
recipe.
"""

from __future__ import annotations

import math
import platform
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from onnxbert.runtime.manifest import searched_top10, unknown_tokens_note
from onnxbert.runtime.session import (
    PAIR_SUM_LIMIT,
    cpu_flags,
    cpu_model,
    int8_fits_16_bits,
    int8_kernel,
)
from onnxbert.runtime.tokenize import TextTokenizer, Tokenized

from .calibration import Calibration, calibrate
from .errors import ExportError, VerificationError
from .int8 import Recipe, quantize
from .int8_text import Int8Text
from .judge import Judge
from .progress import Progress
from .targets import GROUPS, Target, find_targets

__all__ = [
    "AUTO",
    "AUTO_VNNI",
    "BUDGETS",
    "CONFIRMED",
    "LADDER",
    "Int8Budget",
    "auto_ladder",
    "calibration_tokens",
    "choose_int8",
    "parse_recipe",
    "recipe_named",
]

SPEED_TIE = 0.05  # measured speeds this close count as a tie (see _Search.fastest)
CONFIRMED = 4  # of the fallback probes' ranking, the top ones judged alone on the whole texts (see _Search.fallback)
# The default gate judges on the whole STS-B dev split: top-10 agreement falls as the corpus grows (denser
# neighbourhoods), ~0.013 lower on all 2,910 sentences than on the first 922: judging on less would pass more.


@dataclass(frozen=True)
class Int8Budget:
    """The least int8 must keep of fp32: mean cosine, top-10 neighbours, and Spearman where a text has scored pairs."""

    min_mean_cosine: float = 0.998
    min_top10: float = 0.97
    max_spearman_drop: float = 0.005
    # Asked of the texts the search judges on top of min_top10 (`gated`); text it never saw is held to min_top10.
    top10_headroom: float = 0.0

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

    def gated(self) -> Int8Budget:
        """The budget the search holds its candidates to: min_top10 raised by the headroom.

        Why a headroom: int8_text.py's USER_TEXT_TOP10_HEADROOM.
        """
        return replace(self, min_top10=searched_top10(self.describe()) or self.min_top10, top10_headroom=0.0)

    def failures(self, figures: dict[str, Any]) -> list[str]:
        """Each way `figures` misses the budget, in words."""
        found = []
        if figures["mean_cosine"] < self.min_mean_cosine:
            found.append(f"mean_cosine={figures['mean_cosine']:.5f} (needs >= {self.min_mean_cosine})")
        if figures["top10_agreement"] < self.min_top10:
            found.append(f"top10_agreement={figures['top10_agreement']:.3f} (needs >= {self.min_top10})")
        drop = figures.get("spearman_drop")
        if drop is not None and drop > self.max_spearman_drop:
            found.append(f"spearman_drop={drop:.4f} (needs <= {self.max_spearman_drop})")
        return found

    def margin(self, figures: dict[str, Any]) -> float:
        """The worst criterion's headroom, each scaled to its budget: < 0 misses, higher is better."""
        cos = (figures["mean_cosine"] - self.min_mean_cosine) / max(1.0 - self.min_mean_cosine, 1e-6)
        top = (figures["top10_agreement"] - self.min_top10) / max(1.0 - self.min_top10, 1e-6)
        drop = figures.get("spearman_drop")
        spearman = math.inf if drop is None else (self.max_spearman_drop - drop) / max(self.max_spearman_drop, 1e-6)
        return float(min(cos, top, spearman))

    def worst_margin(self, figures: dict[str, Any]) -> float:
        """`margin` of a candidate's selection figures and of each held-out text measured with them, the lowest."""
        return min([self.margin(figures), *(self.margin(held) for held in figures.get("held_out", {}).values())])

    def describe(self) -> dict[str, float]:
        """The manifest's record of the budget."""
        return {
            "min_mean_cosine": self.min_mean_cosine,
            "min_top10": self.min_top10,
            "max_spearman_drop": self.max_spearman_drop,
            "top10_headroom": self.top10_headroom,
        }


BUDGETS = {
    "strict": Int8Budget(),
    "balanced": Int8Budget(min_mean_cosine=0.995, min_top10=0.93, max_spearman_drop=0.01),
    "any": Int8Budget(min_mean_cosine=-1.0, min_top10=0.0, max_spearman_drop=math.inf),  # fastest, figures recorded
}


def _all(mode: str) -> dict[str, str]:
    return dict.fromkeys(GROUPS, mode)


# From least to most work at run time; which is fastest is measured on the exporting machine (ISAs differ).
#   dynamic          one range per batch tensor, found at run time (ORT's classic)
#   static           SmoothQuant-calibrated static ranges everywhere
#   static+rows      static for the LayerNorm-fed projections, per token after attention and Gelu, whose ranges
#                    swing from token to token (MiniLM: the only one within `strict`, top-10 0.971)
#   static+rows+outlier  the same, with ffn_in's largest input channel computed in fp32 beside its int8 MatMul
#                    (MiniLM: top-10 0.970 -> 0.974 on STS-B dev for ~9% of int8's speed; within `strict` on held-out
#                    Python docs where static+rows is not)
#   ...-pairsafe     the two above with each pair of adjacent weights within |w[2i] + w[2i + 1]| <= 128, which cannot
#                    saturate the u8 x s8 kernels of CPUs without VNNI: there they run without the exact-but-slower
#                    safeguard (the kernel 7-bit weights got: 1.43x fp32 against 1.17x, Xeon's AVX2 class), for wider
#                    column scales (MiniLM +outlier on STS-B dev: top-10 0.973 against 0.974; held-out docs 0.968)
_STATIC_ROWS = {**_all("static"), "attention_output": "rows", "ffn_out": "rows"}
LADDER = (
    Recipe("dynamic", _all("dynamic")),
    Recipe("static", _all("static")),
    Recipe("static+rows", _STATIC_ROWS),
    Recipe("static+rows+outlier", _STATIC_ROWS, fp32_channels=1),
    Recipe("static+rows-pairsafe", _STATIC_ROWS, weight_pair_limit=PAIR_SUM_LIMIT),
    Recipe("static+rows+outlier-pairsafe", _STATIC_ROWS, fp32_channels=1, weight_pair_limit=PAIR_SUM_LIMIT),
)
_RECIPES = {recipe.name: recipe for recipe in LADDER}


# The default, `auto`, judges only pair-safe recipes: their graph runs the fast int8 kernel exactly on every x86 CPU, in
# any ONNX Runtime session, so one file serves AVX2, AVX-512 VNNI and AMX alike and a tool that loads it without the
# runtime's safeguard cannot saturate on a CPU without VNNI. On VNNI and AMX they run the same kernels as plain weights,
# at a little quality (MiniLM strict keeps one more projection in fp32: ~0.95x the plain graph's speed, EPYC Zen 4).
# `auto-vnni` judges the plain recipes, for servers that all have VNNI or AMX: elsewhere such a graph needs the
# runtime's exact, slower kernel.
AUTO = "auto"
AUTO_VNNI = "auto-vnni"
AUTO_PAIR_SAFE = "auto-pairsafe"  # the name `auto` had before it became the default; still accepted
AUTO_RECIPES = (AUTO, AUTO_VNNI)


def auto_ladder(recipe: str) -> list[Recipe]:
    """The ladder recipes an automatic choice judges: the pair-safe ones, or for `auto-vnni` the plain ones."""
    pair_safe = recipe != AUTO_VNNI
    return [r for r in LADDER if int8_fits_16_bits(r.describe()) == pair_safe]


# When no recipe of the ladder passes, projections of one of these stay in fp32 (`_Search.fallback`): the one that
# missed the budget by least, so that fewer of them go back to fp32.
FALLBACK_BASES = {
    AUTO: ("static+rows-pairsafe", "static+rows+outlier-pairsafe"),
    AUTO_VNNI: ("static+rows", "static+rows+outlier"),
}


_KEPT = re.compile(r"layer (\d+) (all|\w+(?:\+\w+)*)")  # one layer's part of a name `_fp32_name` writes


def parse_recipe(value: str) -> str:
    """'auto', 'auto-vnni', or a recipe's name as a manifest records it, in canonical form ('auto-pairsafe': 'auto').

    A name is a ladder recipe's, optionally with projections kept in fp32: 'static+rows+outlier-pairsafe, layer 0
    ffn_out fp32' pins what an earlier export's search chose.
    """
    if value == AUTO_PAIR_SAFE:
        return AUTO
    if value in AUTO_RECIPES:
        return value
    return recipe_named(value).name


def recipe_named(name: str) -> Recipe:
    """The recipe `name` names: a ladder recipe, optionally with projections in fp32 (`_fp32_name`'s form)."""
    base_name, _, kept_text = name.partition(", ")
    base = _RECIPES.get(base_name.strip())
    if base is None:
        raise ExportError(
            f"int8 recipe {name!r} not understood; choose {AUTO}, {AUTO_VNNI} or one of {', '.join(_RECIPES)}, "
            "optionally with projections in fp32 as a manifest names them: '<recipe>, layer 0 ffn_out fp32'"
        )
    if not kept_text:
        return base
    parts = kept_text.strip().removesuffix(" fp32").split(", ")
    found = [_KEPT.fullmatch(part) for part in parts]
    kept = [
        (int(match[1]), group)
        for match in found
        if match
        for group in (GROUPS if match[2] == "all" else match[2].split("+"))
    ]
    if (
        not kept_text.strip().endswith(" fp32")
        or not all(found)
        or not {group for _, group in kept} <= set(GROUPS)
        or len(set(kept)) != len(kept)
    ):
        raise ExportError(
            f"int8 recipe {name!r}: after the recipe's name give the projections kept in fp32 as "
            f"'layer N {'+'.join(GROUPS)} fp32' (any of them) or 'layer N all fp32', layers separated by ', '"
        )
    return replace(base, name=_fp32_name(base, kept), fp32_groups=tuple(sorted(kept)))


def _line(name: str, figures: dict[str, Any]) -> str:
    status = "pass" if figures["passed"] else "miss"
    drop = figures["spearman_drop"]
    spearman = f", Spearman {-drop:+.4f}" if drop is not None else ""
    held = "".join(
        f"; {text} cos {f['mean_cosine']:.5f} top10 {f['top10_agreement']:.3f}"
        for text, f in figures.get("held_out", {}).items()
    )
    return (
        f"int8 {name}: cos {figures['mean_cosine']:.5f}, top10 {figures['top10_agreement']:.3f}{spearman}, "
        f"{figures['speed_vs_fp32']:.2f}x fp32{held} [{status}]"
    )


@dataclass
class _Search:
    """Candidates tried so far, each judged against the budget."""

    fused: Path
    targets: list[Target]
    calibration: Calibration
    judge: Judge
    held_out: dict[str, list[str]]
    budget: Int8Budget
    say: Progress
    tried: dict[str, dict[str, Any]]
    ranked: dict[str, dict[str, Any]] = field(default_factory=dict)  # fallback probes' sample figures, by name
    graphs: dict[Any, tuple[Recipe, Path, dict[str, int]]] = field(default_factory=dict)
    weights: dict[Any, Any] = field(default_factory=dict)  # rounded int8 weights, shared between candidates

    def trial(self, recipe: Recipe, *, probe: bool = False) -> tuple[bool, Path, dict[str, int]]:
        """Quantize and judge `recipe`; a recipe already judged under another name is not run again.

        Held-out text is measured when the selection text passes, and always for a `probe` (a projection the fallback
        confirms, ranked by its worst margin); a probe is timed in paired rounds only once it becomes a candidate
        (`passing`).
        """
        same = (
            tuple(recipe.modes.items()),
            recipe.alpha,
            recipe.fp32_layers,
            tuple(sorted(recipe.fp32_groups)),
            recipe.weight_levels,
            recipe.weight_pair_limit,
            recipe.fp32_channels,
        )
        if same in self.graphs:
            earlier, graph, counts = self.graphs[same]
            return self.tried[earlier.name]["passed"], graph, counts
        graph = self.judge.slot()
        counts = quantize(self.fused, graph, recipe, self.targets, self.calibration, self.weights)
        figures = self.judge.measure(graph, recipe.describe())
        figures["failures"] = self.budget.failures(figures)
        self.tried[recipe.name] = figures
        self.graphs[same] = (recipe, graph, counts)
        if probe or not figures["failures"]:
            self._judge_held_out(recipe, graph)
        figures["passed"] = not figures["failures"]
        if figures["passed"] and not probe:
            self._time(recipe, graph)
        self.say.say(_line(recipe.name, figures))
        return figures["passed"], graph, counts

    def _judge_held_out(self, recipe: Recipe, graph: Path) -> None:
        figures = self.tried[recipe.name]
        figures["held_out"] = self.judge.held_out(graph, self.held_out, recipe.describe())
        for text, held in figures["held_out"].items():
            held["failures"] = self.budget.failures(held)
            figures["failures"] += [f"{text}: {failure}" for failure in held["failures"]]

    def _time(self, recipe: Recipe, graph: Path) -> None:
        """The speed that decides between candidates and goes into the manifest: paired rounds against fp32."""
        self.tried[recipe.name].update(self.judge.speed(graph, recipe.describe()))

    def passing(self, candidate: Recipe) -> tuple[Recipe, Path, dict[str, int]] | None:
        """The candidate as it was first judged (under its first name), if it meets the budget."""
        passed, graph, _ = self.trial(candidate)
        if not passed:
            return None
        found = next(found for found in self.graphs.values() if found[1] == graph)
        if "speed_rounds" not in self.tried[found[0].name]:  # a probe that passed
            self._time(*found[:2])
        return found

    def fastest(self, candidates: list[Recipe]) -> tuple[Recipe, Path, dict[str, int]] | None:
        """Of `candidates` within budget, the one measured fastest here (all are judged and timed).

        One timed pass varies by a few percent, so speeds within SPEED_TIE of the best count as equal and the first
        of those in `candidates` (the ladder's order: least run-time work first) wins: the choice does not flip
        between runs on noise.
        """
        found = [passed for passed in map(self.passing, candidates) if passed is not None]
        speed = {item[0].name: float(self.tried[item[0].name]["speed_vs_fp32"]) for item in found}
        best = max(speed.values(), default=0.0)
        return next((item for item in found if speed[item[0].name] >= best * (1 - SPEED_TIE)), None)

    def closest(self, names: tuple[str, ...]) -> Recipe:
        """Of the recipes `names`, all judged already, the one that missed the budget by least (the first on a tie).

        Each is judged on the gated held-out text first where it was not (one that missed on the selection text): its
        selection margin alone would flatter it (MiniLM exported on AVX2 kernels fell back from the weaker recipe and
        kept two layers in fp32: 1.29x fp32 there instead of 1.43x).
        """
        for recipe, graph, _ in list(self.graphs.values()):
            if recipe.name in names and "held_out" not in self.tried[recipe.name]:
                self._judge_held_out(recipe, graph)
                self.say.say(
                    _line(recipe.name, self.tried[recipe.name]) + " (held-out text judged to rank the fallback)"
                )
        return _RECIPES[max(names, key=lambda name: self.budget.worst_margin(self.tried[name]))]

    def rank(self, recipe: Recipe) -> float:
        """A fallback probe's mean cosine to fp32 on the selection text's sample (Judge.probe); recorded in `ranked`."""
        graph = self.judge.slot()
        quantize(self.fused, graph, recipe, self.targets, self.calibration, self.weights)
        figures = self.judge.probe(graph, recipe.describe())
        # One probe per projection, each graph and its packed twin 60+ MB (MiniLM), and none is used again.
        shutil.rmtree(graph.parent)
        self.ranked[recipe.name] = figures
        self.say.say(
            f"int8 {recipe.name}: cos {figures['mean_cosine']:.6f} on {figures['texts']} sentences of the selection "
            "text [ranking]"
        )
        return float(figures["mean_cosine"])

    def fallback(self, base: Recipe) -> tuple[Recipe, Path, dict[str, int]] | None:
        """Leave the projections of `base` that matter most in fp32, one more at a time, until one set passes.

        Each projection is probed alone in fp32 on a sample of the selection text and ranked by the mean cosine to
        fp32 that wins back: a smooth figure a sample estimates well, where top-10 agreement moves by single
        neighbours (MiniLM's 24 probes judged on the whole texts read held-out top-10 0.967-0.971 against 0.968 with
        none in fp32: a ranking of noise, and of the gated text's own figure). The top CONFIRMED are judged alone on
        the whole texts and ranked again by their worst margin; then the top one, two, three ... stay fp32 together,
        wherever they sit, never a whole layer for one projection's sake. Ranked by quality, not timed against each
        other: one projection of many changes the speed by less than a timing's noise.
        (benchmarks/results/epyc-zen2/int8_fallback_ranking.md: what the sample's ranking chose, and how it holds on
        text no search saw.)
        """

        def alone(key: tuple[int, str]) -> Recipe:
            return replace(base, name=_fp32_name(base, [key]), fp32_groups=(key,))

        keys = [(target.layer, target.group) for target in self.targets]
        cosine = {key: self.rank(alone(key)) for key in keys}
        order = sorted(cosine, key=lambda key: -cosine[key])  # stable: graph order on a tie
        confirmed = order[:CONFIRMED]
        for key in confirmed:
            self.trial(alone(key), probe=True)
        margin = {key: self.budget.worst_margin(self.tried[alone(key).name]) for key in confirmed}
        order = sorted(confirmed, key=lambda key: -margin[key]) + order[CONFIRMED:]
        for count in range(1, len(order)):  # every projection in fp32 would be no int8 at all
            kept = sorted(order[:count])
            found = self.passing(replace(base, name=_fp32_name(base, kept), fp32_groups=tuple(kept)))
            if found:
                return found
        return None


def _fp32_name(base: Recipe, kept: list[tuple[int, str]]) -> str:
    """'<base>, layer 2 qkv fp32'; 'layer 0 ffn_in+ffn_out, layer 3 qkv' for several; 'layer 1 all' for a whole one."""
    layers: dict[int, list[str]] = {}
    for layer, group in sorted(kept, key=lambda key: (key[0], GROUPS.index(key[1]))):
        layers.setdefault(layer, []).append(group)
    parts = [
        f"layer {layer} {'all' if len(groups) == len(GROUPS) else '+'.join(groups)}" for layer, groups in layers.items()
    ]
    return f"{base.name}, {', '.join(parts)} fp32"


def _recipe_record(
    recipe: Recipe,
    requested: str,
    search: _Search,
    counts: dict[str, int],
    text: Int8Text,
    budget: Int8Budget,
    held_out: dict[str, Any],
) -> dict[str, Any]:
    fp32_nodes = [t.node for t in search.targets if recipe.mode(t) == "fp32"]
    gate = search.tried[recipe.name]
    return {
        "method": "int8",
        **recipe.describe(),
        "requested": requested,  # auto / auto-vnni: searched; else the name that pinned it
        # Speed is the exporting CPU's: int8 / fp32 depends on its int8 GEMM (onnxbert info shows the serving CPU's).
        "measured_on": {
            "cpu": cpu_model(),
            "int8_kernel": int8_kernel(
                platform.machine(), cpu_flags(), fits_16_bits=int8_fits_16_bits(recipe.describe())
            ),
        },
        "excluded_nodes": fp32_nodes,
        "budget": budget.describe(),  # the search held its texts to budget.gated()
        "gate": {key: value for key, value in gate.items() if key != "held_out"},
        "held_out": held_out,
        "candidates": {name: figures for name, figures in search.tried.items() if name != recipe.name},
        "fallback_ranking": search.ranked,  # each projection alone in fp32, on a sample of the selection text
        "text": text.record,
        "int8_ops": {op: counts.get(op, 0) for op in ("QAttention", "MatMulIntegerToFloat")},
    }


def calibration_tokens(tokenizer: Path, max_length: int, sentences: list[str]) -> Tokenized:
    """The calibration sentences, tokenized as the runtime tokenizes them."""
    return TextTokenizer(tokenizer, max_length=max_length).encode(sentences)


def choose_int8(
    fused: Path,
    target: Path,
    *,
    num_layers: int,
    judge: Judge,
    text: Int8Text,
    max_length: int,
    pad_id: int,
    budget: Int8Budget,
    recipe: str,
) -> dict[str, Any]:
    """Write the fastest recipe within `budget` (as measured here) to `target` and return its manifest record.

    `judge` judges on `text.selection`; `text` also gives the calibration and held-out parts. `recipe`: as
    `parse_recipe` returns it (export_model parses it on entry).
    """
    say = judge.say
    targets = find_targets(onnx.load(str(fused), load_external_data=False), num_layers)
    if recipe not in AUTO_RECIPES:  # a pinned name's projections must exist before minutes of calibration
        missing = sorted(set(recipe_named(recipe).fp32_groups) - {(t.layer, t.group) for t in targets})
        if missing:
            raise ExportError(f"int8 recipe {recipe!r}: this model has no projection {missing} ({num_layers} layers)")
    tokens = calibration_tokens(judge.tokenizer, max_length, text.calibration)
    parts = text.record
    with say.step(
        f"int8: calibrating on {len(tokens)} sentences of {parts['calibration']['text']}, fp32 on "
        f"{len(judge.text.sentences)} of {parts['selection']['text']}"
    ):
        stats = calibrate(fused, targets, tokens, pad_id)
        judge.set_reference(fused)
    gated = {name: text.held_out[name] for name in text.gated}
    search = _Search(fused, targets, stats, judge, gated, budget.gated(), say, {})
    if recipe in AUTO_RECIPES:
        found = search.fastest(auto_ladder(recipe))
        found = found or search.fallback(search.closest(FALLBACK_BASES[recipe]))
    else:
        found = search.fastest([recipe_named(recipe)])
    if found is None:
        raise VerificationError(
            f"no int8 recipe meets the quality budget {budget.describe()} on {parts['selection']['text']} and the "
            f"held-out text ({', '.join(text.gated)}); nothing was written. Loosen --int8-quality (presets: "
            "strict, balanced, any) or --int8-headroom, or export fp32 only",
            search.tried,
        )
    chosen, graph, counts = found
    speed = float(search.tried[chosen.name]["speed_vs_fp32"])
    if speed < 1.0:
        say.say(f"int8 {chosen.name} ran at {speed:.2f}x fp32 on this machine: slower than fp32 here")
    reported = {name: texts for name, texts in text.held_out.items() if name not in text.gated}
    held_out = {**search.tried[chosen.name]["held_out"], **judge.held_out(graph, reported, chosen.describe())}
    for name, figures in held_out.items():
        figures["gated"] = name in text.gated
        figures["failures"] = budget.failures(figures)
        if not figures["gated"]:
            because = text.record["held_out"][name]["reported_because"]
            say.say(
                f"int8 {chosen.name} on {name} ({because}: reported, not gated): cos "
                f"{figures['mean_cosine']:.5f}, top10 {figures['top10_agreement']:.3f}"
                + (" [outside budget" if figures["failures"] else " [within budget")
                + unknown_tokens_note(figures)
                + "]"
            )
    shutil.move(graph, target)
    return _recipe_record(chosen, recipe, search, counts, text, budget, held_out)

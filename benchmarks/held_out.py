"""int8 on text no search saw, in one run: MiniLM's default int8 graph and one exported with `--int8-text` (every
French message of Plone's catalogues, standing in for a user's own non-English text), each against its own fp32 graph.

A text's role for a graph comes from sentence overlap with the parts its export used, rebuilt here as the export
built them (export/int8_text.py) and checked against the hashes its manifest recorded: `selection` (every recipe was
judged on it), `gated` (held out, but a miss sent the search on), `calibration`, or `unseen` (no sentence of it
touched the export; a text the export measured and only reported is unseen too). Only unseen text is evidence that
the budget carries beyond the text it was chosen on. A catalogue's languages translate the same messages, so a
text translated from one its export used is `translation`, not unseen: Plone's German says little about German
that is not Plone's. Weblate's catalogues are another web application's messages in the same languages.
Speed: int8 / fp32 on STS-B dev through Encoder.embed, the encoders in rotating order, one call each per round.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxbert.runtime import Encoder, Manifest
from onnxbert.runtime.manifest import searched_top10

if TYPE_CHECKING:  # onnxbert.export loads torch: imported where a run needs it
    from onnxbert.export.judge import SelectionText

# The language of each text the full run measures; the budget must hold on unseen text in more than one language.
LANGUAGES = {
    "sts-dev": "en",
    "python-docs": "en",
    "shakespeare": "en",
    "chinese-reviews": "zh",
    "plone-fr": "fr",
    "plone-de": "de",
    "plone-es": "es",
    "plone-it": "it",
    "plone-nl": "nl",
    "weblate-fr": "fr",
    "weblate-de": "de",
    "weblate-es": "es",
    "weblate-pl": "pl",
}
# The texts of one catalogue, whose languages translate the same messages.
TRANSLATIONS = (
    frozenset({"plone-fr", "plone-de", "plone-es", "plone-it", "plone-nl"}),
    frozenset({"weblate-fr", "weblate-de", "weblate-es", "weblate-pl"}),
)
SENTENCES = 1000  # per text; STS-B dev is whole (2,910), as the gate judges it


def full_texts() -> dict[str, SelectionText]:
    """Every text of LANGUAGES, as export's loaders read them (scored pairs: STS-B dev's, for Spearman)."""
    from onnxbert.export.judge import SelectionText
    from onnxbert.export.texts import chinese_reviews, plone_messages, python_docs, shakespeare, weblate_messages

    texts = {
        "sts-dev": SelectionText.sts_dev(),
        "python-docs": SelectionText(python_docs(SENTENCES), [], [], []),
        "shakespeare": SelectionText(shakespeare(SENTENCES), [], [], []),
        "chinese-reviews": SelectionText(chinese_reviews(SENTENCES), [], [], []),
    }
    for language in ("fr", "de", "es", "it", "nl"):
        texts[f"plone-{language}"] = SelectionText(plone_messages(language, SENTENCES), [], [], [])
    for language in ("fr", "de", "es", "pl"):
        texts[f"weblate-{language}"] = SelectionText(weblate_messages(language, SENTENCES), [], [], [])
    return texts


def export_parts(directory: Path, text_file: Path | None) -> dict[str, set[str]]:
    """The sentences the export of `directory` calibrated, selected and gated on, rebuilt and checked by hash."""
    from tokenizers import Tokenizer

    from onnxbert.export.int8_text import default_int8_text, user_int8_text
    from onnxbert.export.texts import text_hash

    if text_file is None:
        split = default_int8_text(Tokenizer.from_file(str(directory / "tokenizer.json")))
    else:
        split = user_int8_text(text_file)
    recorded = Manifest.load(directory).variants["int8"].recipe["text"]
    rebuilt = {"calibration": split.calibration, "selection": split.selection.sentences}
    rebuilt |= {f"held_out/{name}": texts for name, texts in split.held_out.items()}
    for part, texts in rebuilt.items():
        record = recorded["held_out"][part.split("/")[1]] if "/" in part else recorded[part]
        if record["sha256"] != text_hash(texts):
            raise RuntimeError(
                f"{directory}: its export's {part} text is not what this checkout builds (sha256 differs); "
                "export it again (delete the benchmark cache)"
            )
    gated = [text for name in split.gated for text in split.held_out[name]]
    return {"selection": set(split.selection.sentences), "gated": set(gated), "calibration": set(split.calibration)}


def role(sentences: list[str], parts: dict[str, set[str]]) -> tuple[str, int]:
    """The first of selection, gated, calibration whose part shares a sentence with `sentences`, and how many it
    shares; else unseen (`translated` then tells the translations of a text with a role)."""
    for name in ("selection", "gated", "calibration"):
        shared = sum(1 for s in sentences if s in parts[name])
        if shared:
            return name, shared
    return "unseen", 0


def translated(roles: dict[str, str]) -> dict[str, str]:
    """`roles` with each unseen text that translates one of a role (TRANSLATIONS) as `translation`."""
    used = {name for name, found in roles.items() if found != "unseen"}
    return {
        name: "translation"
        if found == "unseen" and any(name in group and group & used for group in TRANSLATIONS)
        else found
        for name, found in roles.items()
    }


def quality(
    directory: Path, texts: dict[str, SelectionText], parts: dict[str, set[str]], threads: int
) -> dict[str, Any]:
    """int8 against this directory's fp32 graph on each text: the figures the gate measures, the role, the budget."""
    from onnxbert.export.int8_gate import Int8Budget
    from onnxbert.export.quality import cosines, nearest, shared_share, sts_spearman
    from onnxbert.export.tokenizer import unknown_share

    recipe = Manifest.load(directory).variants["int8"].recipe
    budget = Int8Budget(**recipe["budget"])
    encoders = {v: Encoder(directory, variant=v, threads=threads) for v in ("fp32", "int8")}
    figures: dict[str, Any] = {}
    for name, text in texts.items():
        fp32, int8 = (encoders[v].embed(text.sentences, normalize=True) for v in ("fp32", "int8"))
        similarity = cosines(int8, fp32)
        row: dict[str, Any] = {
            "sentences": len(text.sentences),
            "mean_cosine": float(similarity.mean()),
            "min_cosine": float(similarity.min()),
            "top10_agreement": shared_share(nearest(int8), nearest(fp32)),
            "spearman_drop": None,
            "unknown_tokens": unknown_share(directory / "tokenizer.json", text.sentences),
        }
        if text.gold:
            row["spearman_drop"] = sts_spearman(fp32, text.left, text.right, text.gold) - sts_spearman(
                int8, text.left, text.right, text.gold
            )
        row["role"], row["shared_sentences"] = role(text.sentences, parts)
        row["failures"] = budget.failures(row)
        figures[name] = row
    for name, found in translated({name: row["role"] for name, row in figures.items()}).items():
        figures[name]["role"] = found
    return {"recipe": recipe["name"], "budget": recipe["budget"], "gate": recipe["gate"], "texts": figures}


def speed(graphs: dict[str, Path], sentences: list[str], threads: int, rounds: int) -> dict[str, Any]:
    """Each graph's int8 / fp32 on `sentences`: the first graph's fp32 against every int8, in rotating order."""
    first = next(iter(graphs.values()))
    encoders = {"fp32": Encoder(first, variant="fp32", threads=threads)}
    encoders |= {name: Encoder(directory, variant="int8", threads=threads) for name, directory in graphs.items()}
    for encoder in encoders.values():
        encoder.embed(sentences[:64])
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    names = list(encoders)
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            encoders[name].embed(sentences)
            seconds[name].append(time.perf_counter() - start)
    fp32_sha = {name: Manifest.load(d).variants["fp32"].sha256 for name, d in graphs.items()}
    ratios = {name: [f / i for f, i in zip(seconds["fp32"], seconds[name], strict=True)] for name in graphs}
    return {
        "sentences": len(sentences),
        "rounds": rounds,
        "fp32_graph_shared": len(set(fp32_sha.values())) == 1,  # else each int8 is timed against the first's fp32
        "int8_vs_fp32": {name: {"median": statistics.median(r), "rounds": r} for name, r in ratios.items()},
    }


def verdict(graph: dict[str, Any], languages: dict[str, str]) -> dict[str, Any]:
    """What the issue's bar asks of one graph: within budget on its selection text (its export's gate) and on at
    least two unseen texts, one of them not English."""
    unseen = {name: row for name, row in graph["texts"].items() if row["role"] == "unseen"}
    within = [name for name, row in unseen.items() if not row["failures"]]
    budget, gate = graph["budget"], graph["gate"]
    drop = gate.get("spearman_drop")  # None where the selection text has no scored pairs
    gate_ok = (
        gate["mean_cosine"] >= budget["min_mean_cosine"]
        and gate["top10_agreement"] >= budget["min_top10"]
        and (drop is None or drop <= budget["max_spearman_drop"])
    )
    other_language = [name for name in within if languages[name] != "en"]
    return {
        "unseen_within_budget": within,
        "unseen_outside_budget": [name for name in unseen if name not in within],
        "meets": gate_ok and len(within) >= 2 and bool(other_language),
    }


def measure(
    graphs: dict[str, tuple[Path, Path | None]], texts: dict[str, SelectionText], threads: int, rounds: int
) -> dict[str, Any]:
    """`graphs`: label -> (model directory, the --int8-text file it was exported with, or None for the default);
    `texts`: named as LANGUAGES names them, so that each text's language is known."""
    unknown = sorted(set(texts) - set(LANGUAGES))
    if unknown:
        raise ValueError(f"texts {unknown} have no language in LANGUAGES")
    partial = [sorted(group) for group in TRANSLATIONS if group & set(texts) and not group <= set(texts)]
    if partial:  # a translation of a text the export used must not pass for unseen because that text is absent
        raise ValueError(f"texts that translate one another come together: {partial}")
    if "sts-dev" not in texts:
        raise ValueError("the speed rounds run on STS-B dev: texts must hold 'sts-dev'")
    result: dict[str, Any] = {"graphs": {}, "languages": {name: LANGUAGES[name] for name in texts}}
    for label, (directory, text_file) in graphs.items():
        graph = quality(directory, texts, export_parts(directory, text_file), threads)
        graph["int8_text"] = text_file.name if text_file else None
        graph["verdict"] = verdict(graph, result["languages"])
        result["graphs"][label] = graph
    result["speed"] = speed({label: d for label, (d, _) in graphs.items()}, texts["sts-dev"].sentences, threads, rounds)
    return result


def table_lines(result: dict[str, Any]) -> list[str]:
    """report.md's section: each text's top-10 (mean cosine) and role per graph, speed, and the verdict."""
    graphs = result["graphs"]
    labels = list(graphs)
    lines = [
        "Each int8 graph against its own fp32 graph (as export's gate judges), top-10 neighbours (mean cosine); "
        "the role is the text's overlap with what that graph's export calibrated, selected or gated on. "
        "**unseen**: no sentence of it touched the export; **translation**: none did, but it translates the same "
        "catalogue's messages as a text that did (another language of the same text, not unseen text).",
        "",
        "| text | language | sentences | " + " | ".join(labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    for name in next(iter(graphs.values()))["texts"]:
        cells = []
        for label in labels:
            row = graphs[label]["texts"][name]
            state = "within budget" if not row["failures"] else "outside"
            drop = f", Spearman drop {row['spearman_drop']:.4f}" if row["spearman_drop"] is not None else ""
            unk = f", {row['unknown_tokens']:.0%} [UNK]" if row["unknown_tokens"] >= 0.05 else ""
            cells.append(f"{row['top10_agreement']:.3f} ({row['mean_cosine']:.5f}{drop}{unk}) {row['role']}, {state}")
        first = graphs[labels[0]]["texts"][name]
        lines.append(f"| {name} | {result['languages'][name]} | {first['sentences']} | " + " | ".join(cells) + " |")
    timing = result["speed"]
    lines.append(
        f"| int8 / fp32, {timing['sentences']} STS-B dev sentences, median of {timing['rounds']} rounds | | | "
        + " | ".join(
            f"{timing['int8_vs_fp32'][label]['median']:.2f}x "
            f"({min(timing['int8_vs_fp32'][label]['rounds']):.2f}-{max(timing['int8_vs_fp32'][label]['rounds']):.2f})"
            for label in labels
        )
        + " |"
    )
    lines.append("")
    for label in labels:
        graph, judged = graphs[label], graphs[label]["verdict"]
        source = f"`--int8-text {graph['int8_text']}`" if graph["int8_text"] else "the default text"
        gate, top10 = graph["gate"], searched_top10(graph["budget"])
        held = f", held to top-10 >= {top10:g}" if top10 else ""
        lines.append(
            f"- {label} ({source}; recipe {graph['recipe']}; its gate{held}: top-10 {gate['top10_agreement']:.3f}, mean "
            f"cosine {gate['mean_cosine']:.5f} on {gate['texts']} selection sentences): unseen texts within budget: "
            f"{', '.join(judged['unseen_within_budget']) or 'none'}; outside: "
            f"{', '.join(judged['unseen_outside_budget']) or 'none'}. Selection and two unseen texts, one not "
            f"English, within budget: **{'yes' if judged['meets'] else 'no'}**."
        )
    if not timing["fp32_graph_shared"]:
        lines.append(f"- The fp32 graphs differ: every int8 graph is timed against {labels[0]}'s fp32.")
    return lines

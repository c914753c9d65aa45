"""The suite's int8-on-unseen-text section: each text's role comes from what each export really used."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("torch", reason="the benchmarks need the export extra")

from benchmarks import held_out, report
from onnxbert.export import export_model
from onnxbert.export.judge import SelectionText
from onnxbert.export.texts import plone_messages, shakespeare, weblate_messages
from tests.test_bench_report import fake_results


def _text(sentences: list[str]) -> SelectionText:
    return SelectionText(sentences, [], [], [])


def test_roles_figures_and_verdict_from_two_real_exports(
    tiny_checkpoint: Path, tiny_export_dir: Path, tmp_path: Path
) -> None:
    french = plone_messages("fr", 400)
    source = tmp_path / "french.txt"
    source.write_text("".join(text + "\n" for text in french), "utf-8")
    user = tmp_path / "user"
    export_model(tiny_checkpoint, user, variants="fp32,int8", int8_quality="any", int8_text=source, progress=False)
    plone = {f"plone-{language}": _text(plone_messages(language, 200)) for language in ("de", "es", "it", "nl")}
    weblate = {f"weblate-{language}": _text(weblate_messages(language, 200)) for language in ("fr", "de", "es", "pl")}
    texts = {
        "sts-dev": SelectionText.sts_dev(),
        "plone-fr": _text(french),
        **plone,
        "shakespeare": _text(shakespeare(300)),
    }
    graphs = {"default": (tiny_export_dir, None), "user": (user, source)}
    result = held_out.measure(graphs, texts | weblate, threads=1, rounds=1)

    roles = {label: {name: row["role"] for name, row in g["texts"].items()} for label, g in result["graphs"].items()}
    # the default selects on STS-B dev and only reports Plone's French and Shakespeare; the user's graph is the
    # reverse, and Plone's other languages translate its selection text: no sentence shared, but not unseen text
    assert roles["default"] == dict.fromkeys(texts | weblate, "unseen") | {"sts-dev": "selection"}
    assert roles["user"] == (
        dict.fromkeys(texts | weblate, "unseen") | dict.fromkeys(plone, "translation") | {"plone-fr": "selection"}
    )
    assert result["graphs"]["user"]["texts"]["plone-fr"]["shared_sentences"] == len(french) - 2 * (len(french) // 4)
    row = result["graphs"]["default"]["texts"]["sts-dev"]
    assert row["sentences"] == 2910 and row["spearman_drop"] is not None and 0.0 < row["mean_cosine"] <= 1.0 + 1e-6
    assert result["graphs"]["user"]["texts"]["shakespeare"]["spearman_drop"] is None
    # random weights, exported with no budget: nothing fails, so both meet the bar (Weblate's is unseen, not English)
    assert result["graphs"]["user"]["verdict"] == {
        "unseen_within_budget": ["sts-dev", "shakespeare", *weblate],
        "unseen_outside_budget": [],
        "meets": True,
    }
    assert set(result["speed"]["int8_vs_fp32"]) == {"default", "user"} and result["speed"]["fp32_graph_shared"]

    results = fake_results()
    next(iter(results["models"].values()))["held_out_texts"] = result
    text = report.markdown(results)
    assert "### int8 on text no search saw" in text and "`--int8-text french.txt`" in text
    assert "| weblate-de | de | 200 |" in text and "English, within budget: **yes**" in text
    assert "translation, within budget" in text
    # the user's graph was searched with --int8-text's top-10 headroom (on a budget of none: 0 + 0.005); the default not
    assert "its gate, held to top-10 >= 0.005: top-10" in text and text.count("held to top-10") == 1

    # a text file that no longer holds what the export read: roles cannot be trusted, so nothing is measured
    source.write_text("".join(text + "\n" for text in reversed(french)), "utf-8")
    with pytest.raises(RuntimeError, match="export it again"):
        held_out.measure(graphs, texts, threads=1, rounds=1)
    with pytest.raises(ValueError, match="no language"):
        held_out.measure(graphs, {"klingon": _text(french)}, threads=1, rounds=1)
    with pytest.raises(ValueError, match="must hold 'sts-dev'"):
        held_out.measure(graphs, {"shakespeare": _text(french)}, threads=1, rounds=1)
    # German without the French it translates would pass for unseen text: a catalogue's languages come together
    with pytest.raises(ValueError, match="translate one another come together"):
        held_out.measure(graphs, {"sts-dev": texts["sts-dev"], "plone-de": plone["plone-de"]}, threads=1, rounds=1)


def test_a_translation_of_a_text_an_export_used_is_not_unseen() -> None:
    roles = {"sts-dev": "unseen", "plone-fr": "gated", "plone-de": "unseen", "weblate-de": "unseen"}
    assert held_out.translated(roles) == roles | {"plone-de": "translation"}
    # calibration text counts too; a text with a role of its own keeps it
    roles = {"plone-fr": "calibration", "plone-de": "selection", "plone-nl": "unseen", "weblate-fr": "unseen"}
    assert held_out.translated(roles) == roles | {"plone-nl": "translation"}
    assert held_out.translated({"plone-de": "unseen", "weblate-fr": "selection"}) == {
        "plone-de": "unseen",
        "weblate-fr": "selection",
    }


def test_the_bar_needs_two_unseen_texts_within_budget_one_not_english() -> None:
    def row(role: str, top10: float) -> dict:
        return {"role": role, "failures": [] if top10 >= 0.97 else [f"top10_agreement={top10}"]}

    budget = {"min_mean_cosine": 0.998, "min_top10": 0.97, "max_spearman_drop": 0.005}
    graph = {
        "budget": budget,
        "gate": {"mean_cosine": 0.9995, "top10_agreement": 0.973},
        "texts": {
            "sts-dev": row("selection", 0.973),
            "python-docs": row("gated", 0.975),
            "shakespeare": row("unseen", 0.971),
            "plone-fr": row("unseen", 0.962),
            "plone-de": row("unseen", 0.971),
        },
    }
    languages = held_out.LANGUAGES
    assert held_out.verdict(graph, languages)["meets"]  # Shakespeare and German
    english_only = copy.deepcopy(graph)
    english_only["texts"]["plone-de"] = row("unseen", 0.965)
    judged = held_out.verdict(english_only, languages)
    assert not judged["meets"] and judged["unseen_outside_budget"] == ["plone-fr", "plone-de"]
    gated_only = copy.deepcopy(graph)  # a gated text is no evidence of generalization, however well it scores
    gated_only["texts"]["shakespeare"] = row("gated", 0.99)
    assert not held_out.verdict(gated_only, languages)["meets"]
    failed_gate = copy.deepcopy(graph)
    failed_gate["gate"]["top10_agreement"] = 0.969
    assert not held_out.verdict(failed_gate, languages)["meets"]
    failed_gate = copy.deepcopy(graph)
    failed_gate["gate"]["spearman_drop"] = 0.006
    assert not held_out.verdict(failed_gate, languages)["meets"]

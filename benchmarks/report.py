"""Write results.json, report.md and PNG plots; check that a run's output is complete and well formed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import held_out
from benchmarks.env import int8_isa
from benchmarks.isa_classes import hidden_from, table_lines
from onnxbert.runtime.manifest import held_out_verdict, searched_top10, unknown_tokens_note

PLOTS = ("latency_by_shape.png", "throughput.png", "speed_vs_quality.png")
_PNG = b"\x89PNG\r\n\x1a\n"


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def headline(results: dict[str, Any]) -> list[str]:
    """The ratios the README quotes: measured in this run, against PyTorch in this run."""
    lines = []
    for name, model in results["models"].items():
        text = model["workloads"]["sts-dev"]["systems"]
        q = model["quality"]
        for system in ("onnxbert-fp32", "onnxbert-int8"):
            row = text[system]
            extra = (
                f", STS-B Spearman {q[system]['sts_spearman']:.4f} vs {q['pytorch']['sts_spearman']:.4f}"
                if ("sts_spearman" in q[system])
                else ""
            )
            if system == "onnxbert-int8" and "int8_recipe" in model:
                ratio = row["sequences_per_s"] / text["onnxbert-fp32"]["sequences_per_s"]
                extra += f"; {ratio:.2f}x the fp32 variant, recipe {model['int8_recipe']['name']}"
            lines.append(
                f"{name} {system}: {row['speedup_vs_pytorch']:.2f}x PyTorch on real text "
                f"({_fmt(row['sequences_per_s'])} vs {_fmt(text['pytorch']['sequences_per_s'])} sentences/s; "
                f"{row['speedup_vs_pytorch'] / text['pytorch-sorted']['speedup_vs_pytorch']:.2f}x length-sorted "
                f"PyTorch); top-10 neighbours {q[system]['top10_agreement']:.3f}, mean cosine "
                f"{q[system]['mean_cosine']:.4f}{extra}"
            )
        classes = model.get("isa_classes", {}).get("classes", {})
        if classes:
            ratios = ", ".join(
                f"{c} {r['int8_vs_fp32']:.2f}x" + (f" (bulk {r['bulk']['int8_vs_fp32']:.2f}x)" if "bulk" in r else "")
                for c, r in classes.items()
            )
            masked = any(hidden_from(c, r) for c, r in classes.items())
            how = "this CPU, newer features hidden" if masked else "this CPU's own kernels, nothing hidden"
            lines.append(f"{name} int8 / fp32 per int8 kernel class ({how}): {ratios}")
    return lines


def _recipe_lines(model: dict[str, Any]) -> list[str]:
    if "int8_recipe" not in model:
        return []
    recipe, gate = model["int8_recipe"], model["int8_recipe"]["gate"]
    budget = recipe["budget"]
    how = "chosen" if recipe.get("requested", "auto").startswith("auto") else "pinned (--int8-recipe), judged"
    top10 = searched_top10(budget)
    searched = f" ({top10:g} on the search's own texts)" if top10 else ""
    chosen = (
        f"{how} at export under the budget mean cosine >= {budget['min_mean_cosine']}, top-10 >= "
        f"{budget['min_top10']}{searched}, Spearman drop <= {budget['max_spearman_drop']}"
        if budget["min_mean_cosine"] >= 0
        else "pinned, no quality budget (random weights)"
    )
    selection = recipe.get("text", {}).get("selection", {}).get("text", "STS-B dev")
    spearman = f", Spearman drop {gate['spearman_drop']:.4f}" if gate.get("spearman_drop") is not None else ""
    lines = [
        f"int8 recipe **{recipe['name']}**, {chosen}; the export gate measured (vs the fp32 graph, {gate['texts']} "
        f"{selection} sentences): mean cosine {gate['mean_cosine']:.5f}, top-10 {gate['top10_agreement']:.3f}{spearman}.",
    ]
    for text, held in recipe.get("held_out", {}).items():
        role = "gated" if held.get("gated") else "reported, not gated"
        verdict = held_out_verdict(recipe, held)
        lines.append(
            f"Held out, {text} ({held['texts']} sentences, {role}): mean cosine {held['mean_cosine']:.5f}, "
            f"top-10 {held['top10_agreement']:.3f} ({verdict}{unknown_tokens_note(held)})."
        )
    return [" ".join(lines), ""]


def _isa_lines(model: dict[str, Any]) -> list[str]:
    if "isa_classes" not in model:
        return []
    return ["### int8 / fp32 per int8 kernel class", "", *table_lines(model["isa_classes"]), ""]


def _held_out_lines(model: dict[str, Any]) -> list[str]:
    if "held_out_texts" not in model:
        return []
    return ["### int8 on text no search saw", "", *held_out.table_lines(model["held_out_texts"]), ""]


def _model_section(name: str, model: dict[str, Any], peaks: dict[str, Any], pause_s: float) -> list[str]:
    systems = model["systems"]
    cfg = model["config"]
    out = [f"## {name} ({cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']})", ""]
    out += [
        "### Latency per call, p50 / p99 ms (speed-up vs PyTorch in this run)",
        "",
        "| workload | " + " | ".join(systems) + " |",
        "|---" * (len(systems) + 1) + "|",
    ]
    for workload, data in model["workloads"].items():
        cells = [
            f"{_fmt(r['p50_ms'])} / {_fmt(r['p99_ms'])} ({r['speedup_vs_pytorch']:.2f}x)"
            for r in (data["systems"][s] for s in systems)
        ]
        primed = " (primed)" if data.get("primed") else ""  # absent in runs before priming
        out.append(f"| {workload}{primed} | " + " | ".join(cells) + " |")
    out += [
        "",
        f"Each call after a {pause_s * 1000:.0f} ms idle pause; a primed call after an untimed call of the same "
        "system, so that another system's still-spinning threads are not charged to it.",
    ]
    text = model["workloads"]["sts-dev"]
    q = model["quality"]
    out += [
        "",
        f"### Real text: STS-B dev, {text['sequences']} sentences, {text['real_tokens']} real tokens",
        "",
        "| system | sentences/s | real tokens/s | vs PyTorch | GFLOP/s (useful) | share of GEMM peak | mean cos "
        "| min cos | max abs diff | top-10 agreement | STS-B Spearman |",
        "|---" * 11 + "|",
    ]
    for s in systems:
        r, k = text["systems"][s], q[s]
        spearman = _fmt(k["sts_spearman"], 4) if "sts_spearman" in k else "n/a (random weights)"
        out.append(
            f"| {s} | {_fmt(r['sequences_per_s'])} | {r['real_tokens_per_s']:.0f} | "
            f"{r['speedup_vs_pytorch']:.2f}x | {_fmt(r['gflops'])} | {r['peak_share']:.0%} | "
            f"{k['mean_cosine']:.4f} | {k['min_cosine']:.4f} | {k['max_abs_diff']:.1e} | "
            f"{k['top10_agreement']:.3f} | {spearman} |"
        )
    out += [
        "",
        f"Quality is measured on {q['sentences']} sentences ({q['pairs']} pairs) against {q['reference']}. "
        f"Share of peak: useful FLOPs (real tokens) / the one-MatMul ceiling "
        f"({_fmt(peaks['fp32_gflops'])} GFLOP/s fp32, {_fmt(peaks['int8_gops'])} GOP/s int8).",
        "",
        *_recipe_lines(model),
        *_isa_lines(model),
        *_held_out_lines(model),
        "### Cold start (fresh process to first embedding) and peak RSS",
        "",
        "| system | cold start s | vs a bare ONNX Runtime session | peak RSS MB |",
        "|---|---|---|---|",
    ]
    bare = model["cold_start"].get("onnxruntime-bare-fp32", {}).get("cold_start_s")
    for s, r in model["cold_start"].items():
        ratio = f"{r['cold_start_s'] / bare:.2f}x" if bare else "—"
        out.append(f"| {s} | {r['cold_start_s']:.2f} | {ratio} | {r['peak_rss_mb']:.0f} |")
    return [*out, ""]


def _safeguarded(peaks: dict[str, Any]) -> str:
    """Where the CPU lacks VNNI: the GEMM rate of the exact u8 x u8 safeguard that a plain 8-bit graph needs."""
    rate = peaks.get("int8_safeguarded_gops")
    return (
        f" (pair-safe weights; {_fmt(rate)} GOP/s for plain 8-bit weights, which need the exact u8 x u8 safeguard here)"
        if rate
        else ""
    )


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    # The kernel the headline model's int8 graph runs: without VNNI its weights decide whether it needs the safeguard.
    recipe = next(iter(results["models"].values()), {}).get("int8_recipe")
    lines = [
        f"# onnxbert benchmark ({'quick' if results['settings']['quick'] else 'full'} run, {results['date']})",
        "",
        f"int8 on this CPU: **{int8_isa(env['cpu']['flags'], recipe)}**; GEMM ceiling int8 / fp32 "
        f"**{results['gemm_peak']['int8_gops'] / results['gemm_peak']['fp32_gflops']:.1f}x** "
        f"({results['gemm_peak']['shape']}).",
        "",
        f"CPU: {env['cpu']['model']} ({', '.join(env['cpu']['flags'])}); {env['cpus_available_to_process']} CPUs "
        f"available, {env['threads']} threads for every system; Python {env['python']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "",
        f"GEMM ceiling ({results['gemm_peak']['shape']}): {_fmt(results['gemm_peak']['fp32_gflops'])} GFLOP/s "
        f"fp32, {_fmt(results['gemm_peak']['int8_gops'])} GOP/s int8{_safeguarded(results['gemm_peak'])}.",
        "",
        "## Headline",
        "",
    ]
    lines += [f"- {line}" for line in headline(results)]
    lines += ["", "Peers: " + "; ".join(f"{k}: {v or 'measured'}" for k, v in results["peers"].items()), ""]
    for name, model in results["models"].items():
        # runs before the pause was recorded used 50 ms
        lines += _model_section(name, model, results["gemm_peak"], results["settings"].get("pause_s", 0.05))
    lines += ["## Serve-time dependency closure", "", "| stack | MB on disk | packages |", "|---|---|---|"]
    for label, data in results["dependency_closure"].items():
        lines.append(f"| {label} | {data['mb']:.0f} | {len(data['packages'])} |")
    return "\n".join(lines) + "\n"


def plots(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = results["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.5), squeeze=False)
    for ax, (name, model) in zip(axes[0], models.items(), strict=True):
        shapes = [w for w, d in model["workloads"].items() if d["kind"] == "shape"]
        width = 0.8 / len(model["systems"])
        for i, system in enumerate(model["systems"]):
            values = [model["workloads"][w]["systems"][system]["p50_ms"] for w in shapes]
            ax.bar(np.arange(len(shapes)) + i * width, values, width, label=system)
        ax.set_xticks(np.arange(len(shapes)) + 0.4 - width / 2, shapes)
        ax.set_yscale("log")
        ax.set(title=f"{name}: p50 latency by shape (batch x tokens)", ylabel="ms (log)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency_by_shape.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.5), squeeze=False)
    for ax, (name, model) in zip(axes[0], models.items(), strict=True):
        rows = model["workloads"]["sts-dev"]["systems"]
        values = [rows[s]["sequences_per_s"] for s in model["systems"]]
        bars = ax.bar(model["systems"], values, color="tab:blue")
        ax.bar_label(bars, [f"{v:.0f}" for v in values], fontsize=8)
        ax.set(title=f"{name}: STS-B dev throughput", ylabel="sentences / s")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.5), squeeze=False)
    for ax, (name, model) in zip(axes[0], models.items(), strict=True):
        for i, system in enumerate(model["systems"]):
            x = model["workloads"]["sts-dev"]["systems"][system]["speedup_vs_pytorch"]
            y = model["quality"][system]["top10_agreement"]
            ax.scatter(x, y, s=40)
            # stagger labels: the fp32 systems all sit at agreement 1.0
            ax.annotate(system, (x, y), fontsize=8, xytext=(5, -12 * (i % 3)), textcoords="offset points")
        ax.set(
            title=f"{name}: speed against quality (real text)",
            xlabel="speed-up vs PyTorch fp32 (same run)",
            ylabel="top-10 neighbour agreement with PyTorch fp32",
        )
        ax.margins(x=0.15, y=0.1)
    fig.tight_layout()
    fig.savefig(out / "speed_vs_quality.png", dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown(results), encoding="utf-8")
    plots(results, out)


def check(out: Path) -> list[str]:
    """Problems with a run's output directory; empty when the report, JSON and plots are complete."""
    problems = []
    try:
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        return [f"results.json: {error}"]
    for key in ("environment", "gemm_peak", "models", "dependency_closure", "settings"):
        if key not in results:
            problems.append(f"results.json lacks {key!r}")
    for name, model in results.get("models", {}).items():
        for workload, data in model.get("workloads", {}).items():
            for system in model.get("systems", []):
                row = data["systems"].get(system, {})
                if not all(row.get(k, 0) > 0 for k in ("p50_ms", "p99_ms", "sequences_per_s", "real_tokens_per_s")):
                    problems.append(f"{name}/{workload}/{system}: missing or non-positive timings")
        for system in model.get("systems", []):
            if "top10_agreement" not in model.get("quality", {}).get(system, {}):
                problems.append(f"{name}/{system}: no quality figures")
        if name == "minilm" and not results.get("settings", {}).get("quick", True) and "held_out_texts" not in model:
            problems.append(f"{name}: a full run without the int8-on-unseen-text section")
    report = (out / "report.md").read_text(encoding="utf-8") if (out / "report.md").is_file() else ""
    for heading in ("## Headline", "### Latency per call", "### Real text", "### Cold start", "dependency closure"):
        if heading not in report:
            problems.append(f"report.md lacks {heading!r}")
    for plot in PLOTS:
        data = (out / plot).read_bytes() if (out / plot).is_file() else b""
        if not data.startswith(_PNG) or len(data) < 5000:
            problems.append(f"{plot}: missing or not a real PNG")
    return problems

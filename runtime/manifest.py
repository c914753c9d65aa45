"""The model directory's manifest (`onnxbert.json`): the one contract between export and runtime.

Export writes it; runtime reads and checks it. Plain dataclasses over JSON so that the file stays readable by other
tools (TEI, a bare onnxruntime script) and by people.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import REEXPORT_HINT, ModelDirectoryError
from .pooling import POOLINGS

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "POOLINGS",
    "PRECISIONS",
    "STATES",
    "UNKNOWN_TOKENS_NOTED",
    "Architecture",
    "Manifest",
    "PackedGraph",
    "TensorSpec",
    "TokenizerSettings",
    "Variant",
    "held_out_verdict",
    "searched_top10",
    "sha256_file",
    "unknown_tokens_note",
]

FORMAT_VERSION = 3
# 1: before verification states (its `passed` / `verified` flags are read into `state`); 2: before the BERT family
# (no `architecture.position_offset`: 0). A new field an older reader would choke on bumps the version, so that an
# older onnxbert says which version it reads instead of calling the manifest malformed.
_READABLE_VERSIONS = (1, 2, 3)
MANIFEST_NAME = "onnxbert.json"
PRECISIONS = ("fp32", "int8", "fp16")
# What export measured of a variant: passed its gate, failed it (never written), or could not be run (the reason).
STATES = ("passed", "failed", "unverified")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def held_out_verdict(recipe: dict[str, Any], held: dict[str, Any]) -> str:
    """How an int8 recipe's figures on a held-out text stand against the budget it was exported under.

    A recipe exported with no budget (`--int8-quality any`, the benchmarks' random-weight models) fails nothing, and
    saying "within budget" there would claim a quality that was never asked for.
    """
    budget = recipe.get("budget", {})
    if budget.get("min_mean_cosine", 0.0) < 0 and budget.get("min_top10", 0.0) <= 0:
        return "no budget"
    return "outside budget" if held.get("failures") else "within budget"


def searched_top10(budget: dict[str, Any]) -> float | None:
    """The top-10 an int8 search held its own texts to where it asked a headroom over the budget's; else None."""
    headroom = budget.get("top10_headroom", 0.0)  # absent from manifests written before it was recorded
    # rounded: 0.97 + 0.005 is 0.9750000000000001 in floats, which a top-10 of exactly 0.975 would miss
    return round(budget["min_top10"] + headroom, 9) if headroom else None


# A held-out text whose tokens are this often [UNK] is mostly outside the vocabulary: its figures are flagged.
UNKNOWN_TOKENS_NOTED = 0.05


def unknown_tokens_note(held: dict[str, Any]) -> str:
    """'; 63% of its tokens are [UNK] here' where a held-out text is largely outside the model's vocabulary."""
    share = float(held.get("unknown_tokens", 0.0))
    return f"; {share:.0%} of its tokens are [UNK] in this vocabulary" if share >= UNKNOWN_TOKENS_NOTED else ""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type, symbolic or fixed dims."""

    name: str
    dtype: str
    shape: list[str | int]


@dataclass(frozen=True)
class Architecture:
    """What the graph computes, copied from the source config."""

    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    has_pooler: bool
    position_offset: int = 0  # the position row a text's first token reads (RoBERTa: pad_token_id + 1)


@dataclass(frozen=True)
class TokenizerSettings:
    """How text becomes ids; `vocab_size` is the tokenizer's, checked against the graph's embedding rows."""

    file: str
    sha256: str
    vocab_size: int
    lowercase: bool
    max_length: int
    pad_id: int
    pad_token: str
    truncation_side: str = "right"
    verification: dict[str, Any] = field(default_factory=dict)  # ids compared with transformers' tokenizer


@dataclass(frozen=True)
class PackedGraph:
    """A variant's padding-free twin (see runtime/packing.py).

    The variant's graph plus `position_ids` and `packed_mask` inputs; its weights are read from the variant's own
    file (ONNX external data by offset), so it adds kilobytes, not a second copy of the weights.
    """

    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Variant:
    """One ONNX file of the directory, its verification state and the figures measured at export."""

    file: str
    sha256: str
    bytes: int
    precision: str
    provider: str
    fusions: dict[str, int]
    verification: dict[str, Any]
    state: str = "unverified"  # one of STATES; `verification["reason"]` says why when unverified
    recipe: dict[str, Any] = field(default_factory=dict)
    packed: PackedGraph | None = None  # absent in directories exported before packing, and for fp16 (CUDA)

    @property
    def reason(self) -> str:
        """Why the variant is unverified or failed ('' when it passed)."""
        failures = "; ".join(self.verification.get("failures", []))
        return "" if self.state == "passed" else str(self.verification.get("reason") or failures)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], version: int = FORMAT_VERSION) -> Variant:
        """Build from parsed JSON."""
        packed = raw.get("packed")
        fields = {**raw, "packed": PackedGraph(**packed) if packed is not None else None}
        if version == 1:
            figures = raw.get("verification", {})
            verified = figures.get("verified", True) is not False
            fields["state"] = "unverified" if not verified else "passed" if figures.get("passed") is True else "failed"
        return cls(**fields)


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about a model directory."""

    format_version: int
    source: dict[str, Any]
    architecture: Architecture
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    tokenizer: TokenizerSettings
    default_pooling: str
    default_variant: str | None  # the variant `variant="auto"` loads: a passed one; None when none passed
    variants: dict[str, Variant]
    versions: dict[str, str]

    def to_json(self) -> str:
        """Serialize with a stable key order, for diffs and hashes."""
        return json.dumps({"format": "onnxbert", **asdict(self)}, indent=2, ensure_ascii=False) + "\n"

    def save(self, directory: Path) -> Path:
        """Write `onnxbert.json` into `directory`."""
        path = directory / MANIFEST_NAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        """Read and check the manifest of a model directory."""
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise ModelDirectoryError(
                f"{directory} has no {MANIFEST_NAME}: it is not an onnxbert model directory; "
                f"create one with `onnxbert export MODEL --output {directory}`"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:  # Recursion: nested too deep
            raise ModelDirectoryError(f"{path} is not valid JSON ({error}); {REEXPORT_HINT}") from None
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: Any, path: Path) -> Manifest:
        """Build from parsed JSON, naming the missing or malformed field on failure."""
        if not isinstance(raw, dict) or raw.get("format") != "onnxbert":
            raise ModelDirectoryError(f'{path} is not an onnxbert manifest (no "format": "onnxbert")')
        version = raw.get("format_version")
        if version not in _READABLE_VERSIONS:
            raise ModelDirectoryError(
                f"{path} has format_version {version!r}; this onnxbert reads versions {_READABLE_VERSIONS}; "
                f"{REEXPORT_HINT} or install the onnxbert that wrote it"
            )
        try:
            manifest = cls(
                format_version=version,
                source=dict(raw["source"]),
                architecture=Architecture(**raw["architecture"]),
                inputs=[TensorSpec(**spec) for spec in raw["inputs"]],
                outputs=[TensorSpec(**spec) for spec in raw["outputs"]],
                tokenizer=TokenizerSettings(**raw["tokenizer"]),
                default_pooling=raw["default_pooling"],
                default_variant=raw["default_variant"],
                variants={name: Variant.from_dict(spec, version) for name, spec in raw["variants"].items()},
                versions=dict(raw["versions"]),
            )
        except (KeyError, TypeError, AttributeError) as error:  # AttributeError: a list or null where a {...} goes
            raise ModelDirectoryError(f"{path} is malformed ({error!r}); {REEXPORT_HINT}") from error
        problems = _problems(manifest)
        if problems:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise ModelDirectoryError(f"{path} is malformed: {shown}; {REEXPORT_HINT}")
        return manifest


def _problems(manifest: Manifest) -> list[str]:
    """What in a parsed manifest the runtime cannot trust: a field of the wrong type, then a value out of range.

    Checked at load, before any of it sizes an array, names a file to open or picks a session setting: a manifest
    that is edited, cut or written by another tool gets a clear error, never a crash deep in a run.
    """
    wrong = [
        f"{where}{name} is {_shown(value)}, not {hint}"
        for where, part in _parts(manifest)
        for name, value, hint in _wrong_types(part)
    ]
    if wrong:  # the range checks below read these fields
        return wrong
    arch, tokenizer = manifest.architecture, manifest.tokenizer
    problems = [f"variants.{name}: not one of {PRECISIONS}" for name in manifest.variants if name not in PRECISIONS]
    if manifest.default_pooling not in POOLINGS:
        problems.append(f"default_pooling {_shown(manifest.default_pooling)} not in {POOLINGS}")
    if manifest.default_variant is not None and manifest.default_variant not in manifest.variants:
        problems.append(f"default_variant {_shown(manifest.default_variant)} is not one of {sorted(manifest.variants)}")
    problems += [
        f"variants.{name}.state {_shown(v.state)} is not among {STATES}"
        for name, v in manifest.variants.items()
        if v.state not in STATES
    ]
    files = {"tokenizer.file": tokenizer.file}
    for name, variant in manifest.variants.items():
        files[f"variants.{name}.file"] = variant.file
        if variant.packed is not None:
            files[f"variants.{name}.packed.file"] = variant.packed.file
    problems += [
        f"{where} {_shown(value)} is not a file name inside the directory"
        for where, value in files.items()
        if not _plain_file_name(value)
    ]
    counts = ("num_layers", "hidden_size", "num_heads", "intermediate_size", "vocab_size", "max_position_embeddings")
    sizes = {f"architecture.{name}": getattr(arch, name) for name in counts}
    sizes["tokenizer.vocab_size"] = tokenizer.vocab_size
    problems += [f"{where} is {value}, not positive" for where, value in sizes.items() if value < 1]
    problems += [
        f"architecture.{name} is {getattr(arch, name)}, below 0"
        for name in ("type_vocab_size", "position_offset")
        if getattr(arch, name) < 0
    ]
    positions = arch.max_position_embeddings - arch.position_offset
    if not 2 <= tokenizer.max_length <= positions:
        problems.append(
            f"tokenizer.max_length is {tokenizer.max_length}, not within [2, {positions}] (the graph's positions)"
        )
    if not 0 <= tokenizer.pad_id < tokenizer.vocab_size:
        problems.append(f"tokenizer.pad_id is {tokenizer.pad_id}, not a token of its {tokenizer.vocab_size}")
    if tokenizer.truncation_side not in ("right", "left"):
        problems.append(f"tokenizer.truncation_side is {_shown(tokenizer.truncation_side)}, not 'right' or 'left'")
    for name, variant in manifest.variants.items():
        if variant.precision != name or variant.provider not in ("cpu", "cuda"):
            problems.append(f"variants.{name}: precision {_shown(variant.precision)} on {_shown(variant.provider)}")
        sized = [variant.bytes] + ([variant.packed.bytes] if variant.packed is not None else [])
        problems += [f"variants.{name}: a file of {size} bytes" for size in sized if size < 0]
        # the runtime picks its int8 session setting from these (runtime/session.py, int8_fits_16_bits)
        levels, pairs = variant.recipe.get("weight_levels", 127), variant.recipe.get("weight_pair_limit")
        if not (_matches(levels, int) and _matches(pairs, int | None)):
            problems.append(
                f"variants.{name}.recipe: weight_levels {_shown(levels)}, weight_pair_limit {_shown(pairs)}"
            )
    return problems


def _parts(manifest: Manifest) -> Iterator[tuple[str, Any]]:
    """Each dataclass of the manifest and its place ('' for the manifest itself, else 'tokenizer.' ...)."""
    yield "", manifest
    yield "architecture.", manifest.architecture
    yield "tokenizer.", manifest.tokenizer
    yield from ((f"inputs[{i}].", spec) for i, spec in enumerate(manifest.inputs))
    yield from ((f"outputs[{i}].", spec) for i, spec in enumerate(manifest.outputs))
    for name, variant in manifest.variants.items():
        yield f"variants.{name}.", variant
        if variant.packed is not None:
            yield f"variants.{name}.packed.", variant.packed


def _wrong_types(part: Any) -> Iterator[tuple[str, Any, str]]:
    hints = typing.get_type_hints(type(part))
    for spec in dataclasses.fields(part):
        value, hint = getattr(part, spec.name), hints[spec.name]
        if not _matches(value, hint):
            yield spec.name, value, hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's annotation (int is not bool; float takes int)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _shown(value: Any) -> str:
    """A value for an error message, cut short: a hostile manifest's megabyte string stays out of logs."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain_file_name(name: str) -> bool:
    """A file of the model directory itself, named as a file system takes it.

    No directory part (either separator), not '.' or '..', printable, at most 255 bytes of UTF-8: opening it can fail
    only as a missing file.
    """
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return 0 < size <= 255 and name not in (".", "..") and name.isprintable() and not {"/", "\\"} & set(name)

"""Load-time checks of a model directory: manifest, tokenizer and graph must agree before anything runs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from .errors import REEXPORT_HINT, ModelDirectoryError
from .manifest import PRECISIONS, Manifest, Variant, sha256_file
from .packing import PACKED_INPUTS
from .session import Provider
from .tokenize import TextTokenizer

__all__ = ["ModelDirectory", "check_graph_io", "open_directory"]

_LFS_MAGIC = b"version https://git-lfs"
_ORT_TYPES = {
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
}


@dataclass(frozen=True)
class ModelDirectory:
    """A checked directory: its manifest, the chosen variant and the files to load."""

    path: Path
    manifest: Manifest
    variant_name: str
    variant: Variant
    graph_path: Path
    tokenizer_path: Path
    packed_path: Path | None  # the variant's padding-free twin, when exported and wanted (runtime/packing.py)


def _choose_variant(manifest: Manifest, variant: str, provider: Provider) -> str:
    """`auto`: a variant that passed verification, fp16 first on CUDA.

    A named one loads even when unverified or built for another provider, with a warning: asking by name is the
    user's explicit choice.
    """
    if variant == "auto":
        fp16 = manifest.variants.get("fp16")
        if provider is Provider.CUDA and fp16 is not None and fp16.state == "passed":
            return "fp16"
        default = manifest.default_variant
        if default is None or manifest.variants[default].state != "passed":
            states = ", ".join(
                f"{name} {v.state}" + (f" ({v.reason})" if v.reason else "") for name, v in manifest.variants.items()
            )
            raise ModelDirectoryError(
                f"variant='auto' loads only a verified default, and this directory's is {default or 'none'} "
                f"({states}); pass variant=NAME to load one by name"
            )
        return default
    if variant not in PRECISIONS:
        raise ValueError(f"variant={variant!r} is not supported; use 'auto' or one of {', '.join(PRECISIONS)}")
    chosen = manifest.variants.get(variant)
    if chosen is None:
        kept = ",".join(name for name in PRECISIONS if name in manifest.variants or name == variant)
        raise ModelDirectoryError(
            f"variant {variant!r} was not exported into this directory (it has {sorted(manifest.variants)}); "
            f"export it with `onnxbert export MODEL --output DIR --variants {kept} --force` (keeps the others)"
        )
    if chosen.state == "failed":
        raise ModelDirectoryError(f"variant {variant!r} failed verification ({chosen.reason}); {REEXPORT_HINT}")
    if chosen.state == "unverified":
        warnings.warn(f"variant {variant!r} is unverified: {chosen.reason}", UserWarning, stacklevel=4)
    if chosen.provider != provider.value:
        warnings.warn(
            f"variant {variant!r} is built for {chosen.provider}, and runs here on {provider.value} unverified",
            UserWarning,
            stacklevel=4,
        )
    return variant


def _check_file(path: Path, *, expected_sha256: str, expected_bytes: int | None, verify_hash: bool) -> None:
    if not path.is_file():
        raise ModelDirectoryError(f"{path} is missing; {REEXPORT_HINT}")
    with path.open("rb") as handle:
        head = handle.read(len(_LFS_MAGIC))
    if head == _LFS_MAGIC:
        raise ModelDirectoryError(
            f"{path} is a Git LFS pointer, not the file itself: run `git lfs pull` in that repository"
        )
    size = path.stat().st_size
    if expected_bytes is not None and size != expected_bytes:
        raise ModelDirectoryError(
            f"{path} is {size} bytes but the manifest says {expected_bytes} (truncated or replaced); {REEXPORT_HINT}"
        )
    if verify_hash and sha256_file(path) != expected_sha256:
        raise ModelDirectoryError(f"{path} does not match the sha256 in the manifest; {REEXPORT_HINT}")


def open_directory(
    path: str | Path,
    *,
    variant: str,
    provider: Provider,
    packing: bool,
    verify_hashes: bool,
    manifest: Manifest | None = None,
) -> ModelDirectory:
    """Read the manifest (unless given), choose the variant and check every file it names (the twin when wanted)."""
    root = Path(path)
    if not root.is_dir():
        raise ModelDirectoryError(f"{root} is not a directory; create one with `onnxbert export MODEL --output {root}`")
    manifest = manifest if manifest is not None else Manifest.load(root)
    name = _choose_variant(manifest, variant, provider)
    chosen = manifest.variants[name]
    graph_path = root / chosen.file
    _check_file(graph_path, expected_sha256=chosen.sha256, expected_bytes=chosen.bytes, verify_hash=verify_hashes)
    packed_path = None
    if packing and chosen.packed is not None:
        packed_path = root / chosen.packed.file
        twin = chosen.packed
        _check_file(packed_path, expected_sha256=twin.sha256, expected_bytes=twin.bytes, verify_hash=verify_hashes)
    tokenizer_path = root / manifest.tokenizer.file
    if not tokenizer_path.is_file():
        raise ModelDirectoryError(f"{tokenizer_path} is missing; {REEXPORT_HINT}")
    return ModelDirectory(root, manifest, name, chosen, graph_path, tokenizer_path, packed_path)


def check_tokenizer(directory: ModelDirectory, tokenizer: TextTokenizer, *, verify_hash: bool) -> None:
    """The tokenizer must be the one exported with the graph: same vocabulary, ids inside the embedding table."""
    settings = directory.manifest.tokenizer
    rows = directory.manifest.architecture.vocab_size
    if tokenizer.vocab_size != settings.vocab_size or tokenizer.vocab_size > rows:
        raise ModelDirectoryError(
            f"{directory.tokenizer_path} has {tokenizer.vocab_size} tokens but the model was exported with a "
            f"{settings.vocab_size}-token tokenizer and {rows} embedding rows: the tokenizer belongs to another "
            f"model; {REEXPORT_HINT}"
        )
    if verify_hash and sha256_file(directory.tokenizer_path) != settings.sha256:
        raise ModelDirectoryError(
            f"{directory.tokenizer_path} does not match the sha256 in the manifest (edited or from another "
            f"model); {REEXPORT_HINT}"
        )


def check_graph_io(directory: ModelDirectory, session: ort.InferenceSession, *, packed: bool) -> None:
    """The running graph's inputs and outputs must be the ones the manifest declares (plus packing's two)."""
    declared = {spec.name: spec.dtype for spec in directory.manifest.inputs} | (PACKED_INPUTS if packed else {})
    actual = {i.name: _ORT_TYPES.get(i.type, i.type) for i in session.get_inputs()}
    path = directory.packed_path if packed else directory.graph_path
    if declared != actual:
        raise ModelDirectoryError(f"{path} takes inputs {actual} but the manifest declares {declared}; {REEXPORT_HINT}")
    outputs = {o.name for o in session.get_outputs()}
    missing = {spec.name for spec in directory.manifest.outputs} - outputs
    if missing:
        raise ModelDirectoryError(f"{path} lacks outputs {sorted(missing)} that the manifest declares; {REEXPORT_HINT}")

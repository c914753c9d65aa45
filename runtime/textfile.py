"""Texts from a file, for `onnxbert embed --input` and `onnxbert embed-corpus`: Parquet, JSONL or one per line.

Every fault names the file and where (line or row), never a parser's bare message. Export's `--int8-text` reader
(export/int8_text.py) streams and samples a bounded number of texts, which embedding cannot, and reads each JSONL
line with `jsonl_text` from here.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

__all__ = ["JSONL_SUFFIXES", "JsonlLineError", "jsonl_text", "read_texts"]

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def read_texts(path: Path, field: str = "text", option: str = "--field") -> list[str]:
    """Column `field` of a .parquet file, `field` of each record of a .jsonl file, else the file's lines.

    `option` is the command-line option that names the field, for the error when it is missing.
    """
    if path.suffix == ".parquet":
        return _parquet_texts(path, field, option)
    return _line_texts(path, field if path.suffix in JSONL_SUFFIXES else None, option)


def _line_texts(path: Path, field: str | None, option: str) -> list[str]:
    """Each line (field None), or `field` of each line's JSON object, blank lines skipped."""
    texts: list[str] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)  # a byte-order mark is not part of the first text
            try:
                line = raw.decode("utf-8").rstrip("\r\n")  # CRLF files too
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{number}: not UTF-8 ({error.reason} at byte {error.start})") from None
            if field is None:
                texts.append(line)
                continue
            if not line.strip():
                continue
            try:
                texts.append(jsonl_text(line, field, option))
            except JsonlLineError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
    return texts


class JsonlLineError(ValueError):
    """A JSONL line without a text: not JSON, or neither a string nor an object with the field as a string."""


def jsonl_text(line: str, field: str, option: str) -> str:
    """The text of one JSONL line: `field` of a JSON object, or the line's JSON string itself.

    `option` is the command-line option that names the field, for the error when it is missing.
    """
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as error:  # RecursionError: nested deeper than json reads
        raise JsonlLineError(f"not a JSON record ({error})") from None
    value = record.get(field) if isinstance(record, dict) else record
    if not isinstance(value, str):
        raise JsonlLineError(f"expected a JSON object with a string field {field!r} (pass {option}), or a JSON string")
    return value


def _parquet_texts(path: Path, column: str, option: str) -> list[str]:
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        schema = pq.read_schema(path)
        if column not in schema.names:
            raise ValueError(f"{path} has no column {column!r} (columns: {schema.names}); pass {option}")
        kind = schema.field(column).type
        if not (pyarrow.types.is_string(kind) or pyarrow.types.is_large_string(kind)):
            raise ValueError(f"{path}: column {column!r} holds {kind}, not text; pass {option}")
        values = pq.read_table(path, columns=[column]).column(column)
    except pyarrow.ArrowException as error:
        raise ValueError(f"{path} is not a readable Parquet file: {error}") from None
    if values.null_count:  # a missing text has no vector: refused, not embedded as the string "None"
        row = pyarrow.compute.index(values.is_null(), True).as_py() + 1
        raise ValueError(f"{path}: row {row} of column {column!r} is null; give every row a text")
    return list(values.to_pylist())

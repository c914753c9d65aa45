"""Texts from files for `onnxbert embed --input` and `embed-corpus` (Parquet, JSONL, lines), and outputs written whole.

Read as a stream (`iter_texts`, `text_chunks`): a file of any size is embedded in bounded memory. Every fault names
the file and where (line or row), never a parser's bare message. Export's `--int8-text` reader
(export/int8_text.py) samples a bounded number of texts, which embedding cannot, and reads each JSONL line with
`jsonl_text` from here. An output is there whole or not at all (`written_whole`).
"""

from __future__ import annotations

import codecs
import itertools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "JSONL_SUFFIXES",
    "JsonlLineError",
    "iter_texts",
    "jsonl_text",
    "read_texts",
    "text_chunks",
    "written_whole",
]

JSONL_SUFFIXES = (".jsonl", ".ndjson")
_PARQUET_BATCH = 8192  # rows read from Parquet at a time


def iter_texts(path: Path, field: str = "text", option: str = "--field") -> Iterator[str]:
    """Column `field` of a .parquet file, `field` of each record of a .jsonl file, else the file's lines, as read.

    `option` is the command-line option that names the field, for the error when it is missing. A fault is raised
    when the reading reaches it: count the texts first (`sum(1 for _ in iter_texts(...))`) to find it before any work.
    """
    if path.suffix == ".parquet":
        return _parquet_texts(path, field, option)
    return _line_texts(path, field if path.suffix in JSONL_SUFFIXES else None, option)


def read_texts(path: Path, field: str = "text", option: str = "--field") -> list[str]:
    """`iter_texts` as a list: for files known to be small."""
    return list(iter_texts(path, field, option))


def text_chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    """`texts` in consecutive lists of `size` (the last one shorter), never holding more than one."""
    stream = iter(texts)
    while chunk := list(itertools.islice(stream, size)):
        yield chunk


def _line_texts(path: Path, field: str | None, option: str) -> Iterator[str]:
    """Each line (field None), or `field` of each line's JSON object, blank lines skipped."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)  # a byte-order mark is not part of the first text
            try:
                line = raw.decode("utf-8").rstrip("\r\n")  # CRLF files too
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{number}: not UTF-8 ({error.reason} at byte {error.start})") from None
            if field is None:
                yield line
                continue
            if not line.strip():
                continue
            try:
                text = jsonl_text(line, field, option)
            except JsonlLineError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
            yield text


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


def _parquet_texts(path: Path, column: str, option: str) -> Iterator[str]:
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
        batches = pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH, columns=[column])
        start = 0
        for batch in batches:
            values = batch.column(0)
            if values.null_count:  # a missing text has no vector: refused, not embedded as the string "None"
                row = start + pyarrow.compute.index(values.is_null(), True).as_py() + 1
                raise ValueError(f"{path}: row {row} of column {column!r} is null; give every row a text")
            start += len(values)
            yield from values.to_pylist()
    except pyarrow.ArrowException as error:
        raise ValueError(f"{path} is not a readable Parquet file: {error}") from None


@contextmanager
def written_whole(output: Path) -> Iterator[Path]:
    """A scratch file beside `output` that replaces it when the block ends without an error.

    A killed or failed run leaves no output that looks complete and never half-overwrites an earlier one; the scratch
    file is named `.<output name>.<random>.tmp`, so a later run can find what a killed one left.
    """
    handle, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(handle)
    scratch = Path(name)
    try:
        yield scratch
        os.chmod(scratch, 0o666 & ~_umask())  # mkstemp makes it private; the result is an ordinary file
        os.replace(scratch, output)
    finally:
        scratch.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask

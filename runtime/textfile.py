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
    "CHUNK_CHARS",
    "JSONL_SUFFIXES",
    "MAX_TEXT_BYTES",
    "JsonlLineError",
    "iter_texts",
    "jsonl_text",
    "read_texts",
    "text_chunks",
    "written_whole",
]

JSONL_SUFFIXES = (".jsonl", ".ndjson")
# Rows read from Parquet at a time: a batch may hold this many values of up to MAX_TEXT_BYTES each.
_PARQUET_BATCH = 256
# One line, JSONL record or Parquet value; longer is an error, not a read of unbounded size. A BERT reads at most 512
# tokens, ~4 kB of ordinary text: a text this long is a file's structure gone wrong (one line for a whole book).
MAX_TEXT_BYTES = 1 << 20
# A chunk of texts closes at this many characters whatever its count: 2,048 texts of up to MAX_TEXT_BYTES each would
# otherwise hold 2 GiB of text.
CHUNK_CHARS = 1 << 24


def iter_texts(path: Path, field: str = "text", option: str = "--field", *, skip_nulls: bool = False) -> Iterator[str]:
    """Column `field` of a .parquet file, `field` of each record of a .jsonl file, else the file's lines, as read.

    `option` is the command-line option that names the field, for the error when it is missing. A null Parquet value
    is an error unless `skip_nulls`. A fault (a ValueError naming the file and its line or row) is raised when the
    reading reaches it: count the texts first (`sum(1 for _ in iter_texts(...))`) to find it before any work.
    """
    if path.suffix == ".parquet":
        return _parquet_texts(path, field, option, skip_nulls)
    return _line_texts(path, field if path.suffix in JSONL_SUFFIXES else None, option)


def read_texts(path: Path, field: str = "text", option: str = "--field") -> list[str]:
    """`iter_texts` as a list: for files known to be small."""
    return list(iter_texts(path, field, option))


def text_chunks(texts: Iterable[str], size: int, chars: int = CHUNK_CHARS) -> Iterator[list[str]]:
    """`texts` in consecutive lists of `size`, or fewer where they reach `chars` characters; one list held at a time."""
    chunk: list[str] = []
    held = 0
    for text in texts:
        chunk.append(text)
        held += len(text)
        if len(chunk) == size or held >= chars:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Each line's number and text, read one line at a time, none longer than MAX_TEXT_BYTES."""
    with path.open("rb") as handle:
        offset = 0
        for number in itertools.count(1):
            raw = handle.readline(MAX_TEXT_BYTES + 2)  # room for the line's end, "\r\n"
            if not raw:
                return
            if len(raw.rstrip(b"\r\n")) > MAX_TEXT_BYTES:
                raise ValueError(
                    f"{path}:{number}: longer than {MAX_TEXT_BYTES:,} bytes; give one text per line (a BERT reads "
                    "at most its max_length tokens of it)"
                )
            line = raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw  # a BOM is not part of the first text
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                at = offset + len(raw) - len(line) + error.start
                raise ValueError(f"{path}:{number}: not UTF-8 ({error.reason} at byte {at} of the file)") from None
            offset += len(raw)
            yield number, text.rstrip("\r\n")  # CRLF files too


def _line_texts(path: Path, field: str | None, option: str) -> Iterator[str]:
    """Each line (field None), or `field` of each line's JSON object, blank lines skipped."""
    for number, line in _lines(path):
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


def _parquet_texts(path: Path, column: str, option: str, skip_nulls: bool) -> Iterator[str]:
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
            if values.null_count and not skip_nulls:  # no vector for a missing text: not embedded as "None"
                row = start + pyarrow.compute.index(values.is_null(), True).as_py() + 1
                raise ValueError(f"{path}: row {row} of column {column!r} is null; give every row a text")
            too_long = pyarrow.compute.greater(pyarrow.compute.binary_length(values), MAX_TEXT_BYTES)
            if pyarrow.compute.any(too_long).as_py():
                row = start + pyarrow.compute.index(too_long, True).as_py() + 1
                raise ValueError(
                    f"{path}: row {row} of column {column!r} is longer than {MAX_TEXT_BYTES:,} bytes; give one text "
                    "per row (a BERT reads at most its max_length tokens of it)"
                )
            start += len(values)
            yield from (value for value in values.to_pylist() if value is not None)
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
    """The process's umask, read without setting it where Linux reports it.

    os.umask is process-wide: setting it, even straight back, would give a file that another thread creates meanwhile
    (a Ray worker, a server) the wrong mode.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)  # elsewhere reading it means setting it; put it straight back
    os.umask(mask)
    return mask

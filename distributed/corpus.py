"""Corpus embedding: files in, one Parquet file out per input, written atomically.

Finished files are skipped, so a killed run resumes where it stopped; each output records what it was embedded from
(the source's content, the model directory, the options), and one that does not match this run is an error, never
skipped. In-process by default, on Ray on request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CorpusJob", "embed_corpus", "iter_texts", "output_path", "read_texts"]

_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".txt")


@dataclass(frozen=True)
class CorpusJob:
    """What to embed and how: the same options as `Encoder.embed`."""

    model_dir: Path
    column: str = "text"
    pooling: str | None = None
    normalize: bool = False
    variant: str = "auto"
    threads: int | None = None  # per run; None: 1, with one run per core at once
    chunk: int = 4096  # texts per Encoder call, and per Parquet row group written: bounds memory on large files
    ray_chunk: int = 65_536  # texts per Ray Dataset: each starts its own actor pool, so far fewer, larger ones
    ray_chunk_chars: int = 1 << 28  # ... or fewer texts, where they reach this many characters


def output_path(source: Path, outdir: Path) -> Path:
    """`docs.jsonl` -> `OUTDIR/docs.parquet` (input names must be unique by stem)."""
    return outdir / f"{source.stem}.parquet"


def iter_texts(path: Path, column: str) -> Iterator[str]:
    """Texts of a .parquet (column), .jsonl / .ndjson (field) or .txt (one per line) file, as read."""
    if path.suffix not in _SUFFIXES:
        raise ValueError(f"{path}: unsupported input; use one of {', '.join(_SUFFIXES)}")
    from onnxbert.runtime.textfile import iter_texts as iter_file_texts  # importing runtime loads onnxruntime

    return iter_file_texts(path, column, option="--column")


def read_texts(path: Path, column: str) -> list[str]:
    """`iter_texts` as a list: for files known to be small."""
    return list(iter_texts(path, column))


# The Parquet schema metadata key under which an output records what it was embedded from (JSON).
RECORD_KEY = b"onnxbert.embed_corpus"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _record(job: CorpusJob, source: Path) -> dict[str, Any]:
    """What an output is embedded from: the source's bytes, the model's manifest, the options that change vectors.

    The manifest holds every file of the model directory's hash. The source's name is not part of it: a copy of a
    file is the same source.
    """
    return {
        "source_sha256": _sha256(source),
        "manifest_sha256": _sha256(Path(job.model_dir) / "onnxbert.json"),
        "variant": job.variant,
        "column": job.column,
        "pooling": job.pooling,
        "normalize": job.normalize,
    }


def _check_done(out: Path, source: Path, expected: dict[str, Any]) -> None:
    """An existing output may be skipped only when it was embedded from what this run would embed; else raise."""
    import pyarrow.parquet as pq

    advice = f"remove it to embed {source} again, or write to another output folder"
    try:
        raw = (pq.read_schema(out).metadata or {}).get(RECORD_KEY)
        recorded = json.loads(raw) if raw is not None else None
    except Exception as error:  # pyarrow raises its own errors for a file that is not Parquet
        raise ValueError(f"{out} exists and is not a readable Parquet file ({error}): {advice}") from None
    if not isinstance(recorded, dict):
        raise ValueError(f"{out} exists but holds no record of what it was embedded from: {advice}")
    names = {"source_sha256": f"content of {source.name}", "manifest_sha256": "model directory"}
    differ = [
        names.get(key, f"{key} ({recorded.get(key)!r}; this run {value!r})")
        for key, value in expected.items()
        if recorded.get(key) != value
    ]
    if differ:
        raise ValueError(f"{out} was embedded with a different {', '.join(differ)}: {advice}")


def _write_parquet(
    path: Path, parts: Iterator[tuple[list[str], np.ndarray]], dimension: int, record: dict[str, Any]
) -> int:
    """`text` and `embedding` columns, one row group per part, written whole or not at all; returns the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from onnxbert.runtime.textfile import written_whole

    schema = pa.schema([("text", pa.string()), ("embedding", pa.list_(pa.float32(), dimension))])
    schema = schema.with_metadata({RECORD_KEY: json.dumps(record).encode()})
    rows = 0
    with written_whole(path) as scratch, pq.ParquetWriter(scratch, schema) as writer:
        for texts, vectors in parts:
            flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
            embedding = pa.FixedSizeListArray.from_arrays(flat, dimension)
            writer.write_table(pa.table([pa.array(texts, type=pa.string()), embedding], schema=schema))
            rows += len(texts)
    return rows


def _embed_local(job: CorpusJob, chunks: Iterator[list[str]]) -> Iterator[tuple[list[str], np.ndarray]]:
    from onnxbert.runtime import Encoder, available_cpus

    # As on Ray (one actor per `threads` cores): one-thread runs, one per core at once, outrun one run at a time on
    # every core (MiniLM int8 on 2 AMD Zen 4 cores: 14% more texts a second).
    threads = job.threads or 1
    encoder = Encoder(job.model_dir, variant=job.variant, threads=threads, workers=max(1, available_cpus() // threads))
    for texts in chunks:
        yield texts, encoder.embed(texts, pooling=job.pooling, normalize=job.normalize)


def _embed_ray(
    job: CorpusJob, chunks: Iterator[list[str]], address: str | None
) -> Iterator[tuple[list[str], np.ndarray]]:
    """One file's texts on a Ray cluster (joined at `address`, or a local one), one Dataset per chunk, in order."""
    import ray
    import ray.data

    from .ray_data import embed_dataset

    if not ray.is_initialized():
        # Ray's own progress and log lines are not this command's output. Its core worker's C++ log goes to `fatal`
        # unless the user set a level (an actor pool winding down logs "Failed to kill actor ... Socket closed" as
        # an error), its Python loggers to ERROR. Failures still raise here.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        ray.init(address=address, include_dashboard=False, logging_level="error", log_to_driver=False)
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False
    cpus = int(ray.available_resources().get("CPU", 1))
    threads = job.threads or 1
    for texts in chunks:
        out = embed_dataset(
            ray.data.from_items([{"text": t} for t in texts]),
            job.model_dir,
            actors=max(1, cpus // threads),
            cpus_per_actor=threads,
            pooling=job.pooling,
            normalize=job.normalize,
            variant=job.variant,
        )
        yield texts, np.stack([row["embedding"] for row in out.take_all()]).astype(np.float32)


def embed_corpus(
    job: CorpusJob,
    inputs: Sequence[str | Path],
    outdir: str | Path,
    *,
    ray_address: str | None = None,
    use_ray: bool = False,
    progress: bool = True,
) -> dict[str, list[Path]]:
    """Embed every input file not yet done; returns which outputs were written and which were already there."""
    sources = [Path(p) for p in inputs]
    for source in sources:
        if source.suffix not in _SUFFIXES or not source.is_file():
            raise ValueError(f"{source}: not a readable {', '.join(_SUFFIXES)} file")
    stems = [s.stem for s in sources]
    if len(set(stems)) != len(stems):
        raise ValueError(f"input files must have distinct names (outputs are named by stem): {stems}")
    target = Path(outdir)
    target.mkdir(parents=True, exist_ok=True)
    from onnxbert.runtime.manifest import Manifest  # importing runtime loads onnxruntime
    from onnxbert.runtime.textfile import text_chunks

    dimension = Manifest.load(Path(job.model_dir)).architecture.hidden_size
    records = [_record(job, source) for source in sources]
    for source, record in zip(sources, records, strict=True):  # before any work: a mismatch is found at once
        if (out := output_path(source, target)).exists():
            _check_done(out, source, record)
    done: dict[str, list[Path]] = {"written": [], "skipped": []}
    for index, (source, record) in enumerate(zip(sources, records, strict=True), start=1):
        out = output_path(source, target)
        if out.exists():
            done["skipped"].append(out)
            _say(progress, f"[{index}/{len(sources)}] {source.name}: done already, skipped")
            continue
        for stale in target.glob(f".{out.name}.*.tmp"):  # left by a run killed while writing this file
            stale.unlink()
        # A first pass finds a file's faults before any work is done; then the file streams through in chunks.
        for _ in iter_texts(source, job.column):
            pass
        if use_ray:
            parts = _embed_ray(
                job, text_chunks(iter_texts(source, job.column), job.ray_chunk, job.ray_chunk_chars), ray_address
            )
        else:
            parts = _embed_local(job, text_chunks(iter_texts(source, job.column), job.chunk))
        rows = _write_parquet(out, parts, dimension, record)
        done["written"].append(out)
        _say(progress, f"[{index}/{len(sources)}] {source.name}: {rows} texts -> {out}")
    return done


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr, flush=True)

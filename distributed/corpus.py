"""Corpus embedding: files in, one Parquet file out per input, written atomically.

Finished files are skipped, so a killed run resumes where it stopped. In-process by default, on Ray on request.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CorpusJob", "embed_corpus", "output_path", "read_texts"]

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
    chunk: int = 4096  # texts per Encoder call: bounds memory on large files


def output_path(source: Path, outdir: Path) -> Path:
    """`docs.jsonl` -> `OUTDIR/docs.parquet` (input names must be unique by stem)."""
    return outdir / f"{source.stem}.parquet"


def read_texts(path: Path, column: str) -> list[str]:
    """Texts of a .parquet (column), .jsonl / .ndjson (field) or .txt (one per line) file."""
    if path.suffix not in _SUFFIXES:
        raise ValueError(f"{path}: unsupported input; use one of {', '.join(_SUFFIXES)}")
    from onnxbert.runtime.textfile import read_texts as read_file_texts  # importing runtime loads onnxruntime

    return read_file_texts(path, column, option="--column")


def write_parquet(path: Path, texts: list[str], vectors: np.ndarray) -> None:
    """Write `text` and `embedding` columns to a temporary file, then rename: a file is there whole or not at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    embedding = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    table = pa.table({"text": pa.array(texts, type=pa.string()), "embedding": embedding})
    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    os.chmod(scratch, 0o666 & ~_umask())  # mkstemp makes it private; the result is an ordinary file
    try:
        pq.write_table(table, scratch)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _embed_local(job: CorpusJob, texts: list[str]) -> np.ndarray:
    from onnxbert.runtime import Encoder, available_cpus

    # As on Ray (one actor per `threads` cores): one-thread runs, one per core at once, outrun one run at a time on
    # every core (MiniLM int8 on 2 AMD Zen 4 cores: 14% more texts a second).
    threads = job.threads or 1
    encoder = Encoder(job.model_dir, variant=job.variant, threads=threads, workers=max(1, available_cpus() // threads))
    parts = [
        encoder.embed(texts[i : i + job.chunk], pooling=job.pooling, normalize=job.normalize)
        for i in range(0, len(texts), job.chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.hidden_size), np.float32)


def _embed_ray(job: CorpusJob, texts: list[str], address: str | None) -> np.ndarray:
    """One file's texts on a Ray cluster (joined at `address`, or a local one), in order."""
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
    ds = ray.data.from_items([{"text": t} for t in texts])
    out = embed_dataset(
        ds,
        job.model_dir,
        actors=max(1, cpus // threads),
        cpus_per_actor=threads,
        pooling=job.pooling,
        normalize=job.normalize,
        variant=job.variant,
    )
    rows = out.take_all()
    return np.stack([row["embedding"] for row in rows]).astype(np.float32)


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
    done: dict[str, list[Path]] = {"written": [], "skipped": []}
    for index, source in enumerate(sources, start=1):
        out = output_path(source, target)
        if out.exists():
            done["skipped"].append(out)
            _say(progress, f"[{index}/{len(sources)}] {source.name}: done already, skipped")
            continue
        for stale in target.glob(f".{out.name}.*.tmp"):  # left by a run killed while writing this file
            stale.unlink()
        texts = read_texts(source, job.column)
        vectors = _embed_ray(job, texts, ray_address) if use_ray else _embed_local(job, texts)
        write_parquet(out, texts, vectors)
        done["written"].append(out)
        _say(progress, f"[{index}/{len(sources)}] {source.name}: {len(texts)} texts -> {out}")
    return done


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr, flush=True)

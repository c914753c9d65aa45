"""Ray Data: one Encoder per actor, ONNX Runtime threads set from the actor's CPUs.

Ray sets OMP_NUM_THREADS for its workers, but ONNX Runtime does not read it: without an explicit intra-op thread
count every actor would start as many threads as the host has cores and the actors would fight over them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import ray.data

__all__ = ["EncoderActor", "embed_dataset"]


class EncoderActor:
    """Callable class for `Dataset.map_batches`: text column in, float32 embedding column out."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        threads: int = 1,
        column: str = "text",
        output_column: str = "embedding",
        pooling: str | None = None,
        normalize: bool = False,
        variant: str = "auto",
        token_level: bool = False,
    ) -> None:
        from onnxbert.runtime import Encoder

        self.encoder = Encoder(model_dir, variant=variant, provider="cpu", threads=threads, spinning=False)
        self.column, self.output_column = column, output_column
        self.pooling, self.normalize, self.token_level = pooling, normalize, token_level

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One Ray Data batch: the input columns plus the output column."""
        texts = self._texts(batch)
        if self.token_level:
            hidden = self.encoder.encode(texts).last_hidden_state  # ragged: an object column of (tokens, H) arrays
            column = np.empty(len(hidden), dtype=object)
            column[:] = hidden
            return {**batch, self.output_column: column}
        vectors = self.encoder.embed(texts, pooling=self.pooling, normalize=self.normalize)
        return {**batch, self.output_column: vectors}

    def _texts(self, batch: dict[str, np.ndarray]) -> list[str]:
        """The batch's texts; a row without one is an error, as in a file: a null is not embedded as "None"."""
        if self.column not in batch:
            raise ValueError(f"the dataset has no column {self.column!r} (it has {sorted(batch)}); pass column=")
        texts: list[str] = batch[self.column].tolist()
        for text in texts:
            if not isinstance(text, str):
                shown = repr(text)[:60]
                raise ValueError(f"a row of column {self.column!r} holds {shown}, not a text: give every row a string")
        return texts


def embed_dataset(
    ds: ray.data.Dataset,
    model_dir: str | Path,
    *,
    actors: int = 1,
    cpus_per_actor: int = 1,
    batch_size: int = 256,
    preserve_order: bool = True,
    **options: Any,
) -> ray.data.Dataset:
    """`ds` with an embedding column added by `actors` Encoder actors of `cpus_per_actor` CPUs (and ORT threads).

    `options` go to EncoderActor (column, output_column, pooling, normalize, variant, token_level).
    """
    from ray.data import ActorPoolStrategy

    out = ds.map_batches(
        EncoderActor,
        fn_constructor_args=(str(model_dir),),
        fn_constructor_kwargs={"threads": cpus_per_actor, **options},
        compute=ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        batch_size=batch_size,
        batch_format="numpy",
    )
    if preserve_order:
        # A Dataset copies the DataContext when it is created: the flag must be set on this one, not the global.
        out.context.execution_options.preserve_order = True
    return out

"""Load the checkpoint into transformers' encoder for its model type and trace it to ONNX."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, PreTrainedModel
from transformers.utils import logging as hf_logging

from .errors import ExportError
from .source import Checkpoint

__all__ = ["INPUT_NAMES", "export_graph", "input_names", "load_model"]

# What a graph may take, in this order; each model takes the ones its forward() accepts (DistilBERT: no token types).
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def load_model(checkpoint: Checkpoint, *, attention: str = "eager") -> tuple[PreTrainedModel, bool]:
    """The encoder (BertModel, RobertaModel, ...) in eval mode, and whether it has a pooler with its weights.

    Eager attention traces to the MatMul/Softmax pattern ONNX Runtime's BERT fusions recognise.
    Any missing weight other than the pooler means an incomplete checkpoint: random weights would be exported.
    """
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model, info = AutoModel.from_pretrained(
        str(checkpoint.path), attn_implementation=attention, output_loading_info=True
    )
    missing = set(info.get("missing_keys", ()))
    pooler_missing = {key for key in missing if key.startswith("pooler.")}
    others = sorted(missing - pooler_missing)
    if others:
        raise ExportError(
            f"{checkpoint.path} lacks weights {others[:5]}{' ...' if len(others) > 5 else ''}: "
            "the checkpoint is incomplete or not an encoder of its model_type"
        )
    if pooler_missing:
        model.pooler = None  # its weights would be random: the graph gets no pooler output
    return model.eval(), getattr(model, "pooler", None) is not None


def input_names(model: PreTrainedModel) -> list[str]:
    """The inputs of INPUT_NAMES the model's forward() takes."""
    accepted = inspect.signature(model.forward).parameters
    return [name for name in INPUT_NAMES if name in accepted]


class _Graph(torch.nn.Module):  # type: ignore[misc]  # torch is Any to mypy here
    """Return a tuple so the exporter names outputs positionally."""

    def __init__(self, model: PreTrainedModel, names: list[str], with_pooler: bool) -> None:
        super().__init__()
        self.model = model
        self.names = names
        self.with_pooler = with_pooler

    def forward(self, *inputs: Any) -> Any:
        out = self.model(**dict(zip(self.names, inputs, strict=True)))
        if self.with_pooler:
            return out.last_hidden_state, out.pooler_output
        return (out.last_hidden_state,)


def export_graph(model: PreTrainedModel, path: Path, *, with_pooler: bool, opset: int) -> tuple[list[str], list[str]]:
    """Trace to `path` with dynamic batch and sequence axes; returns the input and output names."""
    names = input_names(model)
    outputs = ["last_hidden_state", "pooler_output"] if with_pooler else ["last_hidden_state"]
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    if with_pooler:
        axes["pooler_output"] = {0: "batch"}
    sample = torch.tensor([[101, 2023, 2003, 1037, 7099, 102]] * 2, dtype=torch.int64) % model.config.vocab_size
    feeds = {"input_ids": sample, "attention_mask": torch.ones_like(sample), "token_type_ids": torch.zeros_like(sample)}
    # The TorchScript exporter gives the op pattern ONNX Runtime's BERT optimizer fuses; the dynamo exporter's
    # graph does not fuse fully yet. Its deprecation and tracer warnings are expected here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Graph(model, names, with_pooler),
            tuple(feeds[name] for name in names),
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    # torch 2.13's TorchScript exporter leaves the module in training mode (dropout on): the reference
    # outputs computed after this would be noise. Put it back.
    model.eval()
    return names, outputs

"""Load the checkpoint into transformers' BertModel and trace it to ONNX with both outputs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import BertModel
from transformers.utils import logging as hf_logging

from .errors import ExportError
from .source import Checkpoint

__all__ = ["INPUT_NAMES", "export_graph", "load_model"]

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def load_model(checkpoint: Checkpoint, *, attention: str = "eager") -> tuple[BertModel, bool]:
    """BertModel in eval mode, and whether the checkpoint carries pooler weights.

    Eager attention traces to the MatMul/Softmax pattern ONNX Runtime's BERT fusions recognise.
    Any missing weight other than the pooler means an incomplete checkpoint: random weights would be exported.
    """
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model, info = BertModel.from_pretrained(
        str(checkpoint.path), attn_implementation=attention, output_loading_info=True
    )
    missing = set(info.get("missing_keys", ()))
    pooler_missing = {key for key in missing if key.startswith("pooler.")}
    others = sorted(missing - pooler_missing)
    if others:
        raise ExportError(
            f"{checkpoint.path} lacks weights {others[:5]}{' ...' if len(others) > 5 else ''}: "
            "the checkpoint is incomplete or not a BERT encoder"
        )
    return model.eval(), not pooler_missing


class _Graph(torch.nn.Module):  # type: ignore[misc]  # torch is Any to mypy here
    """Return a tuple so the exporter names outputs positionally."""

    def __init__(self, model: BertModel, with_pooler: bool) -> None:
        super().__init__()
        self.model = model
        self.with_pooler = with_pooler

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        if self.with_pooler:
            return out.last_hidden_state, out.pooler_output
        return (out.last_hidden_state,)


def export_graph(model: BertModel, path: Path, *, with_pooler: bool, opset: int) -> list[str]:
    """Trace to `path` with dynamic batch and sequence axes; returns the output names."""
    outputs = ["last_hidden_state", "pooler_output"] if with_pooler else ["last_hidden_state"]
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    if with_pooler:
        axes["pooler_output"] = {0: "batch"}
    sample = torch.tensor([[101, 2023, 2003, 1037, 7099, 102]] * 2, dtype=torch.int64) % model.config.vocab_size
    dummy = (sample, torch.ones_like(sample), torch.zeros_like(sample))
    # The TorchScript exporter gives the op pattern ONNX Runtime's BERT optimizer fuses; the dynamo exporter's
    # graph does not fuse fully yet. Its deprecation and tracer warnings are expected here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Graph(model, with_pooler),
            dummy,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    # torch 2.13's TorchScript exporter leaves the module in training mode (dropout on): the reference
    # outputs computed after this would be noise. Put it back.
    model.eval()
    return outputs

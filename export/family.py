"""The encoder families export handles, and what differs between them: one home for every per-family fact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["FAMILIES", "SUPPORTED_MODEL_TYPES", "Family", "family_of"]


@dataclass(frozen=True)
class Family:
    """How one model_type's graph differs from BERT's, as far as export and the packed twin care."""

    model_type: str
    examples: str
    tokenizer_class: str  # written to tokenizer_config.json when the checkpoint's names none
    # ONNX Runtime fuses the embeddings into EmbedLayerNormalization, except where positions are computed from the
    # input ids (RoBERTa: `padding_idx + 1 + i`), which its fusion leaves unfused (Gather + Add + LayerNormalization).
    embedding_fused: bool = True
    # Whether the first real token's position is past the padding index: RoBERTa's table starts at pad_token_id + 1.
    positions_after_padding: bool = False

    def position_offset(self, config: Any) -> int:
        """Row of the position table that a text's first token reads."""
        return int(config.pad_token_id) + 1 if self.positions_after_padding else 0


FAMILIES = {
    family.model_type: family
    for family in (
        Family("bert", "BERT, bert-base-chinese, all-MiniLM, bge-*-en/zh, e5-*-v2", "BertTokenizer"),
        Family("roberta", "RoBERTa encoders", "RobertaTokenizer", False, True),
        Family("xlm-roberta", "XLM-RoBERTa: bge-m3, multilingual-e5", "XLMRobertaTokenizer", False, True),
        Family("distilbert", "DistilBERT: no token types, no pooler", "DistilBertTokenizer"),
        Family("electra", "ELECTRA discriminators: no pooler", "ElectraTokenizer"),
    )
}
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)


def family_of(model_type: str) -> Family:
    """The family of a supported model_type (the caller has checked it is one)."""
    return FAMILIES[model_type]

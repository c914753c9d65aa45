"""Text to token ids with the Rust `tokenizers` library, truncation flagged per text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from .errors import REEXPORT_HINT, ModelDirectoryError, TextError

__all__ = ["CJK_IDEOGRAPHS", "TextTokenizer", "Tokenized", "check_texts"]


def check_texts(texts: str | Sequence[str]) -> list[str]:
    """Accept one string or a sequence of strings; anything else is a ValueError naming the index."""
    if isinstance(texts, str):
        texts = [texts]
    elif isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence):
        raise ValueError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    checked = list(texts)
    for index, text in enumerate(checked):
        if not isinstance(text, str):
            raise ValueError(f"texts[{index}] is {type(text).__name__}, not str")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"texts[{index}] cannot be encoded as UTF-8 ({error.reason} at position {error.start}): "
                "remove lone surrogates, e.g. text.encode('utf-8', 'replace').decode()"
            ) from None
    return checked


@dataclass(frozen=True)
class Tokenized:
    """Ids per text (special tokens included), their lengths, and which texts were cut at max_length."""

    ids: list[npt.NDArray[np.int64]]
    lengths: npt.NDArray[np.int64]
    truncated: npt.NDArray[np.bool_]
    offsets: list[list[tuple[int, int]]] | None
    tokens: list[list[str]] | None = None

    @classmethod
    def concat(cls, parts: Sequence[Tokenized]) -> Tokenized:
        """One Tokenized holding every part's texts in order (a server merging requests into one batch)."""
        with_offsets = all(p.offsets is not None for p in parts)
        return cls(
            ids=[ids for p in parts for ids in p.ids],
            lengths=np.concatenate([p.lengths for p in parts]) if parts else np.zeros(0, np.int64),
            truncated=np.concatenate([p.truncated for p in parts]) if parts else np.zeros(0, np.bool_),
            offsets=[o for p in parts for o in (p.offsets or [])] if with_offsets and parts else None,
        )

    def __len__(self) -> int:
        return len(self.ids)


def _load(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust library raises a bare Exception for unreadable or malformed files
        raise ModelDirectoryError(f"{path} is not a readable tokenizer.json ({error}); {REEXPORT_HINT}") from error


# A text much longer than max_length tokens is tokenized from a prefix: the Rust library would tokenize all of it (~1 s
# and ~200 MB of memory per MiB of text here) to keep max_length tokens. The first prefix holds this many characters
# per token of max_length; a prefix is used only where it gives the text's own tokens (TextTokenizer._prefix_encodings).
PREFIX_CHARS_PER_TOKEN = 16
_SPACES = " \t\n\r"  # whitespace every pre-tokenizer splits at (Python's isspace holds more)
# BERT's CJK ideograph ranges, which its normalizer sets apart as words of their own; probed one character a range.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip
CJK_IDEOGRAPHS = "".join(f"{chr(low)}-{chr(high)}" for low, high in _CJK_RANGES)  # a regex character class's body


def _word_breaks(tokenizer: Tokenizer) -> re.Pattern[str] | None:
    """A one-character pattern of where the tokenizer always ends a word, so the tokens before never depend on after.

    None where there is no such character. Spaces, tabs and line breaks where it splits there; CJK ideographs where
    it sets each apart (BERT's normalizer). Probed on "ab" + c + "cd" through its normalizer and pre-tokenizer (the
    model only splits words further). Added tokens are matched before either: one holding such a character could
    span it.
    """
    split = tokenizer.pre_tokenizer
    if split is None:
        return None
    normalize = tokenizer.normalizer.normalize_str if tokenizer.normalizer is not None else str

    def words(mark: str) -> list[str]:
        text = normalize("ab" + mark + "cd")
        return [w for _, (a, b) in split.pre_tokenize_str(text) if (w := text[a:b].strip())]

    found = "".join(re.escape(mark) for mark in _SPACES if words(mark) == ["ab", "cd"])
    # an ideograph is a word of its own (normalized: U+F900 is U+8C48 after NFD)
    if all(len(w := words(chr(low))) == 3 and w[::2] == ["ab", "cd"] and len(w[1]) == 1 for low, _ in _CJK_RANGES):
        found += CJK_IDEOGRAPHS
    if not found:
        return None
    breaks = re.compile(f"[{found}]")
    added = "".join(token.content for token in tokenizer.get_added_tokens_decoder().values())
    return None if breaks.search(added) else breaks


class TextTokenizer:
    """The model directory's tokenizer.json with truncation at `max_length` and no padding (batches pad themselves)."""

    def __init__(self, path: Path, *, max_length: int) -> None:
        self.max_length = max_length
        self._tokenizer = _load(path)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        # A second copy without truncation counts the tokens of a text that truncate=False must reject.
        self._counter = _load(path)
        self._counter.no_padding()
        self._counter.no_truncation()
        self._breaks = _word_breaks(self._tokenizer)
        self._prefix_chars = max_length * PREFIX_CHARS_PER_TOKEN if self._breaks is not None else None

    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary including added tokens."""
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def token_id(self, token: str) -> int | None:
        """Id of a token string, or None when the vocabulary lacks it."""
        found = self._tokenizer.token_to_id(token)
        return None if found is None else int(found)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` before truncation, special tokens included."""
        return len(self._counter.encode(text).ids)

    def encode(self, texts: list[str], *, truncate: bool = True, offsets: bool = False) -> Tokenized:
        """Tokenize; with `truncate=False` a text over max_length is a ValueError giving its token count."""
        known = self._prefix_encodings(texts)
        rest = [i for i in range(len(texts)) if i not in known]
        # encode_batch_fast skips the character offsets (~12% of the time on STS-B sentences); ids and truncation
        # are the same.
        encode = self._tokenizer.encode_batch if offsets else self._tokenizer.encode_batch_fast
        known.update(zip(rest, encode([texts[i] for i in rest]), strict=True))
        encodings = [known[i] for i in range(len(texts))]
        truncated = np.fromiter((len(e.overflowing) > 0 for e in encodings), dtype=np.bool_, count=len(encodings))
        if not truncate and truncated.any():
            index = int(np.flatnonzero(truncated)[0])
            count = self.count_tokens(texts[index])
            raise TextError(
                index,
                f"has {count} tokens, over max_length={self.max_length}; pass truncate=True to cut it, or shorten "
                "the text",
            )
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        if lengths.size and not lengths.min():  # BERT's [CLS] [SEP] make every text at least 2 tokens
            index = int(np.argmin(lengths))
            raise TextError(
                index,
                "has no tokens: this tokenizer adds no special tokens and leaves nothing of the text (empty, or only "
                "characters it removes); give it some text",
            )
        spans = [list(e.offsets) for e in encodings] if offsets else None
        strings = [list(e.tokens) for e in encodings] if offsets else None
        return Tokenized(ids=ids, lengths=lengths, truncated=truncated, offsets=spans, tokens=strings)

    def _prefix_encodings(self, texts: list[str]) -> dict[int, Encoding]:
        """By index, for texts far longer than max_length tokens: a prefix's encoding that is the whole text's.

        A prefix is used when it tokenizes past max_length and a word break (`_word_breaks`: a space, tab or line
        break; a CJK ideograph where the tokenizer sets them apart) that is not its last character lies between the
        end of its last kept token and its end: no word those tokens come from reaches the cut, so the whole text
        gives the same tokens, offsets and truncation. Otherwise a prefix four times longer is tried. Only texts at
        least four times a prefix's length are tried, so a text that never finds a break costs at most a third more.
        """
        found: dict[int, Encoding] = {}
        size, breaks = self._prefix_chars, self._breaks
        if size is None or breaks is None:
            return found
        pending = [i for i, text in enumerate(texts) if len(text) >= 4 * size]
        while pending:
            heads = [texts[i][:size] for i in pending]
            retry = []
            for i, head, encoding in zip(pending, heads, self._tokenizer.encode_batch(heads), strict=True):
                marks = zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
                kept = [end for (_, end), special in marks if not special]
                if encoding.overflowing and breaks.search(head, kept[-1] if kept else 0, len(head) - 1):
                    found[i] = encoding
                else:
                    retry.append(i)
            size *= 4
            pending = [i for i in retry if len(texts[i]) >= 4 * size]
        return found

